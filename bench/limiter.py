"""Rate-limiter benchmark: drain a backlog through several worker processes against a strict WetBot simulator.

Two runs, each against a fresh simulator with the same limit and (scaled) window:

``ours``
    The service as deployed: grants created by the real producer path (``producers.submit.submit_grant``),
    drained by ``--processes`` separate ``dramatiq worker.actors`` processes sharing the Redis limiter.
``stock``
    The usual stock-Dramatiq pattern (``bench/stock_actor.py``): ``WindowRateLimiter`` + ``Retries``,
    with ``raise_for_status()`` turning a 429 into a retry too. Same processes, threads and backlog,
    capped at ``--timeout`` seconds after its first request.

For each run it prints accepted (200) and 429 requests, utilisation = accepted / (N * (floor(elapsed / W) + 1))
with ``elapsed`` from the first to the last accepted request (the most a strict "N in any W" lets through in
that closed interval), the drain-time ratio ideal / actual with ideal = (ceil(M / N) - 1) * W, the most
accepted requests in any W, and the retries spent. Exit status 1 when ours misses a target
(utilisation >= 98 %, no 429, every grant delivered, at most N accepted in any W); 2 on a setup error.

Run from the repository root: ``make bench`` or ``.venv/bin/python bench/limiter.py [--limit N --window W ...]``.
Needs Redis at 127.0.0.1:6379 (DB 15; override with ``--redis-url``); every key lives under a random
``bench<hex>-...`` prefix that is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # ``bench`` is not an installed package

import dramatiq  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402
from redis import Redis  # noqa: E402

from bench.stock_actor import (  # noqa: E402
    BENCH_ITEM,
    COUNTERS,
    STOCK_ACTOR,
    STOCK_QUEUE,
    broker_namespace,
    counter_key,
)
from config.settings import RateLimit, load_settings  # noqa: E402
from producers.submit import submit_grant  # noqa: E402
from simulator.wetbot import RequestRecord, WetbotSimulator  # noqa: E402
from worker.broker import QUEUE_NAME  # noqa: E402
from worker.connections import connect_redis  # noqa: E402
from worker.grant import GrantItem, GrantState, NewGrant  # noqa: E402
from worker.keys import Keys  # noqa: E402
from worker.ledger import Ledger  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
API_KEY = "bench-api-key-4c1d9e7a"
GUILD = "111111111111111111"
#: Utilisation our worker must reach.
TARGET_UTILISATION = 0.98
#: Seconds the workers get to boot and send their first request before the run is abandoned.
BOOT_TIMEOUT_S = 30.0
#: Seconds workers get to stop after SIGTERM before the process group is SIGKILLed.
STOP_TIMEOUT_S = 10.0
#: Every variable ``config.settings`` reads; cleared in the workers' environment so the caller's cannot leak in.
SETTINGS_ENV = (
    "REDIS_URL", "REDIS_KEY_PREFIX", "WETBOT_API_URL", "WETBOT_API_KEY", "WETBOT_RATE_LIMIT", "WETBOT_TIMEOUT",
    "WETBOT_MAX_ATTEMPTS", "WETBOT_RETRY_BACKOFF_S", "WETBOT_AUTH_PAUSE_S", "TWITCH_WEBHOOK_SECRET",
    "PATREON_WEBHOOK_SECRET", "GRANTS_API_TOKEN", "TWITCH_CLIENT_ID", "TWITCH_CLIENT_SECRET", "REWARDS_FILE",
    "AMBIGUOUS_POLICY", "SENTRY_DSN", "SENTRY_ENVIRONMENT", "LOG_LEVEL",
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    """One benchmark invocation's parameters."""

    limit: int
    window_s: float
    grants: int
    processes: int
    threads: int
    timeout_s: float
    redis_url: str
    http_timeout_s: float
    stock_min_backoff_ms: int
    stock_max_retries: int
    skip_stock: bool

    @property
    def ideal_drain_s(self) -> float:
        """Shortest first-to-last-accepted time a strict "N in any W" allows for the whole backlog."""
        return (math.ceil(self.grants / self.limit) - 1) * self.window_s


