"""The chaos scenarios, shared by ``tests/chaos`` (short) and ``bench/chaos_long.py`` (long).

Each scenario starts a :class:`~devtools.chaos.harness.Cluster`, sends the :class:`~devtools.chaos.harness.Load`
(every delivery twice at once and again later), drives its faults while the grants drain, waits for
the ledger to settle and measures the outcome (:func:`~devtools.chaos.harness.measure`). ``Size`` scales
the number of grants and how often a disruption repeats.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from devtools.chaos.harness import (
    GUILD,
    TIMEOUT_S,
    Cluster,
    ClusterConfig,
    Load,
    Result,
    drain,
    measure,
)
from simulator.wetbot import PROFILE_SHAPES
from worker.grant import GrantState


@dataclass(frozen=True)
class Size:
    """How big a run is: ``grants`` expected grants; disruptions repeat ``rounds`` times."""

    grants: int
    rounds: int


SHORT = Size(grants=12, rounds=1)
LONG = Size(grants=80, rounds=6)


@dataclass
class Run:
    """What a scenario's ``drive`` works with."""

    cluster: Cluster
    load: Load
    size: Size
    rng: random.Random
    #: grants that were being sent when a worker, Redis or the broker connection was disrupted.
    in_flight: int = 0
    notes: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _errors: list[BaseException] = field(default_factory=list)

    def start_load(self, *, later_s: float = 2.0, spread_s: float = 0.0) -> None:
        def send() -> None:
            try:
                self.load.run(self.cluster.base_url, later_s=later_s, spread_s=spread_s)
            except BaseException as exc:  # noqa: BLE001 - re-raised by join_load
                self._errors.append(exc)

        self._thread = threading.Thread(target=send, name="load", daemon=True)
        self._thread.start()

    def join_load(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=120)
        if self._errors:
            raise self._errors[0]

    def users(self) -> list[str]:
        return self.load.users()

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return True
            except RedisError:
                pass
            time.sleep(0.05)
        return False

    def delivered(self) -> int:
        return len(self.cluster.in_state(GrantState.DELIVERED))

    def sending(self) -> int:
        return len(self.cluster.in_state(GrantState.SENDING))

    def wait_delivered(self, fraction: float, timeout_s: float = 15.0) -> None:
        target = max(1, int(len(self.load.expected) * fraction))
        if not self.wait(lambda: self.delivered() >= target, timeout_s):
            self.notes.append(f"only {self.delivered()} of {target} delivered before the disruption")

    def disrupting(self) -> None:
        """Count the grants being sent right now: a disruption makes their outcome ambiguous."""
        self.in_flight += self.sending()


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    drive: Callable[[Run], None]
    #: seconds from the first event for every grant to reach a final state.
    deadline_s: float = 30.0
    cluster: dict[str, Any] = field(default_factory=dict)
    #: the world moves in this scenario: ``unknown`` ("cannot tell") is a right answer under every policy.
    unknown_allowed: bool = False


# ------------------------------------------------------------------------------------------ drives


def _repeat(run: Run) -> None:
    run.start_load()


def _faults_before(run: Run) -> None:
    for n, user in enumerate(run.users()):
        match n % 5:
            case 0:
                run.cluster.sim.inject("500_before", user_id=user, count=2, method="POST")
            case 1:
                run.cluster.sim.inject("drop_before", user_id=user, count=2, method="POST")
            case 2 if n == 2:  # one burst of 429s (each blocks the key for a window)
                run.cluster.sim.inject(
                    "status", user_id=user, count=2, status=429, message="Too many requests", method="POST"
                )
            case 2:
                run.cluster.sim.inject("500_before", user_id=user, method="POST")
            case 3:  # the client times out while WetBot stalls; WetBot then applies nothing
                run.cluster.sim.inject("stall_before", user_id=user, delay_s=TIMEOUT_S + 1.5, method="POST")
    run.start_load()


