"""What tests read of the ledger's schedule, straight from Redis.

The product reads these through its scripts (``worker.schedule.Schedule``) and never needs a grant's due
time on its own; tests do, to check where a step put a grant.
"""

from __future__ import annotations

from typing import cast

from redis import Redis

from worker.keys import Keys
from worker.redis_values import redis_time


def _now_ms(redis: Redis) -> int:
    return redis_time(redis).ms


def due_ids(redis: Redis, keys: Keys) -> list[str]:
    """Ids of the grants due now (Redis' clock), earliest first."""
    ids = cast(list[bytes], redis.zrangebyscore(keys.due(), "-inf", _now_ms(redis)))
    return [grant_id.decode() for grant_id in ids]


def due_in_s(redis: Redis, keys: Keys, grant_id: str) -> float | None:
    """Seconds until ``grant_id`` is due (negative when overdue), None when it is not scheduled."""
    score = cast(float | None, redis.zscore(keys.due(), grant_id))
    return None if score is None else (float(score) - _now_ms(redis)) / 1000