@dataclass
class RunResult:
    """What one run achieved, measured on the simulator's side."""

    name: str
    grants: int
    delivered: int
    accepted: int
    rejected_429: int
    other_errors: int
    total_requests: int
    elapsed_s: float | None
    utilisation: float | None
    drain_ratio: float | None
    max_accepted_in_window: int
    max_counted_in_window: int
    retries: int
    #: seconds from the first request to the end of measurement (drained, or the cap)
    measured_s: float
    timed_out: bool
    accepted_per_window: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def drained(self) -> bool:
        return self.delivered >= self.grants


class FirstRequest:
    """Notes when the simulator saw its first ``/api`` request (called from its handler threads)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.mono: float | None = None

    def __call__(self, record: RequestRecord) -> None:
        if self.mono is None:
            self.mono = record.mono
            self.event.set()


# --------------------------------------------------------------------------------------------- processes


def start_workers(
    config: Config, module: str, queue: str, env: dict[str, str], log: IO[bytes]
) -> list[subprocess.Popen[bytes]]:
    """Start ``config.processes`` separate ``dramatiq <module>`` masters, each in its own process group."""
    command = [
        sys.executable, "-m", "dramatiq", module,
        "--processes", "1", "--threads", str(config.threads), "--queues", queue,
    ]  # fmt: skip
    return [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(config.processes)
    ]


def stop_workers(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each worker's process group, then SIGKILL whatever is left of it."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the master may be gone while a child lingers
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def clean_env() -> dict[str, str]:
    """The bench's environment without any service setting."""
    return {name: value for name, value in os.environ.items() if name not in SETTINGS_ENV}