def _faults_after(run: Run) -> None:
    for n, user in enumerate(run.users()):
        match n % 4:
            case 0:
                run.cluster.sim.inject("500_after", user_id=user, method="POST")
            case 1:  # applied, answered after the client's read timeout
                run.cluster.sim.inject("slow_after", user_id=user, delay_s=TIMEOUT_S + 1.0, method="POST")
            case 2:  # applied, answered slowly but in time
                run.cluster.sim.inject("slow_after", user_id=user, delay_s=TIMEOUT_S / 2, method="POST")
    run.start_load()


def _html_200(run: Run) -> None:
    for n, user in enumerate(run.users()):
        match n % 3:
            case 0:
                run.cluster.sim.inject("html_200", user_id=user, method="POST")
            case 1:
                run.cluster.sim.inject("html_200_after", user_id=user, method="POST")
    run.start_load()


def _sigkill(run: Run) -> None:
    for user in run.users():  # requests in flight for a while, so kills land mid-request
        run.cluster.sim.inject("slow_after", user_id=user, delay_s=TIMEOUT_S * 0.75, method="POST")
    kills = 3 * run.size.rounds
    run.start_load(spread_s=1.5 * kills)
    for kill in range(kills):
        time.sleep(run.rng.uniform(0.5, 1.5))
        index = kill % run.cluster.config.workers
        run.disrupting()
        run.cluster.kill_worker(index)
        run.cluster.restart_worker(index)
    run.notes.append(f"{kills} SIGKILLs, {run.in_flight} grants in flight at them")


def _double_sigterm(run: Run) -> None:
    for user in run.users():  # WetBot stalls each first request; applied only if the caller is still there
        run.cluster.sim.inject("stall_before", user_id=user, delay_s=1.5, method="POST")
    run.start_load()
    codes = []
    for round_ in range(2 * run.size.rounds):
        run.wait(lambda: run.sending() > 0, 10)
        index = round_ % run.cluster.config.workers
        run.disrupting()
        codes.append(run.cluster.double_sigterm(index))
        run.cluster.restart_worker(index)
    run.notes.append(f"double SIGTERM exit codes {codes}")


def _redis_restart(run: Run) -> None:
    for n, user in enumerate(run.users()):  # retried after a backoff: waiting in a delay queue at the kill
        if n % 2 == 0:
            run.cluster.sim.inject("500_before", user_id=user, method="POST")
    run.start_load()
    for _ in range(run.size.rounds):
        if not run.wait(lambda: len(run.cluster.in_state(GrantState.RETRYING)) > 0, 10):
            run.notes.append("no grant was retrying at the kill")
        run.disrupting()
        retrying = len(run.cluster.in_state(GrantState.RETRYING))
        run.cluster.restart_redis(down_s=1.0)
        run.notes.append(f"Redis killed with {retrying} grants retrying")
        time.sleep(2.0)


def _redis_pause(run: Run) -> None:
    run.start_load()
    run.wait_delivered(0.2)
    for _ in range(run.size.rounds):
        for pause_ms in (1500, 5500):  # shorter, then longer than the service's 5 s Redis socket timeout
            run.disrupting()
            run.cluster.redis.pause(pause_ms, "WRITE")
            time.sleep(pause_ms / 1000 + 0.5)


def _broker_cut(run: Run) -> None:
    run.start_load()
    run.wait_delivered(0.25)
    assert run.cluster.proxy is not None
    for _ in range(run.size.rounds):
        run.disrupting()
        cut = run.cluster.proxy.blackhole()
        run.notes.append(f"{cut} connections cut silently")
        time.sleep(4.0)


def _clock_skew(run: Run) -> None:
    for n, user in enumerate(run.users()):
        if n % 3 == 0:  # retried with a delay: the message's ETA is stamped on the retrying worker's clock
            run.cluster.sim.inject("500_before", user_id=user, count=2, method="POST")
        elif n % 3 == 1:  # in flight for a while while the other host judges heartbeats
            run.cluster.sim.inject("slow_after", user_id=user, delay_s=1.0, method="POST")
    run.start_load()


