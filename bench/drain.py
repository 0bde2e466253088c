"""Drain benchmark: G grants over U users and K keys through real worker processes, against a strict simulator.

Three scenarios, each against fresh simulators with the same limit and (scaled) window:

``coalescing``
    ``--per-user`` grants for each of ``--users`` users in each of ``--keys`` guilds (a key each), drained with
    ``WETBOT_COALESCE`` on, then off: requests sent (the simulator's log) against the distinct (key, guild, user)
    groups (the ideal when on; one per grant when off), drain time (first to last request) against the ideal,
    and every grant delivered exactly once (simulator totals = the ledger's sums).
``scaling``
    The same backlog per key (one grant per user, ``--scale-seconds`` of ideal drain) for K = ``--scale-keys``
    keys at each of ``--scale-windows``: requests/s against K x one key's, and CPU per request.
``isolation``
    ``bench/drain_isolation.py``: guild B's pickup latency while guild A drains a backlog, against an idle system.

The ideal drain accounts for our limiter's safety margin: R requests of a key at L per W start over
floor((R-1)/L) windows of W + 50 ms + 0.5 % of W (``SAFETY_MARGIN_S``, ``SAFETY_MARGIN_FRACTION`` in
``worker/limiter.py``); the margin-free floor((R-1)/L) x W is printed too.

Run from the repository root: ``.venv/bin/python -m bench.drain [--only coalescing,scaling,isolation]``. Needs
Redis at 127.0.0.1:6379 (DB 15; ``--redis-url``); keys live under random ``bench<hex>-...`` prefixes, deleted at
the end. Exit status 1 when a grant was lost or doubled, 2 on a setup error; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from bench.drain_isolation import IsolationConfig, IsolationResult, print_isolation, run_isolation
from bench.fleet import Fleet, FleetConfig, backlog
from bench.rig import DEFAULT_REDIS_URL, CpuMeter, delete_prefixes, key_base, log_path, machine

SCENARIOS = ("coalescing", "scaling", "isolation")
#: Target: a drain within this fraction of the ideal time.
DRAIN_TOLERANCE = 0.05


@dataclass
class DrainResult:
    """One drain, measured on the simulator's side; CPU seconds over create -> every grant delivered."""

    name: str
    config: FleetConfig
    keys: int
    grants: int
    groups: int
    ideal_requests: int
    requests: int
    #: requests other than a POST answered 200, by "<method> <status>"
    unusual: Counter[str]
    drain_s: float
    ideal_s: float
    strict_ideal_s: float
    max_in_window: int
    worker_cpu_s: float
    redis_cpu_s: float
    bench_cpu_s: float
    problems: list[str]

    @property
    def ratio(self) -> float:
        return self.drain_s / self.ideal_s if self.ideal_s > 0 else 1.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.drain_s if self.drain_s > 0 else 0.0

    @property
    def cores_busy(self) -> float:
        """CPU seconds of workers, Redis and this process (the simulator) per second of drain."""
        total = self.worker_cpu_s + self.redis_cpu_s + self.bench_cpu_s
        return total / self.drain_s if self.drain_s > 0 else 0.0

    @property
    def grants_per_s(self) -> float:
        return self.grants / self.drain_s if self.drain_s > 0 else 0.0

    def per_request_ms(self, cpu_s: float) -> float:
        return cpu_s * 1000 / self.requests if self.requests else 0.0

    @property
    def notes(self) -> str:
        """Anything that is not a POST answered 200, then the problems: empty for a clean run."""
        unusual = [f"{n} x {what}" for what, n in sorted(self.unusual.items())]
        return "; ".join(unusual + self.problems)


