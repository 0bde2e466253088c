"""Twitch ingest benchmark: signed EventSub notifications through the real app under uvicorn, beside a bare route.

Two uvicorn processes on loopback, started the same way (one worker, ``--no-access-log``):

``app``
    ``producers.app:app`` with its own Redis key prefix, a rules file with one cheer rule and static links
    for every viewer the load uses, so each request verifies the signature, parses, plans, and durably
    queues one grant (ledger entry + Dramatiq message) before answering 204. No worker runs.
``bare``
    ``bench.ingest:bare_app``: a FastAPI route at the same path that reads the body and answers 204.

Each target gets two runs, every request a fresh, correctly signed ``channel.cheer`` notification with a
unique message id:

- **closed loop**: ``--concurrency`` client threads send back to back for ``--duration`` seconds
  (throughput = 204s per second);
- **paced**: ``--rate`` requests per second for ``--paced-duration`` seconds, open loop (each request has a
  scheduled start; latency counts from that start, so a stalled server cannot hide its queueing).

Targets (exit status 1 when missed): app throughput >= 50 % of bare throughput; app p99 < 50 ms paced at
200/s; every app request answered 204 and exactly one grant per request in the ledger. Exit status 2 on a
setup error.

Run from the repository root: ``.venv/bin/python bench/ingest.py [--duration 8 --concurrency 8 ...]``.
Needs Redis at 127.0.0.1:6379 (DB 15; ``--redis-url``); every key lives under a random ``bench<hex>-ingest``
prefix that is deleted at the end (SCAN + DEL, never a flush).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from fastapi import FastAPI, Request, Response
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from producers.twitch.samples import sample_event, sample_payload, signed_request  # noqa: E402
from worker.keys import Keys  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
GUILD = "111111111111111111"
SECRET = "bench-ingest-secret-" + "7c3e9a1f"
#: Viewers in the load, each statically linked to a Discord user (so grants are queued, not parked).
VIEWERS = 100
PATH = "/webhooks/twitch"
#: Target: app throughput / bare throughput.
TARGET_RATIO = 0.5
#: Target: p99 latency at the paced rate, in seconds.
TARGET_P99_S = 0.050
BOOT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
#: Variables ``config.settings`` reads; cleared in the server's environment so the caller's cannot leak in.
SETTINGS_ENV = (
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "WETBOT_API_URL",
    "WETBOT_API_KEY",
    "WETBOT_RATE_LIMIT",
    "WETBOT_TIMEOUT",
    "WETBOT_MAX_ATTEMPTS",
    "WETBOT_RETRY_BACKOFF_S",
    "WETBOT_AUTH_PAUSE_S",
    "TWITCH_WEBHOOK_SECRET",
    "PATREON_WEBHOOK_SECRET",
    "GRANTS_API_TOKEN",
    "TWITCH_CLIENT_ID",
    "TWITCH_CLIENT_SECRET",
    "REWARDS_FILE",
    "AMBIGUOUS_POLICY",
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "LOG_LEVEL",
    "TWITCH_API_URL",
    "TWITCH_AUTH_URL",
)

# -- the bare baseline (imported by its uvicorn process) ----------------------------------------------

bare_app = FastAPI()


@bare_app.post(PATH, status_code=204)
async def bare_route(request: Request) -> Response:
    """Read the body and answer 204: HTTP + ASGI + FastAPI routing, nothing else."""
    await request.body()
    return Response(status_code=204)


@bare_app.get("/healthz")
def bare_health() -> dict[str, str]:
    return {"status": "ok"}


# -- load ------------------------------------------------------------------------------------------------


def viewer_id(n: int) -> str:
    return str(100_000 + n % VIEWERS)


def make_request(n: int) -> tuple[bytes, dict[str, str]]:
    """A fresh signed cheer (unique message id, current timestamp) from one of the linked viewers."""
    event = sample_event("channel.cheer", user_id=viewer_id(n), bits=1000)
    return signed_request(SECRET, sample_payload("channel.cheer", event))


@dataclass
class RunResult:
    name: str
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu: CpuMeter | None = None

    @property
    def ok(self) -> int:
        return self.statuses.get(204, 0)

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def record(self, outcomes: list[tuple[int, float]]) -> None:
        """Add one client thread's (status, latency) pairs; the caller holds the run's lock."""
        for status, latency in outcomes:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies_s.append(latency)
        self.sent += len(outcomes)

    def percentile_ms(self, p: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Sender:
    """One keep-alive HTTP/1.1 connection; reconnects after an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        try:
            self.conn.request("POST", PATH, body=body, headers=headers)
            response = self.conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            return 0

    def close(self) -> None:
        self.conn.close()


