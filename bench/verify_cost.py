"""What reading a baseline before each request costs (``worker/verify.py``), measured against no reads at all.

A read-back judges a maybe-applied request only against a profile read for it, right before it; that
read is a request against the key's budget, so the worker takes one only with a spare slot (nobody
waiting in the key's line, and half the window still free after the request's own slot). Two loads,
each drained by real worker processes against a strict simulator, under ``AMBIGUOUS_POLICY=verify``
(reads when spare) and ``retry`` (never reads: the baseline of this comparison):

``burst``
    ``--burst`` grants for distinct members queued at once (a gift bomb): drain time from the first
    request to the last, against the same burst without reads, and how many requests carried a baseline.
``trickle``
    grants arriving one at a time at ``--trickle-rate`` of the key's rate (a quiet key): the share of
    requests that carried a baseline (the maybe-applied outcomes a read-back can judge) and each grant's
    time from creation to its POST.

Run from the repository root: ``.venv/bin/python -m bench.verify_cost``. Needs Redis at 127.0.0.1:6379
(DB 15); keys live under random ``bench<hex>-...`` prefixes, deleted at the end. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.fleet import Fleet, FleetConfig, backlog
from bench.rig import DEFAULT_REDIS_URL, delete_prefixes, key_base, log_path, machine
from worker.grant import GrantState


@dataclass(frozen=True)
class Drained:
    policy: str
    load: str
    grants: int
    posts: int
    gets: int
    with_baseline: int
    drain_s: float
    #: seconds from a grant's creation to its POST reaching the simulator (trickle only).
    latencies_s: tuple[float, ...] = ()


def run(config: FleetConfig, policy: str, load: str, grants: int, rate_share: float, prefix: str) -> Drained:
    with (
        log_path(f"verify-cost-{policy}-{load}").open("wb") as log,
        Fleet(config, 1, prefix, log, extra_env={"AMBIGUOUS_POLICY": policy}) as fleet,
    ):
        planned = backlog(fleet.guilds, grants, 1, tag=prefix)
        created: dict[str, float] = {}
        if load == "burst":
            fleet.create(planned)
        else:
            gap_s = config.window_s / (config.limit * rate_share)
            for grant in planned:
                created[grant.user_id] = fleet.create([grant])
                time.sleep(gap_s)
        fleet.wait_delivered(len(planned), timeout_s=max(60.0, 6 * config.ideal_s(len(planned))))
        records = fleet.api_records()
        posts = [r for r in records if r.method == "POST"]
        done = fleet.ledger.list_grants(GrantState.DELIVERED, limit=len(planned) + 1)
        with_baseline = sum(1 for grant in done if grant.baseline_at is not None)
        latencies = tuple(r.mono - created[r.path.split("/")[-2]] for r in posts if r.path.split("/")[-2] in created)
        return Drained(
            policy=policy,
            load=load,
            grants=len(planned),
            posts=len(posts),
            gets=sum(1 for r in records if r.method == "GET"),
            with_baseline=with_baseline,
            drain_s=(max(r.mono for r in records) - min(r.mono for r in records)) if records else 0.0,
            latencies_s=latencies,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10, help="requests per window (10)")
    parser.add_argument("--window", type=float, default=2.0, help="window in seconds (2: WetBot's 60 s, faster)")
    parser.add_argument("--burst", type=int, default=40, help="grants in the burst (40)")
    parser.add_argument("--trickle", type=int, default=30, help="grants in the trickle (30)")
    parser.add_argument("--trickle-rate", type=float, default=0.3, help="trickle arrivals as a share of the key's rate")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    config = FleetConfig(args.limit, args.window, processes=1, threads=4, redis_url=args.redis_url, http_timeout_s=2)
    base = key_base()
    prefixes: list[str] = []
    results: list[Drained] = []
    try:
        for load, grants in (("burst", args.burst), ("trickle", args.trickle)):
            for policy in ("retry", "verify"):
                prefix = f"{base}-{load}-{policy}"
                prefixes.append(prefix)
                results.append(run(config, policy, load, grants, args.trickle_rate, prefix))
    finally:
        delete_prefixes(args.redis_url, prefixes)
    print(f"# verify's baseline reads: {machine()}; key {args.limit}/{args.window:g}s, 1 worker process x 4 threads")
    print(
        "| load | policy | grants | POSTs | GETs | requests with a baseline | drain | vs no reads | latency p50 / max |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    baseline: dict[str, float] = {}
    for result in results:
        if result.policy == "retry":
            baseline[result.load] = result.drain_s
        without_reads = baseline.get(result.load)
        ratio = f"{result.drain_s / without_reads:.2f}x" if without_reads else f"+{result.drain_s:.1f} s"
        latency = (
            f"{statistics.median(result.latencies_s):.2f} s / {max(result.latencies_s):.2f} s"
            if result.latencies_s
            else "-"
        )
        print(
            f"| {result.load} | {result.policy} | {result.grants} | {result.posts} | {result.gets} "
            f"| {result.with_baseline} ({result.with_baseline / max(result.grants, 1):.0%}) | {result.drain_s:.1f} s "
            f"| {ratio} | {latency} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
