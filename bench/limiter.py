"""Rate-limiter benchmark: drain a backlog through several worker processes against a strict WetBot simulator.

Two runs, each against a fresh simulator with the same limit and (scaled) window:

``ours``
    The service as deployed: grants created by the real producer path (``producers.submit.submit_grant``),
    drained by ``--processes`` separate ``dramatiq worker.actors`` processes sharing the Redis limiter.
``stock``
    The usual stock-Dramatiq pattern (``bench/limiter_stock_actor.py``): ``WindowRateLimiter`` + ``Retries``,
    with ``raise_for_status()`` turning a 429 into a retry too. Same processes, threads and backlog,
    capped at ``--timeout`` seconds after its first request.

For each run it prints accepted (200) and 429 requests, utilisation = accepted / (N * (floor(elapsed / W) + 1))
with ``elapsed`` from the first to the last accepted request (the most a strict "N in any W" lets through in
that closed interval), the drain-time ratio ideal / actual with ideal = (ceil(M / N) - 1) * W, the most
accepted requests in any W, and the retries spent. Exit status 1 when ours misses a target
(utilisation >= 98 %, no 429, every grant delivered, at most N accepted in any W); 2 on a setup error.

Run from the repository root: ``make bench`` or ``.venv/bin/python -m bench.limiter [--limit N --window W ...]``.
Needs Redis at 127.0.0.1:6379 (DB 15; override with ``--redis-url``); every key lives under a random
``bench<hex>-...`` prefix that is deleted at the end.
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
from collections.abc import Sequence
from typing import IO

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis import Redis

from bench.limiter_one_run import Config, DrainRun, RunResult, print_report
from bench.limiter_stock_actor import (
    BENCH_ITEM,
    COUNTERS,
    STOCK_ACTOR,
    STOCK_QUEUE,
    broker_namespace,
    counter_key,
)
from bench.rig import (
    DEFAULT_REDIS_URL,
    GUILD,
    clean_env,
    delete_prefixes,
    format_pct,
    key_base,
    log_path,
    service_env,
)
from config.settings import RateLimit, load_settings
from producers.submit import submit_grant
from worker.broker import QUEUE_NAME
from worker.connections import connect_redis
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

API_KEY = secrets.token_hex(16)  # fresh per run: no credential is written down
#: Utilisation our worker must reach.
TARGET_UTILISATION = 0.98

# --------------------------------------------------------------------------------------------- runs


def run_ours(config: Config, prefix: str, log: IO[bytes]) -> RunResult:
    """Backlog through the producer path, drained by ``dramatiq worker.actors`` processes."""
    with DrainRun(config, API_KEY) as run:
        rate = str(RateLimit(config.limit, config.window_s))
        settings = load_settings(
            _env_file=None,
            redis_url=config.redis_url,
            redis_key_prefix=prefix,
            wetbot_api_url=run.sim.url,
            wetbot_api_key=API_KEY,
            wetbot_rate_limit=rate,
            wetbot_timeout_s=config.http_timeout_s,
        )
        redis = connect_redis(settings)
        try:
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
            env = service_env(
                config.redis_url,
                prefix,
                {
                    "WETBOT_API_URL": run.sim.url,
                    "WETBOT_API_KEY": API_KEY,
                    "WETBOT_RATE_LIMIT": rate,
                    "WETBOT_TIMEOUT_S": str(config.http_timeout_s),
                },
            )
            run.drain(
                "worker.actors", QUEUE_NAME, env, log, lambda: ledger.counts()[GrantState.DELIVERED] >= config.grants
            )
            grants = ledger.list_grants(limit=config.grants * 2)
            counts = ledger.counts()
            result = run.measure(
                "ours", delivered=counts[GrantState.DELIVERED], retries=sum(grant.failures for grant in grants)
            )
            attempts = sum(grant.attempts for grant in grants)
            others = {state.value: n for state, n in counts.items() if n and state != GrantState.DELIVERED}
            result.notes.append(
                f"ledger attempts {attempts} for {config.grants} grants; other states {others or 'none'}"
            )
            return result
        finally:
            redis.close()


def run_stock(config: Config, prefix: str, log: IO[bytes]) -> RunResult:
    """The same backlog through ``bench/limiter_stock_actor.py`` (WindowRateLimiter + Retries), time-capped."""
    redis = Redis.from_url(config.redis_url)
    broker = RedisBroker(url=config.redis_url, namespace=broker_namespace(prefix))  # type: ignore[no-untyped-call]
    try:
        with DrainRun(config, API_KEY) as run:
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
                "BENCH_API_URL": run.sim.url,
                "BENCH_API_KEY": API_KEY,
                "BENCH_GUILD": GUILD,
                "BENCH_LIMIT": str(config.limit),
                "BENCH_WINDOW_S": repr(config.window_s),
                "BENCH_HTTP_TIMEOUT_S": str(config.http_timeout_s),
                "BENCH_MIN_BACKOFF_MS": str(config.stock_min_backoff_ms),
                "BENCH_MAX_RETRIES": str(config.stock_max_retries),
            }

            def delivered() -> int:
                return len({(change.guild_id, change.user_id) for change in run.sim.applied()})

            run.drain("bench.limiter_stock_actor", STOCK_QUEUE, env, log, lambda: delivered() >= config.grants)
            counters = {
                name: int(redis.get(counter_key(prefix, name)) or 0)  # type: ignore[arg-type]
                for name in COUNTERS
            }
            dead = int(redis.zcard(f"{broker_namespace(prefix)}:{STOCK_QUEUE}.XQ"))  # type: ignore[arg-type]
            result = run.measure(
                "stock",
                delivered=delivered(),
                retries=counters["rate_limited"] + counters["http_error"] + counters["other_error"],
            )
            result.notes.append(
                f"actor runs {counters['attempts']}: RateLimitExceeded {counters['rate_limited']}, "
                f"HTTP errors {counters['http_error']}, other errors {counters['other_error']}, "
                f"200s {counters['delivered']}; dead-lettered {dead}"
            )
            return result
    finally:
        broker.close()
        redis.close()


# --------------------------------------------------------------------------------------------- report


def failures_of(config: Config, ours: RunResult) -> list[str]:
    """Which targets our run missed."""
    problems: list[str] = []
    if not ours.drained:
        problems.append(f"only {ours.delivered}/{ours.grants} grants delivered within {config.timeout_s:g}s")
    if ours.utilisation is None or ours.utilisation < TARGET_UTILISATION:
        problems.append(f"utilisation {format_pct(ours.utilisation)} < {TARGET_UTILISATION * 100:.0f} %")
    if ours.rejected_429:
        problems.append(f"{ours.rejected_429} x 429")
    if ours.max_accepted_in_window > config.limit:
        problems.append(f"{ours.max_accepted_in_window} accepted within {config.window_s:g}s > {config.limit}")
    return problems


# --------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench.limiter", description=__doc__.split("\n\n")[0])
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
    base = key_base()
    prefixes = [f"{base}-ours", f"{base}-stock"]
    results: list[RunResult] = []
    workers_log = log_path(f"{base}-workers")
    print(
        f"key prefixes {prefixes[0]}, {prefixes[1]} on {config.redis_url}; worker output in {workers_log}", flush=True
    )
    try:
        with workers_log.open("wb") as log:
            print("run 1/2: ours (producer path + dramatiq worker.actors) ...", flush=True)
            results.append(run_ours(config, prefixes[0], log))
            if not config.skip_stock:
                print("run 2/2: stock (WindowRateLimiter + Retries) ...", flush=True)
                results.append(run_stock(config, prefixes[1], log))
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}; see {workers_log}", file=sys.stderr)
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
