"""Isolation: does a backlogged key delay another key's grants? (``bench/drain.py``'s ``isolation`` scenario)

Two guilds with a key each, one fleet of workers (``bench/fleet.py``), two phases in the same run:

1. **idle**: single grants for guild B, one every ``interval`` seconds, nothing else queued;
2. **loaded**: guild A's backlog (``backlog`` grants for as many users, so as many requests) is queued in one
   step, then single grants for B at the same interval while A drains.

B's pickup latency is the time from creating its grant to its request's arrival at the simulator (both on this
process's monotonic clock). B's interval keeps B itself under its key's limit (1.5 x W / L), so any delay is
A's doing. For every B grant the report also gives where it waited: create -> ``sending`` in the ledger's
history (queue, claim and rate slot), the queue length it joined (messages ahead of it in Redis, not counting
those a worker had prefetched), how many of A's runs held a user lease when it was created (a run holds its
user's lease from its claim to its outcome, so these are worker threads waiting for A's rate slots: A's
requests themselves take milliseconds), and seconds until A's next request burst.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from typing import IO

from bench.fleet import Fleet, FleetConfig, backlog, probe_grant, user_id
from bench.rig import percentile
from worker import redis_values as values
from worker.broker import QUEUE_NAME
from worker.grant import NewGrant
from worker.keys import Keys


@dataclass(frozen=True)
class IsolationConfig:
    """One isolation run: A's backlog, B's samples per phase and their interval."""

    fleet: FleetConfig
    backlog: int = 40

    @property
    def interval_s(self) -> float:
        """Seconds between B's grants: 1.5 x the limiter's W / L, so B alone never waits for its own slot."""
        return 1.5 * self.fleet.effective_window_s / self.fleet.limit

    @property
    def samples(self) -> int:
        """B grants per phase: enough to span A's ideal drain (at least 10)."""
        return max(10, math.ceil(self.fleet.ideal_s(self.backlog) / self.interval_s) + 1)


@dataclass(frozen=True)
class Sample:
    """One grant of B: its pickup latency and where the time went."""

    latency_s: float
    to_sending_s: float
    queue_ahead: int
    #: A's runs holding a user lease (threads busy with A) when it was created
    a_runs: int
    #: seconds from its creation to A's next request burst (None when A sent nothing after it)
    before_a_burst_s: float | None


@dataclass
class IsolationResult:
    config: IsolationConfig
    idle: list[Sample] = field(default_factory=list)
    loaded: list[Sample] = field(default_factory=list)
    a_requests: int = 0
    a_drain_s: float = 0.0
    problems: list[str] = field(default_factory=list)


def _phase(fleet: Fleet, config: IsolationConfig, first: int) -> list[tuple[NewGrant, float, float, int, int]]:
    """B's grants ``first``.. at the interval: (grant, created mono, created wall, queue length it joined, A's runs
    holding a lease then)."""
    keys = Keys(fleet.prefix)
    queue = f"{keys.dramatiq_namespace}:{QUEUE_NAME}"
    leases = [keys.lease(fleet.guilds[0], user_id(0, index)) for index in range(config.backlog)]
    out = []
    start = time.monotonic()
    for index in range(config.samples):
        time.sleep(max(0.0, start + index * config.interval_s - time.monotonic()))
        grant = probe_grant(fleet, first + index)
        wall = time.time()
        mono = fleet.create([grant])
        pipe = fleet.redis.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.exists(*leases)
        ahead, a_runs = (values.integer(n) for n in values.items(pipe.execute()))
        out.append((grant, mono, wall, int(ahead) - 1, int(a_runs)))
    return out


def _bursts(monos: list[float], gap_s: float) -> list[float]:
    """Start times of A's bursts: arrivals more than ``gap_s`` after the previous one."""
    starts: list[float] = []
    for index, t in enumerate(monos):
        if index == 0 or t - monos[index - 1] > gap_s:
            starts.append(t)
    return starts


