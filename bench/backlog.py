"""Backlog benchmark: N grants queued at once for one key, drained by real worker processes at a fast rate.

For each ``--grants`` size (default 20,000 and 100,000), a fresh fleet (``bench/fleet.py``: a strict
simulator, ``--processes`` x ``--threads`` worker threads running ``bench/backlog_counted_actors.py``, which is
``worker.actors`` with its runs counted) serves two guilds with a key each. Guild A's backlog, one grant per
member (so one request per grant: coalescing cannot shorten it), is written as producers write grants
(``Ledger.create_many``, ``Mode.ENQUEUE``, ``--batch`` grants per atomic call). Then, for a fixed
``--measure`` seconds window that starts when the last batch is in:

- **drain rate**: A's grants delivered per second in the window, against the key's rate (L per W; target
  >= 90 %) and against what our limiter lets through (L per W + 50 ms + 0.5 % of W: ``worker/limiter.py``);
- **runs per delivered grant**: every ``deliver`` run (a message a worker thread handled), from the first
  batch to the end of the window, per grant delivered then;
- **peak queue**: the most message ids in the grants queue (``LLEN``) and encoded messages kept for them
  (``HLEN`` of ``.msgs``, read-but-unacked ones included), sampled every 0.2 s from the first batch on;
- **Redis memory**: ``used_memory`` before the first batch, after the last and its peak in the window (the
  whole server: other clients count too; the ledger's own grants are most of it);
- **isolation**: guild B gets one grant every ``--probe-interval`` seconds during the window; its pickup
  latency is creation to its request's arrival at the simulator.

The backlog need not drain: the window measures the pace. Run from the repository root:
``.venv/bin/python -m bench.backlog [--grants 20000,100000] [--limit 20 --window 1] [--measure 90]``. Needs Redis
at 127.0.0.1:6379 (DB 15; ``--redis-url``); keys live under random ``bench<hex>-...`` prefixes, deleted at the
end. Exit status 1 when a grant was delivered twice or answered 429, 2 on a setup error; figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

from bench.fleet import Fleet, FleetConfig, backlog, probe_grant
from bench.rig import DEFAULT_REDIS_URL, RUNS_KEY, delete_prefixes, key_base, log_path, machine, percentile
from simulator.wetbot import RequestRecord
from worker import redis_values as values
from worker.broker import QUEUE_NAME
from worker.creation import Mode, Planned
from worker.grant import GrantState, NewGrant
from worker.keys import Keys

#: Target: delivered per second in the window against the key's rate.
RATE_TARGET = 0.90
#: Seconds between two samples of the queue and of Redis' memory.
SAMPLE_S = 0.2


@dataclass
class Peaks:
    """What a sampler thread saw: the longest queue list, the largest messages hash, the most memory."""

    llen: int = 0
    msgs: int = 0
    used_memory: int = 0


@dataclass
class BacklogResult:
    grants: int
    config: FleetConfig
    seed_s: float = 0.0
    window_s: float = 0.0
    delivered_in_window: int = 0
    delivered: int = 0
    runs: int = 0
    memory_before: int = 0
    memory_seeded: int = 0
    peaks: Peaks = field(default_factory=Peaks)
    b_latencies_ms: list[float] = field(default_factory=list)
    too_many: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def key_rate(self) -> float:
        """The key's own rate, L per W."""
        return self.config.limit / self.config.window_s

    @property
    def limiter_rate(self) -> float:
        """The most our limiter lets through: L per W + its safety margin."""
        return self.config.limit / self.config.effective_window_s

    @property
    def rate(self) -> float:
        return self.delivered_in_window / self.window_s if self.window_s > 0 else 0.0

    @property
    def runs_per_grant(self) -> float:
        return self.runs / self.delivered if self.delivered else float("inf")


