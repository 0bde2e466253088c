"""Pickup latency on an idle system: from the producer's answer to the request at WetBot, ours against stock.

Two runs on one private redis-server (``bench/private_redis.py``, unless ``--redis-url`` names another):

``ours``
    The Procfile's processes: ``uvicorn wetbot_rewards.app:app`` and ``dramatiq worker.actors --processes 1
    --threads T --queues grants``, against the WetBot simulator in this process. One grant at a time:
    after an idle gap, ``POST /grants``; a sample is the time from its answer (read here) to the arrival
    of the inventory request at the simulator (its own ``time.monotonic()``, the same clock).
``stock``
    A plain actor on a stock ``RedisBroker`` (``bench/latency_stock_actor.py``, same processes and threads): a
    sample is the time from ``broker.enqueue`` returning to the actor's first line.

The gaps are drawn once (uniform in ``--gap-min``..``--gap-max`` seconds, seeded) and used by both runs, so
each run meets its consumer at the same points of its idle backoff. After the samples, each run sits idle
for ``--settle`` seconds, then its Redis round trips per second are counted for ``--idle`` seconds, by
command (``MONITOR``; what scripts run inside is shown apart). Targets (ours): p50 <= 20 ms, p99 <= 100 ms;
exit status 1 when missed, 2 on a setup error.

Run from the repository root: ``.venv/bin/python -m bench.pickup_latency [--samples 60 ...]`` (about 4 minutes).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis import Redis

from bench.latency_stock_actor import PICKUP_ACTOR, PICKUP_QUEUE, broker_namespace, started_key
from bench.private_redis import INSIDE, idle_load, private_redis
from bench.rig import (
    BOOT_TIMEOUT_S,
    GUILD,
    clean_env,
    delete_prefixes,
    dramatiq_workers,
    free_port,
    key_base,
    log_path,
    machine,
    percentile,
    service_env,
    stop,
    uvicorn_server,
    wetbot_simulator,
)
from simulator.wetbot import RequestRecord
from worker.broker import QUEUE_NAME

API_KEY = secrets.token_hex(16)  # fresh per run: no credential is written down
GRANTS_TOKEN = secrets.token_hex(16)
#: Our targets, in seconds.
TARGET_P50_S = 0.020
TARGET_P99_S = 0.100
#: Seconds one sample may take before it counts as lost.
SAMPLE_TIMEOUT_S = 10.0
#: Samples taken (and not counted) before measuring: imports, first connections.
WARM_UP = 3


@dataclass
class RunResult:
    """One run's samples (seconds) and its idle Redis load (round trips per second by command, and INSIDE)."""

    name: str
    latencies_s: list[float] = field(default_factory=list)
    lost: int = 0
    idle_per_s: dict[str, float] = field(default_factory=dict)

    def ms(self, p: float) -> float:
        return 1000 * percentile(self.latencies_s, p)

    @property
    def idle_total(self) -> float:
        """Round trips per second (commands sent by clients), without what scripts run inside."""
        return sum(rate for name, rate in self.idle_per_s.items() if name != INSIDE)


# --------------------------------------------------------------------------------------------- measuring


