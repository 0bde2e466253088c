"""Inline waits for a rate slot: a backlogged key never holds more threads of a process than its limit.

A key frees at most its limit of slots per window; threads waiting beyond that could not be served when the
slots free and would only keep other keys' grants queued (``bench/drain.py``'s isolation figure: with 2 x 16
threads and a guild 120 grants behind, another guild's grants waited 6.7 s at the median instead of 0.1 s).
"""

from __future__ import annotations

import threading
import time

from redis import Redis

from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, SettingsFactory
from worker.delivery import EARLY_RETURN_S, Deliverer
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.runtime import build_deliverer

OTHER_GUILD = "444444444444444444"
OTHER_KEY = "test-other-key-91c2d7e0a4"


class BlockingSleep:
    """A ``sleep`` that records who sleeps and blocks until released; then it returns at once, or with ``real``
    sleeps for real (a test must not wait for real slots unless it wants the grants sent)."""

    def __init__(self, *, real: bool = False) -> None:
        self.real = real
        self.release = threading.Event()
        self.sleepers: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.sleepers.append(threading.current_thread().name)
        if self.release.wait(10) and self.real:
            time.sleep(seconds)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 5
        while len(self.sleepers) < count and time.monotonic() < deadline:
            time.sleep(0.01)


def grant_for(guild: str, index: int) -> NewGrant:
    user = str(600_000_000_000_000_000 + index)
    return NewGrant(guild, user, (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{guild}:{index}")


def test_threads_beyond_the_limit_hand_the_grant_back_instead_of_sleeping(
    make_settings: SettingsFactory, redis: Redis, ledger: Ledger, keys: Keys, sim: WetbotSimulator
) -> None:
    sim.add_key(OTHER_KEY, OTHER_GUILD)
    settings = make_settings(wetbot_rate_limit="2/4s", wetbot_api_keys=f"{OTHER_GUILD}={OTHER_KEY}")
    sleep = BlockingSleep()
    deliverer: Deliverer = build_deliverer(settings, redis, sleep=sleep)
    home, other = deliverer.clients.for_guild(GUILD), deliverer.clients.for_guild(OTHER_GUILD)
    assert home is not None and other is not None
    for key_id in (home.key_id, other.key_id):  # both windows full: the next slots free in about 4 s
        assert deliverer.limiter.try_acquire(key_id).granted and deliverer.limiter.try_acquire(key_id).granted
    grants = [ledger.create(grant_for(GUILD, n)).grant for n in range(3)]
    away = ledger.create(grant_for(OTHER_GUILD, 9)).grant
    threads: list[threading.Thread] = []

    def start(grant_id: str, name: str) -> threading.Thread:
        thread = threading.Thread(target=deliverer.deliver, args=(grant_id,), name=name, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    try:
        for n, grant in enumerate(grants[:2]):
            start(grant.id, f"home-{n}")
            sleep.wait_for(n + 1)
        start(grants[2].id, "home-2").join(2)
        # The key's limit (2) of threads already wait for its slots: the third grant goes back to the schedule.
        assert not threads[-1].is_alive(), "a third thread slept for the same key's slots"
        assert sleep.sleepers == ["home-0", "home-1"]
        handed_back = ledger.get(grants[2].id)
        assert handed_back is not None and handed_back.state == GrantState.QUEUED and handed_back.attempts == 0
        assert not redis.exists(keys.lease(GUILD, handed_back.user_id)), "its lease was released"
        # Due again for the slots after the two the sleeping threads wait for: a window later, early as ever.
        latest = 2 * deliverer.limiter.effective_window_s - EARLY_RETURN_S
        due_in = deliverer.schedule.due_in_s(grants[2].id)
        assert due_in is not None and latest - 1.0 < due_in <= latest
        # Another key's grant still gets a thread to wait for its own slot.
        start(away.id, "other")
        sleep.wait_for(3)
        assert sleep.sleepers[-1] == "other"
    finally:
        sleep.release.set()
        for thread in threads:
            thread.join(10)
    assert sim.requests() == [], "every window was full: nothing was sent"


def test_a_wait_within_one_reconciler_pass_is_slept_through_beyond_the_limit(
    make_settings: SettingsFactory, redis: Redis, ledger: Ledger
) -> None:
    # Handed back, a grant could not run again before the reconciler's next pass (1 s): it would only come late.
    sleep = BlockingSleep(real=True)
    deliverer = build_deliverer(make_settings(wetbot_rate_limit="2/0.8s"), redis, sleep=sleep)
    home = deliverer.clients.for_guild(GUILD)
    assert home is not None
    assert deliverer.limiter.try_acquire(home.key_id).granted and deliverer.limiter.try_acquire(home.key_id).granted
    grants = [ledger.create(grant_for(GUILD, n)).grant for n in range(3)]
    threads = [threading.Thread(target=deliverer.deliver, args=(g.id,), daemon=True) for g in grants]
    try:
        for n, thread in enumerate(threads):
            thread.start()
            sleep.wait_for(n + 1)
        assert len(sleep.sleepers) == 3, "the third thread sleeps too: its wait is shorter than a reconciler pass"
    finally:
        sleep.release.set()
        for thread in threads:
            thread.join(10)
    assert all(g.state == GrantState.DELIVERED for g in (ledger.get(grant.id) for grant in grants) if g is not None)
