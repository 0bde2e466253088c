"""The Redis sliding-window limiter on Redis' own clock: where a slot's age matters, the test writes the
key's state relative to Redis' now (``tests/worker/conftest.py``) instead of sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis

from config.settings import RateLimit
from tests.worker.conftest import S, age_rate_state, now_us, scores, seed_slot, window_us
from worker.keys import Keys
from worker.limiter import SlidingWindowLimiter
from worker.timings import DEFAULT_TIMINGS, Timings


def limiter(
    redis: Redis, keys: Keys, limit: int = 3, window_s: float = 60.0, *, timings: Timings = DEFAULT_TIMINGS
) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(redis, keys, RateLimit(limit, window_s), timings=timings)


def test_at_most_n_in_any_window_stamped_with_redis_clock(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys)
    before = now_us(redis)
    assert [lim.try_acquire("k").granted for _ in range(3)] == [True, True, True]
    asked = now_us(redis)
    refused = lim.try_acquire("k")
    after = now_us(redis)
    starts = sorted(scores(redis, keys.rate_window("k")).values())
    assert len(starts) == 3 and before <= starts[0] and starts[-1] <= asked, "each slot counts from Redis' now"
    # The refused request waits until the first slot frees, exactly one (effective) window after it was taken:
    # the script's now, wait_s before that moment, lies between the clock readings around the call.
    assert not refused.granted
    assert asked <= starts[0] + window_us(lim) - round(refused.wait_s * S) <= after


def test_a_slot_frees_a_window_after_the_time_it_counts_from(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys)
    window, now = window_us(lim), now_us(redis)
    for key_id, oldest in (("in", now - window + 5 * S), ("out", now - window - 2 * S)):
        for start in (oldest, now - 30 * S, now - 20 * S):
            seed_slot(redis, keys, key_id, start)
    assert not lim.try_acquire("in").granted, "its oldest slot is still 5 s inside the window"
    assert lim.try_acquire("out").granted, "its oldest slot has left the window"
    # The slots of 30 and 20 s ago and the new one are all inside it: the next request waits.
    assert not lim.try_acquire("out").granted
    assert len(scores(redis, keys.rate_window("out"))) == 3


def test_a_slot_counts_until_it_is_exactly_a_window_old(redis: Redis, keys: Keys) -> None:
    """Half a second before its oldest slot is a window old, the key is full; a process starved past that
    moment may get the slot, but only if the script's own now (the new slot's start) is past it."""
    lim = limiter(redis, keys, limit=1)
    oldest = now_us(redis) - window_us(lim) + S // 2
    seed_slot(redis, keys, "k", oldest)
    decision = lim.try_acquire("k")
    if decision.granted:
        assert scores(redis, keys.rate_window("k"))[decision.member] >= oldest + window_us(lim)
    else:
        assert round(decision.wait_s * S) <= S // 2, "it waits for the oldest slot to free"


def test_the_window_has_a_safety_margin_over_the_configured_one(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, window_s=60)
    assert 60.3 < lim.effective_window_s < 60.5


def test_keys_are_limited_independently(redis: Redis, keys: Keys) -> None:
    lim = limiter(redis, keys, limit=1)
    assert lim.try_acquire("a").granted
    assert lim.try_acquire("b").granted
    assert not lim.try_acquire("a").granted


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


def line_turns(redis: Redis, keys: Keys, key_id: str) -> dict[str, int]:
    """Each waiter's turn in ``key_id``'s line (microseconds, Redis' clock)."""
    return scores(redis, keys.rate_line(key_id))


def test_a_backlog_waits_in_line_one_turn_per_slot_to_come(redis: Redis, keys: Keys) -> None:
    # Without a line every refused grant would be told "the next slot": a backlog of 1,000 would all ask
    # again when it frees, and 999 would be refused again, every window.
    lim = limiter(redis, keys, limit=3)
    window, now = window_us(lim), now_us(redis)
    starts = [now - 30 * S, now - 25 * S, now - 20 * S]  # the window's three slots, the first frees in ~30 s
    for start in starts:
        seed_slot(redis, keys, "k", start)
    asked = now_us(redis)
    waits = [lim.try_acquire("k", waiter=f"g{n}").wait_s for n in range(7)]
    after = now_us(redis)
    turns = line_turns(redis, keys, "k")
    expected = [start + window for start in starts]  # the first round: each slot as it frees
    expected += [turn + window for turn in expected] + [starts[0] + 3 * window]  # then a window later, slot by slot
    assert [turns[f"g{n}"] for n in range(7)] == expected
    assert all(asked <= turns[f"g{n}"] - round(wait * S) <= after for n, wait in enumerate(waits)), "wait = turn - now"
    # A waiter asking again keeps its place, and a new one goes behind everyone.
    lim.try_acquire("k", waiter="g4")
    lim.try_acquire("k", waiter="new")
    turns = line_turns(redis, keys, "k")
    assert turns["g4"] == expected[4]
    assert turns["new"] == starts[1] + 3 * window
    # A second past the first turn, the first waiter gets the slot and leaves the line; the second, come
    # early (4 s before its turn), keeps its turn.
    age_rate_state(redis, keys, "k", expected[0] - now_us(redis) + 1 * S)
    aged = line_turns(redis, keys, "k")
    assert lim.try_acquire("k", waiter="g0").granted
    assert "g0" not in line_turns(redis, keys, "k")
    assert not lim.try_acquire("k", waiter="g1").granted
    assert line_turns(redis, keys, "k")["g1"] == aged["g1"]


def _gone_and_next(lim: SlidingWindowLimiter, redis: Redis, keys: Keys, key_id: str) -> str:
    """``key_id``'s one slot taken; "gone" then "next" refused, a round apart; a window later another grant,
    not in line, takes the slot "gone" waited for, and "gone" never comes back. Returns that slot's member."""
    window = window_us(lim)
    assert lim.try_acquire(key_id).granted
    (start,) = scores(redis, keys.rate_window(key_id)).values()
    assert not lim.try_acquire(key_id, waiter="gone").granted
    assert not lim.try_acquire(key_id, waiter="next").granted
    # While "gone" is in line, a newcomer waits a round behind it.
    assert line_turns(redis, keys, key_id) == {"gone": start + window, "next": start + 2 * window}
    age_rate_state(redis, keys, key_id, window)
    taken = lim.try_acquire(key_id)
    assert taken.granted
    return taken.member


def test_a_waiter_that_never_comes_back_loses_its_place_after_the_grace(redis: Redis, keys: Keys) -> None:
    grace_s = 20
    lim = limiter(redis, keys, limit=1, timings=Timings(line_grace_s=grace_s))
    window = window_us(lim)
    taken = {key_id: _gone_and_next(lim, redis, keys, key_id) for key_id in ("kept", "dropped")}
    age_rate_state(redis, keys, "kept", (grace_s - 10) * S)  # "gone"'s turn is 10 s old: within the grace
    age_rate_state(redis, keys, "dropped", (grace_s + 10) * S)  # 30 s old: past it
    for key_id in taken:
        assert not lim.try_acquire(key_id, waiter="late").granted
    # Within the grace the absent waiter still holds its place: a newcomer waits behind it and "next" ...
    kept = line_turns(redis, keys, "kept")
    assert "gone" in kept and kept["late"] == scores(redis, keys.rate_window("kept"))[taken["kept"]] + 3 * window
    # ... after it, it is dropped: a newcomer waits behind "next" alone.
    dropped = line_turns(redis, keys, "dropped")
    assert "gone" not in dropped
    assert dropped["late"] == scores(redis, keys.rate_window("dropped"))[taken["dropped"]] + 2 * window


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