class Arrivals:
    """The simulator's arrival time (``time.monotonic()``) of the first inventory request for each user."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._at: dict[str, float] = {}

    def _event(self, user: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(user, threading.Event())

    def record(self, request: RequestRecord) -> None:
        parts = request.path.strip("/").split("/")
        if request.method == "POST" and len(parts) >= 5 and parts[-1] == "inventory":
            user = parts[-2]
            with self._lock:
                self._at.setdefault(user, request.mono)
            self._event(user).set()

    def wait(self, user: str, timeout_s: float) -> float | None:
        return self._at[user] if self._event(user).wait(timeout_s) else None


def sample_loop(result: RunResult, gaps: Sequence[float], take: Callable[[int], float | None]) -> None:
    """Warm up, then one sample per gap: sleep the gap, ``take(n)`` -> seconds (None: lost)."""
    for n in range(WARM_UP):
        if take(-1 - n) is None:
            raise RuntimeError(f"{result.name}: no warm-up sample within {SAMPLE_TIMEOUT_S:g} s")
    for n, gap in enumerate(gaps):
        time.sleep(gap)
        latency = take(n)
        if latency is None:
            result.lost += 1
        else:
            result.latencies_s.append(latency)


# --------------------------------------------------------------------------------------------- runs


def run_ours(args: argparse.Namespace, redis_url: str, prefix: str, gaps: Sequence[float], log: IO[bytes]) -> RunResult:
    """Samples through ``POST /grants`` and ``dramatiq worker.actors``; then the idle load of both processes."""
    result = RunResult("ours")
    arrivals = Arrivals()
    with ExitStack() as stack:
        sim = wetbot_simulator(API_KEY, limit=100_000, window_s=1.0, on_request=arrivals.record).start()
        stack.callback(sim.stop)
        rules = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-latency-"))) / "rules.toml"
        rules.write_text(f'guild_id = "{GUILD}"\n', encoding="utf-8")
        env = service_env(
            redis_url,
            prefix,
            {
                "WETBOT_API_URL": sim.url,
                "WETBOT_API_KEY": API_KEY,
                "WETBOT_RATE_LIMIT": "100000/1s",
                "GRANTS_API_TOKEN": GRANTS_TOKEN,
                "REWARDS_FILE": str(rules),
            },
        )
        port = free_port()
        stack.enter_context(uvicorn_server("wetbot_rewards.app:app", port, env, log))
        workers = dramatiq_workers("worker.actors", QUEUE_NAME, processes=1, threads=args.threads, env=env, log=log)
        stack.callback(stop, workers)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        stack.callback(conn.close)
        headers = {"Authorization": f"Bearer {GRANTS_TOKEN}", "Content-Type": "application/json"}

        def take(n: int) -> float | None:
            user = str(800_000_000_000_000_000 + n + WARM_UP)
            body = {"user_id": user, "items": [{"item_id": "gem", "amount": 1}], "idempotency_key": f"{prefix}:{n}"}
            conn.request("POST", "/grants", body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            response.read()
            answered = time.monotonic()
            if response.status != 202:
                raise RuntimeError(f"POST /grants answered {response.status}")
            timeout = BOOT_TIMEOUT_S if n < 0 else SAMPLE_TIMEOUT_S
            arrived = arrivals.wait(user, timeout)
            return None if arrived is None else arrived - answered

        sample_loop(result, gaps, take)
        result.idle_per_s = idle_load(redis_url, args.settle, args.idle)
    return result


def run_stock(
    args: argparse.Namespace, redis_url: str, prefix: str, gaps: Sequence[float], log: IO[bytes]
) -> RunResult:
    """Samples through a stock ``RedisBroker``'s enqueue and a plain actor; then that worker's idle load."""
    result = RunResult("stock")
    env = clean_env() | {"BENCH_PICKUP_PREFIX": prefix, "BENCH_REDIS_URL": redis_url}
    broker = RedisBroker(url=redis_url, namespace=broker_namespace(prefix))  # type: ignore[no-untyped-call]
    redis = Redis.from_url(redis_url)
    workers = dramatiq_workers(
        "bench.latency_stock_actor", PICKUP_QUEUE, processes=1, threads=args.threads, env=env, log=log
    )
    try:

        def take(n: int) -> float | None:
            message: dramatiq.Message[None] = dramatiq.Message(
                queue_name=PICKUP_QUEUE, actor_name=PICKUP_ACTOR, args=(n,), kwargs={}, options={}
            )
            broker.enqueue(message)
            sent = time.time()
            timeout = BOOT_TIMEOUT_S if n < 0 else SAMPLE_TIMEOUT_S
            reply = cast(tuple[bytes, bytes] | None, redis.blpop([started_key(prefix)], timeout=timeout))
            if reply is None:
                return None
            sample, started = reply[1].decode().split(":")
            if int(sample) != n:
                raise RuntimeError(f"stock: sample {sample} started while waiting for {n}")
            return float(started) - sent

        sample_loop(result, gaps, take)
        result.idle_per_s = idle_load(redis_url, args.settle, args.idle)
    finally:
        stop(workers)
        broker.close()
        redis.close()
    return result


# --------------------------------------------------------------------------------------------- report


def report(results: Sequence[RunResult]) -> list[str]:
    """Print the table; returns the targets ours missed."""
    print(
        f"\n{'run':<6} {'samples':>7} {'lost':>4} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  idle Redis, per second"
    )
    for run in results:
        trips = ", ".join(f"{name} {rate:.2f}" for name, rate in run.idle_per_s.items() if name != INSIDE)
        inside = run.idle_per_s.get(INSIDE, 0.0)
        print(
            f"{run.name:<6} {len(run.latencies_s):>7} {run.lost:>4} {run.ms(50):>6.1f}ms {run.ms(90):>6.1f}ms "
            f"{run.ms(99):>6.1f}ms {run.ms(100):>6.1f}ms  {run.idle_total:.2f} round trips ({trips or '-'}); "
            f"{run.idle_total + inside:.2f} commands as INFO counts them (+{inside:.2f} inside scripts)"
        )
    by_name = {run.name: run for run in results}
    ours = by_name["ours"]
    if "stock" in by_name:
        stock = by_name["stock"]
        faster = "  ".join(f"p{p} {stock.ms(p) / ours.ms(p):.0f}x" for p in (50, 90, 99, 100))
        load = ours.idle_total / stock.idle_total if stock.idle_total else float("nan")
        print(f"stock/ours latency: {faster};  ours/stock idle round trips: {load:.2f}x")
    problems = []
    if ours.lost:
        problems.append(f"{ours.lost} grants did not arrive within {SAMPLE_TIMEOUT_S:g} s")
    if not ours.ms(50) <= TARGET_P50_S * 1000:
        problems.append(f"p50 {ours.ms(50):.1f} ms > {TARGET_P50_S * 1000:.0f} ms")
    if not ours.ms(99) <= TARGET_P99_S * 1000:
        problems.append(f"p99 {ours.ms(99):.1f} ms > {TARGET_P99_S * 1000:.0f} ms")
    return problems


@contextmanager
def redis_for(args: argparse.Namespace) -> Iterator[str]:
    if args.redis_url:
        print("note: a shared Redis; its idle load includes every other client", flush=True)
        yield args.redis_url
    else:
        with private_redis() as url:
            yield url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pickup_latency", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--samples", type=int, default=60, help="samples per run (default 60)")
    parser.add_argument("--gap-min", type=float, default=0.25, help="shortest idle gap before a sample, s (0.25)")
    parser.add_argument("--gap-max", type=float, default=2.0, help="longest idle gap before a sample, s (2.0)")
    parser.add_argument("--threads", type=int, default=4, help="worker threads, as in the Procfile (4)")
    parser.add_argument("--settle", type=float, default=3.0, help="quiet seconds before the idle measurement (3)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle load measured (10)")
    parser.add_argument("--seed", type=int, default=10, help="seed of the gaps (10)")
    parser.add_argument("--redis-url", default="", help="use this Redis instead of a private redis-server")
    parser.add_argument("--skip-stock", action="store_true", help="run ours only")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    gaps = [rng.uniform(args.gap_min, args.gap_max) for _ in range(args.samples)]
    base = key_base()
    prefixes = [f"{base}-ours", f"{base}-stock"]
    processes_log = log_path(f"{base}-latency")
    print(
        f"machine: {machine()}; {args.samples} samples per run, gaps {args.gap_min:g}-{args.gap_max:g} s; "
        f"process output in {processes_log}",
        flush=True,
    )
    results: list[RunResult] = []
    try:
        with redis_for(args) as redis_url, processes_log.open("wb") as log:
            try:
                print("run 1/2: ours (uvicorn wetbot_rewards.app:app + dramatiq worker.actors) ...", flush=True)
                results.append(run_ours(args, redis_url, prefixes[0], gaps, log))
                if not args.skip_stock:
                    print("run 2/2: stock (RedisBroker.enqueue -> plain actor) ...", flush=True)
                    results.append(run_stock(args, redis_url, prefixes[1], gaps, log))
            finally:
                delete_prefixes(redis_url, prefixes)
    except (RuntimeError, OSError) as exc:
        print(f"bench/pickup_latency.py: setup error: {exc}; see {processes_log}", file=sys.stderr)
        return 2
    problems = report(results)
    for problem in problems:
        print(f"MISSED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