def _cli_replay(run: Run) -> None:
    cluster = run.cluster
    users = run.users()
    for user in users:
        cluster.sim.inject("status", user_id=user, status=400, message="Bad request (chaos)", method="POST")
    run.start_load()
    if not run.wait(lambda: len(cluster.in_state(GrantState.DEAD)) == len(users), 30):
        run.notes.append(f"only {len(cluster.in_state(GrantState.DEAD))} of {len(users)} dead before replay")
    kills = 0
    for _ in range(2 * run.size.rounds):
        dead = len(cluster.in_state(GrantState.DEAD))
        if dead == 0:
            break
        stop_below = dead - run.rng.randint(0, max(0, min(dead - 1, 3)))
        proc = cluster.cli("grants", "replay", "--all")
        client = cluster.redis.client()
        index = cluster.keys.state_index(GrantState.DEAD.value)
        try:
            while proc.poll() is None and int(client.zcard(index)) >= stop_below:  # type: ignore[arg-type]
                time.sleep(0.0005)
        finally:
            client.close()
        time.sleep(run.rng.uniform(0, 0.002))  # somewhere in the steps of that grant's replay, or the next
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=10)
    proc = cluster.cli("grants", "replay", "--all")
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    run.notes.append(f"replay CLI SIGKILLed {kills} times, then run to the end (exit {proc.returncode})")


def _failover(run: Run) -> None:
    group = run.cluster.group
    assert group is not None, "the failover scenario runs on a Sentinel group"
    run.start_load(spread_s=6.0)  # grants are created before, during and after the failovers
    run.wait_delivered(0.1)
    for _ in range(run.size.rounds):
        # The old primary keeps the connections it has and takes writes until the sentinel turns it
        # into a replica (~10 s later); what it takes meanwhile is dropped then.
        run.disrupting()
        old, new = group.failover()
        run.notes.append(f"SENTINEL FAILOVER: :{new} promoted while :{old} still ran")
        group.wait_replicas_online(new, len(group.nodes) - 1, timeout_s=30)
        run.disrupting()
        old, new = group.kill_primary()
        run.notes.append(f"primary :{old} SIGKILLed, :{new} promoted")
        time.sleep(0.5)
        group.rejoin(old)  # back as a replica: until then no replica confirms a write


def _outside_activity(run: Run) -> None:
    """Members' items change in the bot itself (purchases, trades, an admin's /give-item) around our grants.

    Before the load every member already holds, or owes, exactly the granted amount from elsewhere (the
    shape that made a lost request look applied and an applied one look lost); half the requests are
    then answered 500 before applying, half 500 after. While they drain, members keep trading other
    amounts of the same items, so some read-backs see neither the baseline nor baseline + grant.
    """
    sim = run.cluster.sim
    expected = run.load.expected
    for n, grant in enumerate(expected):
        sim.adjust(GUILD, grant.user_id, grant.item_id, grant.amount if n % 2 == 0 else -grant.amount)
        sim.inject("500_before" if n % 4 < 2 else "500_after", user_id=grant.user_id, method="POST")
    run.start_load()
    for _ in range(4 * run.size.rounds):
        time.sleep(run.rng.uniform(0.3, 1.0))
        grant = run.rng.choice(expected)
        sim.adjust(GUILD, grant.user_id, grant.item_id, grant.amount * 0.5)  # never exactly the granted amount
    run.notes.append("every member's items also changed outside the service")


