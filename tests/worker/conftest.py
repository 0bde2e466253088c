"""A key's limiter state written on Redis' own clock, for the tests of the window and the line.

``lua/sliding_window.lua`` always reads Redis ``TIME``, so a test cannot hand it a clock. Where a slot's
age matters, the test writes the state the script would find instead: a slot that counts from a time
relative to Redis' now (``seed_slot``), or the whole state of a key moved earlier (``age_rate_state``) to
stand for time having passed. Times are microseconds on Redis' clock, as the script stores them, so a
test can compare the turns and starts it reads back exactly.
"""

from __future__ import annotations

import uuid

from redis import Redis

from worker import redis_values as values
from worker.keys import Keys
from worker.limiter import SlidingWindowLimiter

#: Microseconds per second: the script's unit.
S = 1_000_000


def now_us(redis: Redis) -> int:
    """Redis' clock now, in microseconds."""
    return values.redis_time(redis).us


def window_us(limiter: SlidingWindowLimiter) -> int:
    """The window ``limiter`` gives the script, in microseconds."""
    return int(limiter.effective_window_s * S)


def scores(redis: Redis, key: str) -> dict[str, int]:
    """A ZSET's members and their scores (the limiter's times, microseconds)."""
    return {member: int(score) for member, score in values.scored(redis.zrange(key, 0, -1, withscores=True))}


def seed_slot(redis: Redis, keys: Keys, key_id: str, counts_from_us: int, *, pending_until_us: int = 0) -> str:
    """Put a slot in ``key_id``'s window that counts from ``counts_from_us``; with ``pending_until_us``, its
    answer is not recorded and its request may still reach WetBot until then. Returns the slot's member."""
    member = uuid.uuid4().hex
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(keys.rate_window(key_id), {member: counts_from_us})
    if pending_until_us:
        pipe.zadd(keys.rate_pending(key_id), {member: pending_until_us})
    pipe.execute()
    return member


def age_rate_state(redis: Redis, keys: Keys, key_id: str, by_us: int) -> None:
    """Move every time in ``key_id``'s limiter state ``by_us`` earlier: the window's starts, the pending
    deadlines, the line's turns and a 429 block's end. The script then finds the key as it would ``by_us``
    from now, without the test waiting for it."""
    pipe = redis.pipeline(transaction=True)
    for key in (keys.rate_window(key_id), keys.rate_pending(key_id), keys.rate_line(key_id)):
        moved = {member: score - by_us for member, score in scores(redis, key).items()}
        if moved:
            pipe.zadd(key, moved)
    blocked = values.optional_text(redis.get(keys.rate_block(key_id)))
    if blocked is not None:
        pipe.set(keys.rate_block(key_id), str(int(blocked) - by_us), keepttl=True)
    pipe.execute()
