"""Waiting for a rate slot holds no thread: a backlogged key's grants wait on the schedule, each for its turn.

Before, grants slept in the worker thread for waits up to 5 s, up to the key's limit of threads per process: with
the Procfile's 4 threads, a guild 40 grants behind held every thread, and another guild's grants waited 2.5 s at
the median instead of 6 ms (``bench/drain.py``'s isolation figure).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from redis import Redis

from config.keyring import key_fingerprint
from producers.submit import submit_grant
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, RunningWorker, SettingsFactory, wait_for
from tests.schedule_view import due_in_s
from worker.delivery import Deliverer
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.runtime import build_deliverer
from worker.schedule import Reconciler
from worker.timings import Timings


class RecordingSleep:
    """A ``sleep`` that records who sleeps and returns at once (no test waits for real slots here)."""

    def __init__(self) -> None:
        self.sleepers: list[str] = []

    def __call__(self, seconds: float) -> None:
        self.sleepers.append(threading.current_thread().name)


def grant_for(guild: str, index: int) -> NewGrant:
    user = str(600_000_000_000_000_000 + index)
    return NewGrant(guild, user, (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{guild}:{index}")


def fill_window(deliverer: Deliverer, guild: str) -> str:
    client = deliverer.clients.for_guild(guild)
    assert client is not None
    while deliverer.limiter.try_acquire(client.key_id).granted:
        pass
    return client.key_id


def test_a_grant_waiting_for_a_slot_goes_back_to_the_schedule_for_its_turn(
    make_settings: SettingsFactory, redis: Redis, ledger: Ledger, keys: Keys, sim: WetbotSimulator
) -> None:
    settings = make_settings(wetbot_rate_limit="2/4s")
    sleep = RecordingSleep()
    deliverer = build_deliverer(settings, redis, sleep=sleep)
    fill_window(deliverer, GUILD)  # the next two slots free in about 4 s, the two after a window later
    window = deliverer.limiter.effective_window_s
    grants = [ledger.create(grant_for(GUILD, n)).grant for n in range(5)]
    for grant in grants:
        deliverer.deliver(grant.id)
    assert sleep.sleepers == [], "no thread slept for a slot"
    for grant in grants:
        handed_back = ledger.get(grant.id)
        assert handed_back is not None and handed_back.state == GrantState.QUEUED and handed_back.attempts == 0
        assert not redis.exists(keys.lease(GUILD, handed_back.user_id)), "its lease was released"
    # Each is due at its own turn: two as the window's slots free, two a window later, one a window after that.
    due = [due_in_s(deliverer.redis, deliverer.keys, grant.id) for grant in grants]
    assert all(d is not None for d in due)
    first = due[0] or 0.0
    assert window - 1.0 < first <= window
    expected = [first, first, first + window, first + window, first + 2 * window]
    assert all(abs((d or 0.0) - e) < 0.5 for d, e in zip(due, expected, strict=True)), due
    assert sim.requests() == []


def test_a_wait_within_the_inline_bound_is_slept_in_the_thread(
    make_settings: SettingsFactory, redis: Redis, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleep = RecordingSleep()
    timings = Timings(max_inline_wait_s=10.0)  # the same 4 s wait, now within the bound
    deliverer = build_deliverer(make_settings(wetbot_rate_limit="2/4s"), redis, sleep=sleep, timings=timings)
    fill_window(deliverer, GUILD)
    grant = ledger.create(grant_for(GUILD, 0)).grant
    thread = threading.Thread(target=deliverer.deliver, args=(grant.id,), name="inline", daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not sleep.sleepers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sleep.sleepers[:1] == ["inline"]
    thread.join(10)  # the fake sleep returns at once: the run keeps asking until its wait outgrows the bound


def test_the_reconciler_dispatches_a_hand_back_when_it_is_due_not_at_its_next_pass(
    make_settings: SettingsFactory, redis: Redis, ledger: Ledger, keys: Keys
) -> None:
    deliverer = build_deliverer(make_settings(), redis)
    reconciler = Reconciler(deliverer.schedule, interval_s=5.0)  # a pass every 5 s at the latest
    grant = ledger.create(grant_for(GUILD, 0)).grant
    assert deliverer.schedule.claim(grant.id, "", "run", lease_px=10_000, busy_ms=1).claimed  # as a direct run
    reconciler.start()
    try:
        time.sleep(0.2)  # the reconciler sleeps: nothing is due for 20 s
        handed_back_at = time.monotonic()
        assert deliverer.schedule.reschedule(grant.id, keys.lease(GUILD, grant.user_id), f"{grant.id}:run", 0.3)
        deadline = handed_back_at + 3
        while redis.hget(keys.grant(grant.id), "dispatch") is None and time.monotonic() < deadline:
            time.sleep(0.005)
        dispatched_after = time.monotonic() - handed_back_at
    finally:
        reconciler.stop()
    assert 0.29 < dispatched_after < 0.6, f"dispatched {dispatched_after:.3f} s after a 0.3 s hand-back"


OTHER_GUILD = "444444444444444444"
OTHER_KEY = "test-other-key-5be1f09c37"


@pytest.mark.slow
def test_a_backlogged_key_never_delays_another_keys_grants(
    make_settings: SettingsFactory, sim: WetbotSimulator, ledger: Ledger, workers: Callable[..., RunningWorker]
) -> None:
    """Guild A 15 grants behind at 3 per 3 s (five windows), two worker threads.

    B's grants (within B's own limit) go out at once, as on an idle system. B's key is quiet, so its first
    grant's baseline is read first (a spare slot): B's two grants and that read are B's window of 3.
    """
    sim.add_key(OTHER_KEY, OTHER_GUILD)
    sim.set_limit(3, 3.0)
    workers(make_settings(wetbot_rate_limit="3/3s", wetbot_api_keys=f"{OTHER_GUILD}={OTHER_KEY}"), threads=2)
    backlog = [submit_grant(ledger, grant_for(GUILD, n)).grant.id for n in range(15)]
    wait_for(lambda: len(sim.applied()) >= 3, timeout_s=10)  # A's first window is spent; 12 wait for theirs

    pickups: list[float] = []
    for n in range(2):
        submitted = time.monotonic()
        grant_id = submit_grant(ledger, grant_for(OTHER_GUILD, n)).grant.id
        wait_for(lambda: ledger.get(grant_id).state == GrantState.DELIVERED, timeout_s=10, interval_s=0.005)  # type: ignore[union-attr]  # noqa: B023
        pickups.append(time.monotonic() - submitted)
        time.sleep(0.4)
    waiting = [g for g in backlog if ledger.get(g).state != GrantState.DELIVERED]  # type: ignore[union-attr]
    assert len(waiting) >= 6, "A was still draining while B's grants went out"
    # Behind A's line B would wait for A's backlog (12 s); 1.2 s leaves a starved test process room (0.64 s
    # seen under a CPU hog and other load).
    assert max(pickups) < 1.2, f"B's grants took {[round(p, 3) for p in pickups]} s behind A's backlog"
    sent_b = [r.method for r in sim.requests() if r.key == key_fingerprint(OTHER_KEY)]
    assert sent_b.count("POST") == 2 and len(sent_b) <= 3, f"B's requests did not fit B's own window: {sent_b}"
    wait_for(lambda: all(ledger.get(g).state == GrantState.DELIVERED for g in backlog), timeout_s=30)  # type: ignore[union-attr]
    assert sim.count_status(429) == 0
