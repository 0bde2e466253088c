"""The Redis sliding-window limiter, with explicit clocks (no sleeping) and with Redis' own clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis

from config.settings import RateLimit
from worker.keys import Keys
from worker.limiter import SlidingWindowLimiter
from worker.timings import DEFAULT_TIMINGS


def limiter(redis: Redis, keys: Keys, limit: int = 3, window_s: float = 10.0) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(redis, keys, RateLimit(limit, window_s))


def test_at_most_n_in_any_window(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys)
    window = lim.effective_window_s
    t0 = 1_000_000.0
    assert [lim.try_acquire("k", now_s=t0 + i).granted for i in range(3)] == [True, True, True]
    refused = lim.try_acquire("k", now_s=t0 + 3)
    assert not refused.granted
    # The first slot frees exactly one (effective) window after it was taken.
    assert abs(refused.wait_s - (window - 3)) < 1e-3
    assert not lim.try_acquire("k", now_s=t0 + window - 0.01).granted
    assert lim.try_acquire("k", now_s=t0 + window).granted
    # Now slots 2, 3 and 4 are inside the window: the next one waits for slot 2.
    assert not lim.try_acquire("k", now_s=t0 + window + 0.5).granted


def test_the_window_has_a_safety_margin_over_the_configured_one(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, window_s=60)
    assert 60.3 < lim.effective_window_s < 60.5


def test_keys_are_limited_independently(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, limit=1)
    assert lim.try_acquire("a", now_s=100.0).granted
    assert lim.try_acquire("b", now_s=100.0).granted
    assert not lim.try_acquire("a", now_s=100.5).granted


def test_block_holds_every_request_until_it_ends(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, limit=100, window_s=1)
    lim.block("k", 30)
    decision = lim.try_acquire("k")
    assert not decision.granted and 29 < decision.wait_s <= 30
    lim.block("k", 5)  # a shorter block never shortens the longer one
    assert lim.try_acquire("k").wait_s > 29
    assert lim.try_acquire("other").granted


def test_concurrent_callers_never_get_more_than_the_limit(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, limit=10, window_s=60)
    granted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        local = Redis(connection_pool=redis.connection_pool)
        mine = SlidingWindowLimiter(local, keys, lim.rate)
        for _ in range(10):
            result = mine.try_acquire("shared").granted
            with lock:
                granted.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 80
    assert sum(granted) == 10


def test_window_entries_expire_on_their_own(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, limit=2, window_s=1)
    lim.try_acquire("k")
    ttl_ms = int(redis.pttl(keys.rate_window("k")))  # type: ignore[arg-type]
    # One window, plus two minutes for a slot re-stamped when its (slow) answer comes back.
    assert 121_000 < ttl_ms <= 122_100


def test_a_backlog_waits_in_line_one_turn_per_slot_to_come(redis: Redis, keys: Keys) -> None:
    # Without a line every refused grant would be told "the next slot": a backlog of 1,000 would all ask
    # again when it frees, and 999 would be refused again, every window.
    lim = limiter(redis, keys, limit=3, window_s=10)
    window = lim.effective_window_s
    t0 = 1_000_000.0
    assert all(lim.try_acquire("k", now_s=t0 + i).granted for i in range(3))  # slots taken at t0, t0+1, t0+2
    asked = t0 + 3
    waits = [lim.try_acquire("k", waiter=f"g{n}", now_s=asked).wait_s for n in range(7)]
    turns = [asked + wait for wait in waits]
    expected = [t0 + window, t0 + 1 + window, t0 + 2 + window]  # the first round: each slot as it frees
    expected += [turn + window for turn in expected] + [t0 + 3 * window]  # then a window later, slot by slot
    assert [round(turn, 3) for turn in turns] == [round(turn, 3) for turn in expected]
    # A waiter asking again keeps its place, and a new one goes behind everyone.
    assert round(asked + lim.try_acquire("k", waiter="g4", now_s=asked).wait_s, 3) == round(turns[4], 3)
    assert round(asked + lim.try_acquire("k", waiter="new", now_s=asked).wait_s, 3) == round(t0 + 1 + 3 * window, 3)
    # At its turn the first waiter gets the slot and leaves the line; the second, come early, keeps its turn.
    assert lim.try_acquire("k", waiter="g0", now_s=turns[0]).granted
    assert redis.zscore(keys.rate_line("k"), "g0") is None
    early = turns[0] + 0.5
    assert round(early + lim.try_acquire("k", waiter="g1", now_s=early).wait_s, 3) == round(turns[1], 3)


def test_a_waiter_that_never_comes_back_loses_its_place_after_the_grace(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, limit=1, window_s=10)
    window = lim.effective_window_s
    t0 = 1_000_000.0
    assert lim.try_acquire("k", now_s=t0).granted
    assert abs(lim.try_acquire("k", waiter="gone", now_s=t0).wait_s - window) < 1e-3
    # Until its turn is line_grace_s old, a newcomer waits a round behind it ...
    assert abs(lim.try_acquire("k", waiter="next", now_s=t0).wait_s - 2 * window) < 1e-3
    assert lim.try_acquire("k", now_s=t0 + window).granted  # someone else took the slot the absent one had
    # ... then the absent waiter is dropped: a newcomer waits behind "next" alone.
    later = t0 + window + DEFAULT_TIMINGS.line_grace_s + 0.1
    assert abs(later + lim.try_acquire("k", waiter="late", now_s=later).wait_s - (t0 + 3 * window)) < 1e-3
    assert redis.zscore(keys.rate_line("k"), "gone") is None


def test_a_429_block_spreads_the_line_from_its_end(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, limit=2, window_s=10)
    window = lim.effective_window_s
    lim.block("k", 30)
    now = time.time()
    turns = [now + lim.try_acquire("k", waiter=f"g{n}").wait_s for n in range(4)]
    # The two free slots go at the block's end, the next two a window after it.
    assert abs(turns[1] - turns[0]) < 0.1 and 29 < turns[0] - now <= 30.1
    assert abs(turns[2] - (turns[0] + window)) < 0.1 and abs(turns[3] - turns[2]) < 0.1


def test_the_line_expires_on_its_own(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, limit=1, window_s=2)
    assert lim.try_acquire("k").granted
    wait_s = lim.try_acquire("k", waiter="g").wait_s
    ttl_ms = int(redis.pttl(keys.rate_line("k")))  # type: ignore[arg-type]
    keep_ms = (wait_s + DEFAULT_TIMINGS.line_grace_s) * 1000
    assert keep_ms < ttl_ms <= keep_ms + 1100


class _AfterBlockRead(Redis):
    """A client that runs ``then`` once, right after its first command naming ``key`` answered: the moment
    another worker's 429 lands between a block's read of the key and its write."""

    def __init__(self, redis: Redis, key: str, then: Callable[[], None]) -> None:
        super().__init__(connection_pool=redis.connection_pool)
        self._key, self._then = key, then
        self._fired = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        if not self._fired and any(arg in (self._key, self._key.encode()) for arg in args):
            self._fired = True
            self._then()
        return reply


def test_of_two_blocks_at_once_the_longer_stays(redis: Redis, keys: Keys) -> None:
    # Given a worker blocking the key for 5 s, and another's 30 s block landing just after the first looked
    longer = limiter(redis, keys, limit=100, window_s=1)
    racing = _AfterBlockRead(redis, keys.rate_block("k"), lambda: longer.block("k", 30))
    shorter = SlidingWindowLimiter(racing, keys, RateLimit(100, 1))
    shorter.block("k", 5)
    # Then the 30 s block holds: the shorter one did not overwrite it
    assert racing._fired
    assert longer.try_acquire("k").wait_s > 29