def drain(
    config: FleetConfig,
    name: str,
    *,
    keys: int,
    users: int,
    per_user: int,
    coalesce: bool,
    prefix: str,
    log: IO[bytes],
) -> DrainResult:
    """``per_user`` grants for each of ``users`` users in each of ``keys`` guilds, drained once."""
    per_key = users if coalesce else users * per_user
    timeout = max(4 * config.ideal_s(per_key), 30.0)
    with Fleet(config, keys, prefix, log, coalesce=coalesce) as fleet:
        grants = backlog(fleet.guilds, users, per_user, tag=prefix)
        meter = CpuMeter(fleet.worker_pids[0], config.redis_url, more_pids=fleet.worker_pids[1:], groups=True)
        with meter.measure():
            fleet.create(grants)
            drained = fleet.wait_delivered(len(grants), timeout)
        figures = fleet.per_key()
        problems = [] if drained else [f"not drained within {timeout:.0f} s"]
        problems += fleet.exactly_once(grants)
    first = min(f.first_mono for f in figures)
    last = max(f.last_mono for f in figures)
    return DrainResult(
        name=name,
        config=config,
        keys=keys,
        grants=len(grants),
        groups=keys * users,
        ideal_requests=keys * per_key,
        requests=sum(f.requests for f in figures),
        unusual=sum((f.unusual for f in figures), Counter[str]()),
        drain_s=last - first if figures and last >= first else 0.0,
        ideal_s=config.ideal_s(per_key),
        strict_ideal_s=config.ideal_s(per_key, strict=True),
        max_in_window=max(f.max_in_window for f in figures),
        worker_cpu_s=meter.server_s,
        redis_cpu_s=meter.redis_s,
        bench_cpu_s=meter.client_s,
        problems=problems,
    )


def print_coalescing(results: Sequence[DrainResult]) -> None:
    config = results[0].config
    print(
        f"\ncoalescing: {results[0].grants} grants over {results[0].groups} users and {results[0].keys} keys; "
        f"{config.limit} per {config.window_s:g} s per key (limiter window {config.effective_window_s:.4g} s); "
        f"{config.processes} x {config.threads} worker threads"
    )
    header = (
        f"{'run':<14}{'groups':>8}{'requests':>10}{'ideal req':>11}{'max/W':>7}{'drain':>9}"
        f"{'ideal':>9}{'strict W':>10}{'act/ideal':>11}{'worker ms/req':>15}  exactly once"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<14}{r.groups:>8}{r.requests:>10}{r.ideal_requests:>11}{r.max_in_window:>7}"
            f"{r.drain_s:>8.2f}s{r.ideal_s:>8.2f}s{r.strict_ideal_s:>9.2f}s{r.ratio:>11.3f}"
            f"{r.per_request_ms(r.worker_cpu_s):>15.2f}  {'yes' if not r.problems else 'NO'}"
            + (f"  ({r.notes})" if r.notes else "")
        )
    on = [r for r in results if r.name == "coalesce on"]
    if on:
        met = on[0].requests == on[0].groups
        print(f"target requests = distinct groups (coalescing on): {'met' if met else 'MISSED'}")
    worst = max(r.ratio for r in results)
    print(f"target drain within {DRAIN_TOLERANCE:.0%} of ideal: {'met' if worst <= 1 + DRAIN_TOLERANCE else 'MISSED'}")


def print_scaling(results: Sequence[DrainResult]) -> None:
    config = results[0].config
    print(
        f"\nscaling: the same backlog per key (one grant per user) for K keys; {config.processes} x {config.threads}"
        " worker threads; throughput = requests / drain time; cores = CPU s of workers + Redis + bench per s"
    )
    header = (
        f"{'W':>6}{'K':>4}{'requests':>10}{'drain':>9}{'act/ideal':>11}{'req/s':>9}{'K x one':>9}{'vs K x one':>12}"
        f"{'grants/s':>10}{'worker ms/req':>15}{'redis ms/req':>14}{'bench ms/req':>14}{'cores':>7}"
    )
    print(header)
    print("-" * len(header))
    one: dict[float, float] = {}
    saturated: list[str] = []
    for r in results:
        window = r.config.window_s
        if r.keys == 1:
            one[window] = r.requests_per_s
        expected = r.keys * one.get(window, 0.0)
        versus = r.requests_per_s / expected if expected else 0.0
        print(
            f"{window:>5g}s{r.keys:>4}{r.requests:>10}{r.drain_s:>8.2f}s{r.ratio:>11.3f}{r.requests_per_s:>9.1f}"
            f"{expected:>9.1f}{versus:>11.1%}{r.grants_per_s:>10.1f}{r.per_request_ms(r.worker_cpu_s):>15.2f}"
            f"{r.per_request_ms(r.redis_cpu_s):>14.2f}{r.per_request_ms(r.bench_cpu_s):>14.2f}{r.cores_busy:>7.2f}"
            + (f"  ({r.notes})" if r.notes else "")
        )
        if versus < 1 - DRAIN_TOLERANCE or r.ratio > 1 + DRAIN_TOLERANCE:
            saturated.append(f"K={r.keys} at W={window:g}s ({r.requests_per_s:.0f} requests/s)")
    print(f"below 95 % of K x one key's, or over 5 % past ideal: {', '.join(saturated) or 'none'}")


