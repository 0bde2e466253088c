"""Twitch ingest benchmark: signed EventSub notifications through the real app under uvicorn, beside a bare route.

Two uvicorn processes on loopback, started the same way (one worker, ``--no-access-log``):

``app``
    ``wetbot_rewards.app:app`` with its own Redis key prefix, a rules file with one cheer rule and static links
    for every viewer the load uses, so each request verifies the signature, parses, plans, and durably
    keeps the event in the inbox, queues one grant (ledger entry + Dramatiq message) and records the event's
    outcome before answering 200 with it. No worker runs.
``bare``
    ``bench.ingest:bare_app``: a FastAPI route at the same path that reads the body and answers 200 with a
    small JSON body.

Each target gets two runs, every request a fresh, correctly signed ``channel.cheer`` notification with a
unique message id:

- **closed loop**: ``--concurrency`` client threads send back to back for ``--duration`` seconds
  (throughput = 200s per second);
- **paced**: ``--rate`` requests per second for ``--paced-duration`` seconds, open loop (each request has a
  scheduled start; latency counts from that start, so a stalled server cannot hide its queueing).

Targets (exit status 1 when missed): app throughput >= 50 % of bare throughput; app p99 < 50 ms paced at
200/s; every app request answered 200 and exactly one grant per request in the ledger. Exit status 2 on a
setup error.

Run from the repository root: ``.venv/bin/python -m bench.ingest [--duration 8 --concurrency 8 ...]``.
Needs Redis at 127.0.0.1:6379 (DB 15; ``--redis-url``); every key lives under a random ``bench<hex>-ingest``
prefix that is deleted at the end (SCAN + DEL, never a flush).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from redis import Redis

from bench.ingest_clients import OK_STATUS, Endpoint, RunResult, closed_loop, paced
from bench.rig import (
    DEFAULT_REDIS_URL,
    GUILD,
    CpuMeter,
    clean_env,
    delete_prefixes,
    free_port,
    key_base,
    log_path,
    machine,
    service_env,
    uvicorn_server,
)
from producers.twitch.samples import sample_event, sample_payload, signed_request
from worker import redis_values as values
from worker.keys import Keys

SECRET = secrets.token_hex(16)  # fresh per run: no credential is written down
#: Viewers in the load, each statically linked to a Discord user (so grants are queued, not parked).
VIEWERS = 100
PATH = "/webhooks/twitch"
#: Target: app throughput / bare throughput.
TARGET_RATIO = 0.5
#: Target: p99 latency at the paced rate, in seconds.
TARGET_P99_S = 0.050

# -- the bare baseline (imported by its uvicorn process) ----------------------------------------------

bare_app = FastAPI()


@bare_app.post(PATH, status_code=200)
async def bare_route(request: Request) -> Response:
    """Read the body and answer 200 with JSON, as the app does: HTTP + ASGI + FastAPI routing, nothing else."""
    await request.body()
    return JSONResponse({"outcome": "ignored"})


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


# -- the app's set-up and ledger ---------------------------------------------------------------------------


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


def grants_in_ledger(redis_url: str, prefix: str) -> int:
    client = Redis.from_url(redis_url)
    try:
        return values.integer(client.zcard(Keys(prefix).all_grants()))
    finally:
        client.close()


# -- main ----------------------------------------------------------------------------------------------


def describe(run: RunResult) -> str:
    others = {s: n for s, n in sorted(run.statuses.items()) if s != OK_STATUS}
    line = (
        f"{run.name:<12} sent {run.sent:>6}  200s {run.ok:>6}  other {others or '-'}  "
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
    target = Endpoint(port, PATH, make_request)
    warm_up = closed_loop(f"{name} warm-up", target, args.concurrency, 1.0)
    closed = measured(
        lambda: closed_loop(f"{name} closed", target, args.concurrency, args.duration), CpuMeter(pid, args.redis_url)
    )
    print(describe(closed), flush=True)
    paced_run = measured(
        lambda: paced(f"{name} paced", target, args.rate, args.paced_duration, args.paced_threads),
        CpuMeter(pid, args.redis_url),
    )
    print(describe(paced_run), flush=True)
    return [warm_up, closed, paced_run]


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

    prefix = f"{key_base()}-ingest"
    base_env = clean_env()
    print(f"machine: {machine()}; variant {args.variant}; prefix {prefix}", flush=True)
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        rules = Path(tmp) / "rules.toml"
        rules.write_text(rules_toml() if args.variant == "cheer" else f'guild_id = "{GUILD}"\n', encoding="utf-8")
        app_env = service_env(args.redis_url, prefix, {"TWITCH_WEBHOOK_SECRET": SECRET, "REWARDS_FILE": str(rules)})
        servers_log = log_path(f"{prefix}-servers")
        try:
            with open(servers_log, "wb") as log:
                bare_port, app_port = free_port(), free_port()
                with (
                    uvicorn_server("bench.ingest:bare_app", bare_port, base_env, log) as bare,
                    uvicorn_server("wetbot_rewards.app:app", app_port, app_env, log) as app,
                ):
                    runs += run_target("bare", bare_port, bare.pid, args)
                    runs += run_target("app", app_port, app.pid, args)
                    in_ledger = grants_in_ledger(args.redis_url, prefix)
        except (RuntimeError, OSError) as exc:
            print(f"bench/ingest.py: setup error: {exc}", file=sys.stderr)
            return 2
        finally:
            print(f"deleted {delete_prefixes(args.redis_url, [prefix])} Redis keys under {prefix}:")
            if servers_log.exists() and servers_log.stat().st_size == 0:
                servers_log.unlink()  # keep the servers' log only when they said something
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
        "app_requests_answered_200": app_ok,
    }
    print(json.dumps(summary, indent=2))
    problems = []
    if ratio < TARGET_RATIO:
        problems.append(f"app throughput is {ratio:.0%} of bare (target >= {TARGET_RATIO:.0%})")
    if app_paced.percentile_ms(99) >= TARGET_P99_S * 1000:
        problems.append(f"app p99 at {args.rate:g}/s is {app_paced.percentile_ms(99):.1f} ms (target < 50 ms)")
    if app_ok != app_sent:
        problems.append(f"{app_sent - app_ok} app requests were not answered 200")
    expected = app_ok if args.variant == "cheer" else 0
    if in_ledger != expected:
        problems.append(f"the ledger holds {in_ledger} grants for {app_ok} accepted requests (want {expected})")
    for problem in problems:
        print(f"MISSED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
