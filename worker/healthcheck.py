"""``python -m worker.healthcheck``: is a worker of this deployment alive? For container health checks.

Healthy (exit 0) when Redis answers and a Dramatiq consumer of this deployment's queues (``REDIS_KEY_PREFIX``)
stamped its heartbeat within ``worker.broker.HEARTBEAT_TIMEOUT_MS``: every fetch stamps it, and an idle
worker fetches far more often than that (``worker.pickup``). Otherwise one line says what is wrong (exit 1).
Any worker of the deployment counts: with several worker containers on one Redis, this says that one is
alive, not which.
"""

from __future__ import annotations

import sys
import time
from typing import Any, cast

from redis import RedisError

from config.settings import settings_or_exit
from worker.broker import HEARTBEAT_TIMEOUT_MS
from worker.connections import connect_redis
from worker.keys import Keys
from worker.redis_wait import redis_address


def newest_heartbeat_age_ms(zset: list[tuple[Any, float]], now_ms: float) -> float | None:
    """Milliseconds since the newest heartbeat in Dramatiq's ``__heartbeats__`` set, or None when empty."""
    return None if not zset else now_ms - max(score for _, score in zset)


def main() -> int:
    settings = settings_or_exit()
    redis = connect_redis(settings)
    key = f"{Keys(settings.redis_key_prefix).dramatiq_namespace}:__heartbeats__"
    try:
        newest = cast(list[tuple[Any, float]], redis.zrange(key, -1, -1, withscores=True))
    except RedisError as exc:
        print(f"unhealthy: cannot reach Redis at {redis_address(settings)} ({type(exc).__name__})", file=sys.stderr)
        return 1
    finally:
        redis.close()
    age = newest_heartbeat_age_ms(newest, time.time() * 1000)
    if age is None or age > HEARTBEAT_TIMEOUT_MS:
        print(f"unhealthy: no worker heartbeat in the last {HEARTBEAT_TIMEOUT_MS // 1000} s", file=sys.stderr)
        return 1
    print(f"healthy: a worker stamped its heartbeat {age / 1000:.1f} s ago")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