def _threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def closed_loop(name: str, port: int, concurrency: int, duration_s: float) -> RunResult:
    """``concurrency`` threads sending back to back for ``duration_s``."""
    result = RunResult(name)
    lock = threading.Lock()
    counter = iter(range(10**9))
    start = time.perf_counter()
    stop_at = start + duration_s

    def worker(_index: int) -> None:
        sender = Sender(port)
        local: list[tuple[int, float]] = []
        while time.perf_counter() < stop_at:
            with lock:
                n = next(counter)
            body, headers = make_request(n)
            t0 = time.perf_counter()
            status = sender.post(body, headers)
            local.append((status, time.perf_counter() - t0))
        sender.close()
        with lock:
            result.record(local)

    _threads(concurrency, worker)
    result.elapsed_s = time.perf_counter() - start
    return result


def paced(name: str, port: int, rate: float, duration_s: float, threads: int) -> RunResult:
    """Open loop: request i is due at start + i / rate; latency counts from when it was due."""
    result = RunResult(name)
    total = int(rate * duration_s)
    lock = threading.Lock()
    counter = iter(range(total))
    start = time.perf_counter() + 0.2

    def worker(_index: int) -> None:
        sender = Sender(port)
        local: list[tuple[int, float]] = []
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            body, headers = make_request(n)
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status = sender.post(body, headers)
            local.append((status, time.perf_counter() - due))
        sender.close()
        with lock:
            result.record(local)

    _threads(threads, worker)
    result.elapsed_s = time.perf_counter() - start
    return result


# -- processes -------------------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_s(redis_url: str) -> float:
    """User + system CPU seconds of the Redis server so far (the whole server: other clients count too)."""
    client = Redis.from_url(redis_url)
    try:
        info = cast(dict[str, Any], client.info("cpu"))
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


@dataclass
class CpuMeter:
    """CPU seconds spent by the server process, Redis and this (client) process during one run."""

    server_pid: int
    redis_url: str
    server_s: float = 0.0
    redis_s: float = 0.0
    client_s: float = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        server, redis, client = process_cpu_s(self.server_pid), redis_cpu_s(self.redis_url), time.process_time()
        yield
        self.server_s = process_cpu_s(self.server_pid) - server
        self.redis_s = redis_cpu_s(self.redis_url) - redis
        self.client_s = time.process_time() - client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def uvicorn_process(target: str, port: int, env: dict[str, str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{target} exited with status {process.returncode} (log: {log.name})")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not answer /healthz within {BOOT_TIMEOUT_S:g} s")
            time.sleep(0.1)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def rules_toml() -> str:
    links = "\n".join(f'"{viewer_id(n)}" = "{200_000_000_000_000_000 + n}"' for n in range(VIEWERS))
    return f"""guild_id = "{GUILD}"

[[twitch.rules]]
name = "cheer"
event = "channel.cheer"
per_bits = 100
items = [{{ id = "gem", amount = 1 }}]

[twitch.links]
{links}
"""


def delete_prefix(redis_url: str, prefix: str) -> int:
    client = Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += cast(int, client.delete(*batch))
                batch = []
        if batch:
            deleted += cast(int, client.delete(*batch))
    finally:
        client.close()
    return deleted


def grants_in_ledger(redis_url: str, prefix: str) -> int:
    client = Redis.from_url(redis_url)
    try:
        return cast(int, client.zcard(Keys(prefix).all_grants()))
    finally:
        client.close()


# -- main ----------------------------------------------------------------------------------------------


def describe(run: RunResult) -> str:
    others = {s: n for s, n in sorted(run.statuses.items()) if s != 204}
    line = (
        f"{run.name:<12} sent {run.sent:>6}  204s {run.ok:>6}  other {others or '-'}  "
        f"{run.throughput:7.1f}/s  p50 {run.percentile_ms(50):6.2f} ms  p99 {run.percentile_ms(99):6.2f} ms  "
        f"max {run.percentile_ms(100):7.2f} ms"
    )
    if run.cpu is not None and run.sent:
        per = 1000 / run.sent
        line += (
            f"  CPU ms/request: server {run.cpu.server_s * per:.3f}, redis {run.cpu.redis_s * per:.3f}, "
            f"client {run.cpu.client_s * per:.3f}"
        )
    return line


def measured(run: Callable[[], RunResult], meter: CpuMeter) -> RunResult:
    with meter.measure():
        result = run()
    result.cpu = meter
    return result


def run_target(name: str, port: int, pid: int, args: argparse.Namespace) -> list[RunResult]:
    """Warm-up (1 s, not reported), closed loop and paced run against one server."""
    warm_up = closed_loop(f"{name} warm-up", port, args.concurrency, 1.0)
    closed = measured(
        lambda: closed_loop(f"{name} closed", port, args.concurrency, args.duration), CpuMeter(pid, args.redis_url)
    )
    print(describe(closed), flush=True)
    paced_run = measured(
        lambda: paced(f"{name} paced", port, args.rate, args.paced_duration, args.paced_threads),
        CpuMeter(pid, args.redis_url),
    )
    print(describe(paced_run), flush=True)
    return [warm_up, closed, paced_run]


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} vCPU {model}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per closed-loop run (8)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads in the closed loop (8)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second in the paced run (200)")
    parser.add_argument("--paced-duration", type=float, default=10.0, help="seconds of the paced run (10)")
    parser.add_argument("--paced-threads", type=int, default=16, help="client threads in the paced run (16)")
    parser.add_argument(
        "--variant",
        choices=("cheer", "ignored"),
        default="cheer",
        help="cheer: every request queues a grant (default); ignored: no rule matches (verify, parse, dedupe only)",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)

    prefix = f"bench{secrets.token_hex(4)}-ingest"
    base_env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    print(f"machine: {machine()}; variant {args.variant}; prefix {prefix}", flush=True)
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        rules = Path(tmp) / "rules.toml"
        rules.write_text(rules_toml() if args.variant == "cheer" else f'guild_id = "{GUILD}"\n', encoding="utf-8")
        app_env = {
            **base_env,
            "REDIS_URL": args.redis_url,
            "REDIS_KEY_PREFIX": prefix,
            "TWITCH_WEBHOOK_SECRET": SECRET,
            "REWARDS_FILE": str(rules),
            "LOG_LEVEL": "WARNING",
        }
        log_path = Path(tempfile.gettempdir()) / f"{prefix}-servers.log"
        try:
            with open(log_path, "wb") as log:
                bare_port, app_port = free_port(), free_port()
                with (
                    uvicorn_process("bench.ingest:bare_app", bare_port, base_env, log) as bare,
                    uvicorn_process("producers.app:app", app_port, app_env, log) as app,
                ):
                    runs += run_target("bare", bare_port, bare.pid, args)
                    runs += run_target("app", app_port, app.pid, args)
                    in_ledger = grants_in_ledger(args.redis_url, prefix)
        except (RuntimeError, OSError) as exc:
            print(f"bench/ingest.py: setup error: {exc}", file=sys.stderr)
            return 2
        finally:
            print(f"deleted {delete_prefix(args.redis_url, prefix)} Redis keys under {prefix}:")
            if log_path.exists() and log_path.stat().st_size == 0:
                log_path.unlink()  # keep the servers' log only when they said something
    return report(runs, in_ledger, args)