class Sampler:
    """Samples the queue and Redis' memory every ``SAMPLE_S`` in a thread, keeping the peaks."""

    def __init__(self, fleet: Fleet) -> None:
        self._redis = fleet.redis
        self._queue = f"{Keys(fleet.prefix).dramatiq_namespace}:{QUEUE_NAME}"
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset_memory_peak(self) -> None:
        self.peaks.used_memory = used_memory(self._redis)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            pipe = self._redis.pipeline(transaction=False)
            pipe.llen(self._queue)
            pipe.hlen(f"{self._queue}.msgs")
            llen, msgs = (values.integer(n) for n in values.items(pipe.execute()))
            self.peaks.llen = max(self.peaks.llen, llen)
            self.peaks.msgs = max(self.peaks.msgs, msgs)
            self.peaks.used_memory = max(self.peaks.used_memory, used_memory(self._redis))


def used_memory(redis: Any) -> int:
    return int(cast(dict[str, Any], redis.info("memory"))["used_memory"])


class Arrivals:
    """The simulator's ``on_request``: the first arrival (monotonic) per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.first: dict[str, float] = {}

    def __call__(self, record: RequestRecord) -> None:
        with self._lock:
            self.first.setdefault(record.path, record.mono)


def _seed(fleet: Fleet, grants: Sequence[NewGrant], batch: int) -> None:
    for start in range(0, len(grants), batch):
        fleet.ledger.create_many([Planned(g, Mode.ENQUEUE) for g in grants[start : start + batch]])


def _probe_b(fleet: Fleet, arrivals: Arrivals, until: float, interval_s: float) -> list[tuple[NewGrant, float]]:
    """One grant for guild B every ``interval_s`` until ``until`` (monotonic): (grant, created mono)."""
    probes: list[tuple[NewGrant, float]] = []
    while time.monotonic() < until:
        grant = probe_grant(fleet, len(probes))
        probes.append((grant, fleet.create([grant])))
        time.sleep(max(0.0, min(interval_s, until - time.monotonic())))
    return probes


def run_backlog(
    config: FleetConfig, grants: int, prefix: str, log: IO[bytes], *, measure_s: float, batch: int, probe_s: float
) -> BacklogResult:
    result = BacklogResult(grants, config)
    arrivals = Arrivals()
    with Fleet(config, 2, prefix, log, module="bench.backlog_counted_actors", on_request=arrivals) as fleet:
        runs_key = f"{prefix}:{RUNS_KEY}"
        a_grants = backlog(fleet.guilds[:1], grants, 1, tag=f"{prefix}-a")
        result.memory_before = used_memory(fleet.redis)
        with Sampler(fleet) as sampler:
            started = time.monotonic()
            _seed(fleet, a_grants, batch)
            result.seed_s = time.monotonic() - started
            result.memory_seeded = used_memory(fleet.redis)
            sampler.reset_memory_peak()
            window_start = time.monotonic()
            delivered_before = fleet.ledger.counts()[GrantState.DELIVERED]
            probes = _probe_b(fleet, arrivals, window_start + measure_s, probe_s)
            fleet.check_alive()
            counts = fleet.ledger.counts()
            result.window_s = time.monotonic() - window_start
            result.runs = int(cast(bytes, fleet.redis.get(runs_key)) or 0)
            b_delivered = sum(1 for grant, _ in probes if _path(grant) in arrivals.first)
            result.delivered = counts[GrantState.DELIVERED] - b_delivered
            result.delivered_in_window = counts[GrantState.DELIVERED] - delivered_before - b_delivered
            result.peaks = sampler.peaks
        for grant, created in probes:
            arrived = arrivals.first.get(_path(grant))
            if arrived is None:
                result.problems.append(f"guild B's grant {grant.user_id} not sent within the window")
            else:
                result.b_latencies_ms.append((arrived - created) * 1000)
        result.too_many = fleet.sim.count_status(429)
        posts = sum(1 for r in fleet.api_records() if r.method == "POST" and r.status == 200)
        time.sleep(1.0)  # every answer counted above is recorded in the ledger by now
        delivered = fleet.ledger.counts()[GrantState.DELIVERED]
        if posts > delivered:
            result.problems.append(f"{posts} requests applied for {delivered} delivered grants")
    return result


def _path(grant: NewGrant) -> str:
    return f"/api/guilds/{grant.guild_id}/users/{grant.user_id}/inventory"


def _mb(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


def print_results(results: Sequence[BacklogResult]) -> None:
    config = results[0].config
    print(
        f"\nbacklog: one key at {config.limit} per {config.window_s:g} s (limiter window "
        f"{config.effective_window_s:.4g} s: {results[0].limiter_rate:.2f} grants/s); {config.processes} x "
        f"{config.threads} worker threads; one grant per member; window starts once the backlog is queued"
    )
    header = (
        f"{'grants':>8}{'seed':>8}{'window':>8}{'delivered':>11}{'per s':>8}{'vs L/W':>8}{'vs limiter':>12}"
        f"{'runs/grant':>12}"
        f"{'peak LLEN':>11}{'peak .msgs':>12}{'mem before':>12}{'seeded':>10}{'peak':>10}{'B p50':>8}{'B max':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.grants:>8}{r.seed_s:>7.1f}s{r.window_s:>7.1f}s{r.delivered_in_window:>11}{r.rate:>8.2f}"
            f"{r.rate / r.key_rate:>8.1%}{r.rate / r.limiter_rate:>12.1%}{r.runs_per_grant:>12.2f}"
            f"{r.peaks.llen:>11}{r.peaks.msgs:>12}"
            f"{_mb(r.memory_before):>12}{_mb(r.memory_seeded):>10}{_mb(r.peaks.used_memory):>10}"
            f"{percentile(r.b_latencies_ms, 50):>6.0f}ms{percentile(r.b_latencies_ms, 100):>6.0f}ms"
        )
        for problem in r.problems + ([f"{r.too_many} answers 429"] if r.too_many else []):
            print(f"  PROBLEM: {problem}")
    worst = min(r.rate / r.key_rate for r in results)
    print(f"target delivery >= {RATE_TARGET:.0%} of the key's L/W: {'met' if worst >= RATE_TARGET else 'MISSED'}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", default="20000,100000", help="backlog sizes, comma-separated")
    parser.add_argument("--limit", type=int, default=20, help="requests per window per key (default 20)")
    parser.add_argument("--window", type=float, default=1.0, help="window in seconds (default 1)")
    parser.add_argument("--measure", type=float, default=90.0, help="seconds of the measuring window (default 90)")
    parser.add_argument("--batch", type=int, default=1000, help="grants per create call (default 1000)")
    parser.add_argument("--probe-interval", type=float, default=5.0, help="seconds between guild B's grants")
    parser.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process (default 4)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"default {DEFAULT_REDIS_URL}")
    parser.add_argument("--http-timeout", type=float, default=5.0, help="WetBot call timeout (default 5 s)")
    args = parser.parse_args(argv)
    if min(args.limit, args.batch, args.processes, args.threads) < 1 or args.measure <= 0:
        parser.error("counts must be >= 1 and --measure > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = key_base()
    prefixes: list[str] = []
    workers_log = log_path(f"{base}-workers")
    config = FleetConfig(args.limit, args.window, args.processes, args.threads, args.redis_url, args.http_timeout)
    print(f"{machine()}; key prefixes {base}-*; worker output in {workers_log}", flush=True)
    results: list[BacklogResult] = []
    try:
        with workers_log.open("wb") as log:
            for grants in (int(n) for n in args.grants.split(",") if n):
                print(f"backlog of {grants} ...", flush=True)
                prefixes.append(f"{base}-{grants}")
                options = {"measure_s": args.measure, "batch": args.batch, "probe_s": args.probe_interval}
                results.append(run_backlog(config, grants, prefixes[-1], log, **options))
                delete_prefixes(args.redis_url, prefixes[-1:])
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}; see {workers_log}", file=sys.stderr)
        return 2
    finally:
        deleted = delete_prefixes(args.redis_url, prefixes)
        print(f"deleted {deleted} Redis keys under {base}-*", flush=True)
    if results:
        print_results(results)
    return 1 if any(r.problems or r.too_many for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
