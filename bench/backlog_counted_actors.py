"""``worker.actors`` with every run of ``deliver`` counted in Redis, for ``bench/backlog.py``.

A Dramatiq middleware adds one to ``<prefix>:bench:runs`` after each message the worker processed (a run of
``deliver``, whether it sent, handed back or found a stale token), so the bench can give runs per delivered
grant. Nothing else changes: the broker, deliverer and reconciler are the service's own.
"""

from __future__ import annotations

import contextlib
from typing import Any

import dramatiq
from redis import RedisError

import worker.actors as actors
from bench.rig import RUNS_KEY
from worker.connections import connect_redis


class CountRuns(dramatiq.Middleware):
    """INCR ``<prefix>:bench:runs`` after every processed message (best effort: a lost count is a smaller figure)."""

    def __init__(self) -> None:
        self._redis = connect_redis(actors.settings)
        self._key = f"{actors.settings.redis_key_prefix}:{RUNS_KEY}"

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with contextlib.suppress(RedisError):
            self._redis.incr(self._key)


actors.broker.add_middleware(CountRuns())
deliver = actors.deliver