def _profile_drift(run: Run) -> None:
    """WetBot answers profiles in another shape (an inventory renamed, ``itemId``, amounts as strings...)."""
    sim = run.cluster.sim
    shapes = sorted(PROFILE_SHAPES - {"documented"})
    for n, user in enumerate(run.users()):
        if n % 2 == 0:
            sim.inject("500_after" if n % 4 == 0 else "500_before", user_id=user, method="POST")
    sim.set_profile_shape(shapes[0])
    run.start_load()
    for round_ in range(len(shapes) * run.size.rounds):
        time.sleep(run.rng.uniform(0.5, 1.5))
        sim.set_profile_shape(shapes[(round_ + 1) % len(shapes)])
    run.notes.append(f"profiles answered as {', '.join(shapes)} in turn")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("repeat", "every delivery repeated and concurrent", _repeat, 20),
        Scenario("faults-before", "5xx, resets, 429 bursts and stalls before applying", _faults_before, 30),
        Scenario("faults-after", "5xx, slow answers and read timeouts after applying", _faults_after, 30),
        Scenario("html-200", "a proxy answering HTML 200s (before and after applying)", _html_200, 20),
        Scenario("sigkill", "workers SIGKILLed every few seconds", _sigkill, 45),
        Scenario("double-sigterm", "double SIGTERM to a worker's process group mid-request", _double_sigterm, 45),
        Scenario(
            "redis-restart",
            "Redis SIGKILLed and restarted mid-drain (AOF)",
            _redis_restart,
            30,
            {"extra_env": (("WETBOT_RETRY_BACKOFF_S", "3"),)},
        ),
        Scenario("redis-pause", "Redis paused (CLIENT PAUSE WRITE 1.5 s, then 5.5 s)", _redis_pause, 30),
        Scenario("broker-cut", "broker connections silently cut (black-holed)", _broker_cut, 30, {"via_proxy": True}),
        Scenario("clock-skew", "one worker host's clock 60 s ahead", _clock_skew, 30, {"skew_s": (0.0, 60.0)}),
        Scenario("cli-replay-kill", "`grants replay --all` SIGKILLed mid-replay, run again", _cli_replay, 45),
        Scenario(
            "failover",
            "Sentinel: SENTINEL FAILOVER mid-drain, then the new primary SIGKILLed (back later as a replica)",
            _failover,
            45,
            {"sentinel": True},
        ),
        Scenario(
            "outside-activity",
            "members' items change outside the service before and while ambiguous requests are judged",
            _outside_activity,
            30,
            unknown_allowed=True,
        ),
        Scenario(
            "profile-drift",
            "profiles answered in other shapes than the documented one, with 5xx before and after applying",
            _profile_drift,
            30,
            unknown_allowed=True,
        ),
    ]
}


def run_scenario(
    name: str, policy: str, workdir: Path, size: Size = SHORT, *, seed: int | None = None, grants: int | None = None
) -> Result:
    """Run one scenario under ``policy`` in ``workdir`` and measure it."""
    scenario = SCENARIOS[name]
    if grants is not None:
        size = Size(grants, size.rounds)
    load = Load(size.grants)
    rng = random.Random(seed)
    config = ClusterConfig(policy=policy, **scenario.cluster)
    deadline_s = scenario.deadline_s * (1 if size.grants <= SHORT.grants else max(1.0, size.grants / 20))
    with Cluster(workdir, config, load.twitch_links()) as cluster:
        run = Run(cluster, load, size, rng)
        started = time.monotonic()
        scenario.drive(run)
        drain_s, drained = drain(
            cluster, load, deadline_s=max(0.0, deadline_s - (time.monotonic() - started)), started=started
        )
        run.join_load()  # the later repeats may still be going; they must create nothing new
        if drained:
            drained = drain(cluster, load, deadline_s=5.0, started=started)[1]
        time.sleep(0.5)  # a late duplicate would arrive now
        result = measure(name, cluster, load, drain_s=drain_s, drained=drained, disrupted_in_flight=run.in_flight)
        result.unknown_allowed = scenario.unknown_allowed
        result.notes.extend(run.notes)
        result.notes.append(f"logs in {workdir}")
    return result