def run_isolation(config: IsolationConfig, prefix: str, log: IO[bytes]) -> IsolationResult:
    """Both phases with one fleet; raises RuntimeError when workers die."""
    result = IsolationResult(config)
    with Fleet(config.fleet, 2, prefix, log) as fleet:
        idle = _phase(fleet, config, 0)
        fleet.wait_delivered(len(idle), 30.0)
        time.sleep(config.fleet.effective_window_s)  # B's own window empties: the loaded phase starts alike
        a_grants = backlog(fleet.guilds[:1], config.backlog, 1, tag=f"{prefix}-a")
        fleet.create(a_grants)
        loaded = _phase(fleet, config, config.samples)
        total = len(idle) + len(loaded) + len(a_grants)
        if not fleet.wait_delivered(total, max(4 * config.fleet.ideal_s(config.backlog), 60.0)):
            result.problems.append("not drained")
        result.problems += fleet.exactly_once([g for g, *_ in idle] + a_grants + [g for g, *_ in loaded])
        records = fleet.api_records()
        a_path = f"/api/guilds/{fleet.guilds[0]}/"
        a_monos = [r.mono for r in records if r.path.startswith(a_path)]
        result.a_requests = len(a_monos)
        result.a_drain_s = a_monos[-1] - a_monos[0] if a_monos else 0.0
        bursts = _bursts(a_monos, config.fleet.window_s / 4)
        arrivals: dict[str, float] = {}
        for record in records:
            arrivals.setdefault(record.path, record.mono)
        for phase, out in ((idle, result.idle), (loaded, result.loaded)):
            for grant, mono, wall, ahead, a_runs in phase:
                arrived = arrivals[f"/api/guilds/{grant.guild_id}/users/{grant.user_id}/inventory"]
                stored = fleet.ledger.get_by_key(grant.idempotency_key)
                history = fleet.ledger.history(stored.id) if stored else []
                sending = next((t.at for t in history if t.to_state == "sending"), math.nan)
                later = bisect.bisect_left(bursts, mono)
                until = bursts[later] - mono if later < len(bursts) else None
                out.append(Sample(arrived - mono, sending - wall, max(ahead, 0), a_runs, until))
    return result


def _stats(samples: list[Sample]) -> tuple[float, float, float]:
    latencies = [s.latency_s * 1000 for s in samples]
    return percentile(latencies, 50), percentile(latencies, 90), percentile(latencies, 100)


def print_isolation(result: IsolationResult) -> None:
    config = result.config
    fleet = config.fleet
    print(
        f"\nisolation: {fleet.limit} per {fleet.window_s:g} s per key; guild A {config.backlog} grants behind "
        f"({result.a_requests} requests, drained in {result.a_drain_s:.2f} s, ideal {fleet.ideal_s(config.backlog):.2f}"
        f" s); guild B one grant every {config.interval_s:.2f} s, {config.samples} per phase; "
        f"{fleet.processes} x {fleet.threads} worker threads"
    )
    header = f"{'B pickup latency':<22}{'p50':>10}{'p90':>10}{'max':>10}{'mean create->sending':>23}"
    print(header)
    print("-" * len(header))
    rows = (("idle system", result.idle), (f"A {config.backlog} behind", result.loaded))
    for label, samples in rows:
        p50, p90, top = _stats(samples)
        sending = sum(s.to_sending_s for s in samples) / len(samples) * 1000 if samples else math.nan
        print(f"{label:<22}{p50:>8.0f}ms{p90:>8.0f}ms{top:>8.0f}ms{sending:>21.0f}ms")
    idle, loaded = _stats(result.idle), _stats(result.loaded)
    print(
        f"ratio loaded / idle: p50 {loaded[0] / idle[0]:.2f}x, p90 {loaded[1] / idle[1]:.2f}x, "
        f"max {loaded[2] / idle[2]:.2f}x"
    )
    slow = [s for s in result.loaded if s.latency_s * 1000 > idle[2]]
    print(f"loaded samples slower than the idle max ({idle[2]:.0f} ms): {len(slow)} of {len(result.loaded)}")
    for s in slow:
        until = "n/a" if s.before_a_burst_s is None else f"{s.before_a_burst_s:.2f} s"
        print(
            f"  latency {s.latency_s * 1000:6.0f} ms, create->sending {s.to_sending_s * 1000:6.0f} ms, "
            f"{s.queue_ahead:3d} messages ahead, {s.a_runs} of A's runs waiting, A's next burst {until} later"
        )
    for problem in result.problems:
        print(f"PROBLEM: {problem}")