# --------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--limit", type=int, default=10, help="requests per window per key (default 10)")
    parser.add_argument("--window", type=float, default=2.0, help="window in seconds (default 2, scaled from 60)")
    parser.add_argument("--keys", type=int, default=2, help="keys (guilds) of the coalescing runs (default 2)")
    parser.add_argument("--users", type=int, default=30, help="users per guild, coalescing runs (default 30)")
    parser.add_argument("--per-user", type=int, default=4, help="grants per user, coalescing runs (default 4)")
    parser.add_argument("--scale-keys", default="1,2,4,8", help="K values of the scaling runs (default 1,2,4,8)")
    parser.add_argument("--scale-windows", default="2,0.5", help="windows of the scaling runs (default 2,0.5)")
    parser.add_argument(
        "--scale-seconds",
        type=float,
        default=10.0,
        help="ideal drain of a scaling run: L x (ceil(s / W') + 1) grants per key (default 10: 60 at 10/2s)",
    )
    parser.add_argument("--iso-windows", default="2,10", help="windows of the isolation runs (default 2,10)")
    parser.add_argument("--backlog", type=int, default=40, help="guild A's backlog, isolation (default 40)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process (default 4)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"default {DEFAULT_REDIS_URL}")
    parser.add_argument("--http-timeout", type=float, default=5.0, help="WetBot call timeout (default 5 s)")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"--only: unknown scenario(s) {sorted(unknown)}")
    if min(args.limit, args.keys, args.users, args.per_user, args.processes, args.threads) < 1 or (
        args.scale_seconds <= 0
    ):
        parser.error("counts must be >= 1 and --scale-seconds > 0")
    return args


def floats(text: str) -> list[float]:
    """``"2,0.5"`` -> [2.0, 0.5]."""
    return [float(part) for part in text.split(",") if part]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    only = set(args.only.split(","))
    base = key_base()
    prefixes: list[str] = []
    workers_log = log_path(f"{base}-workers")

    def config(window_s: float) -> FleetConfig:
        return FleetConfig(args.limit, window_s, args.processes, args.threads, args.redis_url, args.http_timeout)

    def prefix(name: str) -> str:
        prefixes.append(f"{base}-{name}")
        return prefixes[-1]

    print(f"{machine()}; key prefixes {base}-*; worker output in {workers_log}", flush=True)
    coalescing: list[DrainResult] = []
    scaling: list[DrainResult] = []
    isolation: list[IsolationResult] = []
    try:
        with workers_log.open("wb") as log:
            if "coalescing" in only:
                for on in (True, False):
                    name = f"coalesce {'on' if on else 'off'}"
                    print(f"{name} ...", flush=True)
                    run = prefix(name.replace(" ", "-"))
                    shape = {"keys": args.keys, "users": args.users, "per_user": args.per_user}
                    coalescing.append(drain(config(args.window), name, **shape, coalesce=on, prefix=run, log=log))
            if "scaling" in only:
                for window in floats(args.scale_windows):
                    per_key = args.limit * (math.ceil(args.scale_seconds / config(window).effective_window_s) + 1)
                    for keys in (int(k) for k in floats(args.scale_keys)):
                        print(f"scaling W={window:g}s K={keys} ({per_key} grants per key) ...", flush=True)
                        run = prefix(f"scale{keys}-{window:g}")
                        shape = {"keys": keys, "users": per_key, "per_user": 1}
                        scaling.append(drain(config(window), f"K={keys}", **shape, coalesce=True, prefix=run, log=log))
            if "isolation" in only:
                for window in floats(args.iso_windows):
                    print(f"isolation W={window:g}s ...", flush=True)
                    iso = IsolationConfig(config(window), backlog=args.backlog)
                    isolation.append(run_isolation(iso, prefix(f"iso-{window:g}"), log))
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}; see {workers_log}", file=sys.stderr)
        return 2
    finally:
        deleted = delete_prefixes(args.redis_url, prefixes)
        print(f"deleted {deleted} Redis keys under {base}-*", flush=True)
    if coalescing:
        print_coalescing(coalescing)
    if scaling:
        print_scaling(scaling)
    for result in isolation:
        print_isolation(result)
    lost = [r for r in (*coalescing, *scaling) if r.problems] + [r for r in isolation if r.problems]
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