def report(runs: list[RunResult], in_ledger: int, args: argparse.Namespace) -> int:
    """Print the summary; 1 when a target is missed."""
    by_name = {run.name: run for run in runs}
    app_closed, bare_closed, app_paced = by_name["app closed"], by_name["bare closed"], by_name["app paced"]
    ratio = app_closed.throughput / bare_closed.throughput if bare_closed.throughput else 0.0
    app_runs = [run for run in runs if run.name.startswith("app")]
    app_sent, app_ok = sum(run.sent for run in app_runs), sum(run.ok for run in app_runs)
    summary = {
        "app_closed_per_s": round(app_closed.throughput, 1),
        "bare_closed_per_s": round(bare_closed.throughput, 1),
        "ratio": round(ratio, 3),
        "app_paced_p50_ms": round(app_paced.percentile_ms(50), 2),
        "app_paced_p99_ms": round(app_paced.percentile_ms(99), 2),
        "bare_paced_p99_ms": round(by_name["bare paced"].percentile_ms(99), 2),
        "grants_in_ledger": in_ledger,
        "app_requests_answered_204": app_ok,
    }
    print(json.dumps(summary, indent=2))
    problems = []
    if ratio < TARGET_RATIO:
        problems.append(f"app throughput is {ratio:.0%} of bare (target >= {TARGET_RATIO:.0%})")
    if app_paced.percentile_ms(99) >= TARGET_P99_S * 1000:
        problems.append(f"app p99 at {args.rate:g}/s is {app_paced.percentile_ms(99):.1f} ms (target < 50 ms)")
    if app_ok != app_sent:
        problems.append(f"{app_sent - app_ok} app requests were not answered 204")
    expected = app_ok if args.variant == "cheer" else 0
    if in_ledger != expected:
        problems.append(f"the ledger holds {in_ledger} grants for {app_ok} accepted requests (want {expected})")
    for problem in problems:
        print(f"MISSED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