def wait_for_drain(
    processes: Sequence[subprocess.Popen[bytes]],
    first: FirstRequest,
    config: Config,
    done: Callable[[], bool],
) -> tuple[bool, float]:
    """Wait until ``done()`` or ``config.timeout_s`` after the first request.

    Returns (timed_out, end) with ``end`` a ``time.monotonic()`` value.
    Raises RuntimeError when the workers die or never send anything.
    """
    launched = time.monotonic()
    if not first.event.wait(BOOT_TIMEOUT_S):
        raise RuntimeError(f"no request reached the simulator within {BOOT_TIMEOUT_S:.0f}s of starting the workers")
    assert first.mono is not None
    deadline = first.mono + config.timeout_s
    while True:
        now = time.monotonic()
        if done():
            return False, now
        if now >= deadline:
            return True, now
        dead = [p for p in processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{len(dead)} worker process(es) exited early (status {dead[0].returncode})")
        if now - launched > BOOT_TIMEOUT_S + config.timeout_s + 30:
            return True, now
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------- figures


def measure(
    name: str,
    config: Config,
    sim: WetbotSimulator,
    *,
    delivered: int,
    retries: int,
    start_mono: float,
    end_mono: float,
    timed_out: bool,
) -> RunResult:
    """Compute a run's figures from the simulator's request log."""
    records = [r for r in sim.requests() if r.path.startswith("/api/")]
    accepted_times = [r.mono for r in records if r.status == 200]
    accepted = len(accepted_times)
    elapsed = accepted_times[-1] - accepted_times[0] if accepted_times else None
    utilisation = None
    if elapsed is not None:
        utilisation = accepted / (config.limit * (math.floor(elapsed / config.window_s) + 1))
    drain_ratio = None
    if elapsed is not None and delivered >= config.grants:
        drain_ratio = config.ideal_drain_s / elapsed if elapsed > 0 else 1.0
    per_window: list[int] = []
    if accepted_times:
        buckets = int((accepted_times[-1] - accepted_times[0]) // config.window_s) + 1
        per_window = [0] * buckets
        for t in accepted_times:
            per_window[int((t - accepted_times[0]) // config.window_s)] += 1
    return RunResult(
        name=name,
        grants=config.grants,
        delivered=delivered,
        accepted=accepted,
        rejected_429=sum(1 for r in records if r.status == 429),
        other_errors=sum(1 for r in records if r.status not in (200, 429)),
        total_requests=len(records),
        elapsed_s=elapsed,
        utilisation=utilisation,
        drain_ratio=drain_ratio,
        max_accepted_in_window=sim.max_in_window(config.window_s, statuses=[200]),
        max_counted_in_window=sim.max_in_window(config.window_s),
        retries=retries,
        measured_s=end_mono - start_mono,
        timed_out=timed_out,
        accepted_per_window=per_window,
    )


# --------------------------------------------------------------------------------------------- runs


def strict_simulator(config: Config, first: FirstRequest) -> WetbotSimulator:
    """A started simulator that enforces N per W for the bench's key, counting refused requests too."""
    return WetbotSimulator(
        keys={API_KEY: GUILD},
        limit=config.limit,
        window_s=config.window_s,
        count_rejected=True,
        on_request=first,
    ).start()


def run_ours(config: Config, prefix: str, log: IO[bytes]) -> RunResult:
    """Backlog through the producer path, drained by ``dramatiq worker.actors`` processes."""
    first = FirstRequest()
    sim = strict_simulator(config, first)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        rate = str(RateLimit(config.limit, config.window_s))
        settings = load_settings(
            _env_file=None,
            redis_url=config.redis_url,
            redis_key_prefix=prefix,
            wetbot_api_url=sim.url,
            wetbot_api_key=API_KEY,
            wetbot_rate_limit=rate,
            wetbot_timeout=config.http_timeout_s,
        )
        redis = connect_redis(settings)
        ledger = Ledger(redis, Keys(prefix))
        for index in range(config.grants):
            submit_grant(
                ledger,
                NewGrant(
                    guild_id=GUILD,
                    user_id=str(700_000_000_000_000_000 + index),
                    items=(GrantItem(BENCH_ITEM, 1.0),),
                    source="bench",
                    idempotency_key=f"bench:{prefix}:{index}",
                ),
            )
        env = clean_env() | {
            "REDIS_URL": config.redis_url,
            "REDIS_KEY_PREFIX": prefix,
            "WETBOT_API_URL": sim.url,
            "WETBOT_API_KEY": API_KEY,
            "WETBOT_RATE_LIMIT": rate,
            "WETBOT_TIMEOUT": str(config.http_timeout_s),
            "LOG_LEVEL": "WARNING",
        }
        processes = start_workers(config, "worker.actors", QUEUE_NAME, env, log)

        def done() -> bool:
            return ledger.counts()[GrantState.DELIVERED] >= config.grants

        timed_out, end = wait_for_drain(processes, first, config, done)
        stop_workers(processes)
        processes = []
        grants = ledger.list_grants(limit=config.grants * 2)
        counts = ledger.counts()
        assert first.mono is not None
        result = measure(
            "ours",
            config,
            sim,
            delivered=counts[GrantState.DELIVERED],
            retries=sum(grant.failures for grant in grants),
            start_mono=first.mono,
            end_mono=end,
            timed_out=timed_out,
        )
        attempts = sum(grant.attempts for grant in grants)
        others = {state.value: n for state, n in counts.items() if n and state != GrantState.DELIVERED}
        result.notes.append(f"ledger attempts {attempts} for {config.grants} grants; other states {others or 'none'}")
        redis.close()
        return result
    finally:
        stop_workers(processes)
        sim.stop()


def run_stock(config: Config, prefix: str, log: IO[bytes]) -> RunResult:
    """The same backlog through ``bench/stock_actor.py`` (WindowRateLimiter + Retries), time-capped."""
    first = FirstRequest()
    sim = strict_simulator(config, first)
    processes: list[subprocess.Popen[bytes]] = []
    redis = Redis.from_url(config.redis_url)
    broker = RedisBroker(url=config.redis_url, namespace=broker_namespace(prefix))  # type: ignore[no-untyped-call]
    try:
        for index in range(config.grants):
            message: dramatiq.Message[None] = dramatiq.Message(
                queue_name=STOCK_QUEUE,
                actor_name=STOCK_ACTOR,
                args=(str(700_000_000_000_000_000 + index),),
                kwargs={},
                options={},
            )
            broker.enqueue(message)
        env = clean_env() | {
            "BENCH_STOCK_PREFIX": prefix,
            "BENCH_REDIS_URL": config.redis_url,
            "BENCH_API_URL": sim.url,
            "BENCH_API_KEY": API_KEY,
            "BENCH_GUILD": GUILD,
            "BENCH_LIMIT": str(config.limit),
            "BENCH_WINDOW_S": repr(config.window_s),
            "BENCH_HTTP_TIMEOUT_S": str(config.http_timeout_s),
            "BENCH_MIN_BACKOFF_MS": str(config.stock_min_backoff_ms),
            "BENCH_MAX_RETRIES": str(config.stock_max_retries),
        }
        processes = start_workers(config, "bench.stock_actor", STOCK_QUEUE, env, log)

        def delivered() -> int:
            return len({(change.guild_id, change.user_id) for change in sim.applied()})

        timed_out, end = wait_for_drain(processes, first, config, lambda: delivered() >= config.grants)
        stop_workers(processes)
        processes = []
        counters = {
            name: int(redis.get(counter_key(prefix, name)) or 0)  # type: ignore[arg-type]
            for name in COUNTERS
        }
        dead = int(redis.zcard(f"{broker_namespace(prefix)}:{STOCK_QUEUE}.XQ"))  # type: ignore[arg-type]
        assert first.mono is not None
        result = measure(
            "stock",
            config,
            sim,
            delivered=delivered(),
            retries=counters["rate_limited"] + counters["http_error"] + counters["other_error"],
            start_mono=first.mono,
            end_mono=end,
            timed_out=timed_out,
        )
        result.notes.append(
            f"actor runs {counters['attempts']}: RateLimitExceeded {counters['rate_limited']}, "
            f"HTTP errors {counters['http_error']}, other errors {counters['other_error']}, "
            f"200s {counters['delivered']}; dead-lettered {dead}"
        )
        return result
    finally:
        stop_workers(processes)
        sim.stop()
        broker.close()
        redis.close()


def delete_prefixes(redis_url: str, prefixes: Sequence[str]) -> int:
    """Delete exactly the keys under each ``<prefix>:``; returns how many."""
    client = Redis.from_url(redis_url)
    deleted = 0
    try:
        for prefix in prefixes:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(client.delete(*batch))  # type: ignore[arg-type]
                    batch = []
            if batch:
                deleted += int(client.delete(*batch))  # type: ignore[arg-type]
    finally:
        client.close()
    return deleted


# --------------------------------------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "inf" if a > 0 else "n/a"
    return f"{a / b:.2f}x"


#: Rows of the table that get an ours/stock ratio.
RATIO_ROWS = ("accepted (200)", "utilisation", "drain ratio ideal/actual")


def print_report(config: Config, results: Sequence[RunResult]) -> None:
    """The comparison table, then per-run details."""
    ours = results[0]
    stock = results[1] if len(results) > 1 else None
    rows: list[tuple[str, Callable[[RunResult], str], Callable[[RunResult], float | None]]] = [
        ("delivered / grants", lambda r: f"{r.delivered}/{r.grants}", lambda r: r.delivered),
        ("accepted (200)", lambda r: str(r.accepted), lambda r: r.accepted),
        ("429 answers", lambda r: str(r.rejected_429), lambda r: r.rejected_429),
        ("other errors", lambda r: str(r.other_errors), lambda r: r.other_errors),
        ("total requests", lambda r: str(r.total_requests), lambda r: r.total_requests),
        ("first->last 200", lambda r: _secs(r.elapsed_s), lambda r: r.elapsed_s),
        ("utilisation", lambda r: _pct(r.utilisation), lambda r: r.utilisation),
        (
            "drain ratio ideal/actual",
            lambda r: _pct(r.drain_ratio) if r.drained else f"not drained in {r.measured_s:.0f} s",
            lambda r: r.drain_ratio,
        ),
        (f"max 200s in any {config.window_s:g}s", lambda r: str(r.max_accepted_in_window), lambda r: None),
        (
            f"max requests in any {config.window_s:g}s",
            lambda r: str(r.max_counted_in_window),
            lambda r: None,
        ),
        ("retries spent", lambda r: str(r.retries), lambda r: None),
        ("measured (1st request->end)", lambda r: _secs(r.measured_s), lambda r: None),
    ]
    width = max(len(label) for label, _, _ in rows) + 2
    header = f"{'':<{width}}{'ours':>22}"
    if stock is not None:
        header += f"{'stock':>26}{'ours/stock':>12}"
    print()
    print(
        f"limit {config.limit} per {config.window_s:g} s, {config.grants} grants, {config.processes} processes x "
        f"{config.threads} threads; ideal drain {config.ideal_drain_s:g} s; stock capped at {config.timeout_s:g} s"
    )
    print(header)
    print("-" * len(header))
    for label, show, value in rows:
        line = f"{label:<{width}}{show(ours):>22}"
        if stock is not None:
            line += f"{show(stock):>26}"
            ratio = _ratio(value(ours), value(stock)) if label in RATIO_ROWS else ""
            if label == "delivered / grants":
                ratio = _ratio(ours.delivered, stock.delivered)
            line += f"{ratio:>12}"
        print(line)
    print()
    for result in results:
        print(f"{result.name}: 200s per {config.window_s:g}s window from the first 200: {result.accepted_per_window}")
        for note in result.notes:
            print(f"{result.name}: {note}")


def failures_of(config: Config, ours: RunResult) -> list[str]:
    """Which targets our run missed."""
    problems: list[str] = []
    if not ours.drained:
        problems.append(f"only {ours.delivered}/{ours.grants} grants delivered within {config.timeout_s:g}s")
    if ours.utilisation is None or ours.utilisation < TARGET_UTILISATION:
        problems.append(f"utilisation {_pct(ours.utilisation)} < {TARGET_UTILISATION * 100:.0f} %")
    if ours.rejected_429:
        problems.append(f"{ours.rejected_429} x 429")
    if ours.max_accepted_in_window > config.limit:
        problems.append(f"{ours.max_accepted_in_window} accepted within {config.window_s:g}s > {config.limit}")
    return problems


# --------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="bench/limiter.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=10, help="requests per window (default 10)")
    parser.add_argument("--window", type=float, default=2.0, help="window in seconds (default 2, scaled from 60)")
    parser.add_argument("--grants", type=int, default=60, help="backlog size (default 60)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process (default 4)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="cap per run in seconds, from its first request (default 4x the ideal drain time, at least 4 windows)",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"default {DEFAULT_REDIS_URL}")
    parser.add_argument("--http-timeout", type=float, default=5.0, help="WetBot call timeout (default 5 s)")
    parser.add_argument(
        "--stock-min-backoff-ms", type=int, default=None, help="stock Retries min_backoff (default: the window)"
    )
    parser.add_argument("--stock-max-retries", type=int, default=20, help="stock Retries max_retries (default 20)")
    parser.add_argument("--skip-stock", action="store_true", help="run ours only")
    args = parser.parse_args(argv)
    if args.limit < 1 or args.window <= 0 or args.grants < 1 or args.processes < 1 or args.threads < 1:
        parser.error("--limit, --grants, --processes and --threads must be >= 1 and --window > 0")
    ideal = (math.ceil(args.grants / args.limit) - 1) * args.window
    timeout = args.timeout if args.timeout is not None else max(4 * ideal, 4 * args.window, 10.0)
    min_backoff = args.stock_min_backoff_ms if args.stock_min_backoff_ms is not None else round(args.window * 1000)
    return Config(
        limit=args.limit,
        window_s=args.window,
        grants=args.grants,
        processes=args.processes,
        threads=args.threads,
        timeout_s=timeout,
        redis_url=args.redis_url,
        http_timeout_s=args.http_timeout,
        stock_min_backoff_ms=max(1, min_backoff),
        stock_max_retries=args.stock_max_retries,
        skip_stock=args.skip_stock,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    base = f"bench{secrets.token_hex(4)}"
    prefixes = [f"{base}-ours", f"{base}-stock"]
    results: list[RunResult] = []
    log_path = Path(tempfile.gettempdir()) / f"{base}-workers.log"
    print(f"key prefixes {prefixes[0]}, {prefixes[1]} on {config.redis_url}; worker output in {log_path}", flush=True)
    try:
        with log_path.open("wb") as log:
            print("run 1/2: ours (producer path + dramatiq worker.actors) ...", flush=True)
            results.append(run_ours(config, prefixes[0], log))
            if not config.skip_stock:
                print("run 2/2: stock (WindowRateLimiter + Retries) ...", flush=True)
                results.append(run_stock(config, prefixes[1], log))
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}; see {log_path}", file=sys.stderr)
        return 2
    finally:
        deleted = delete_prefixes(config.redis_url, prefixes)
        print(f"deleted {deleted} Redis keys under {base}-*", flush=True)
    print_report(config, results)
    problems = failures_of(config, results[0])
    if problems:
        print(f"\nFAIL (ours): {'; '.join(problems)}")
        return 1
    print(f"\nOK (ours): >= {TARGET_UTILISATION * 100:.0f} % utilisation, no 429, every grant delivered")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
