"""The Redis sliding-window limiter, with explicit clocks (no sleeping) and with Redis' own clock."""

from __future__ import annotations

import threading

from redis import Redis

from config.settings import RateLimit
from worker.keys import Keys
from worker.limiter import SlidingWindowLimiter


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
