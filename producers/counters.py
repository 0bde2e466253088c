"""Event counters kept in Redis (shared by every web process) and exported by ``/metrics``."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import cast

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from worker import redis_values as values
from worker.keys import Keys

#: Counter names become Prometheus label values; keep them plain.
_NAME = re.compile(r"^[a-z0-9_.:-]{1,80}$")


def count_event(redis: Redis, keys: Keys, name: str, amount: int = 1) -> None:
    """Add ``amount`` to counter ``name`` (e.g. ``twitch.notification.ignored``)."""
    redis.hincrby(keys.counters(), _checked(name), amount)


async def count_event_async(redis: AsyncRedis, keys: Keys, name: str, amount: int = 1) -> None:
    """``count_event`` for asyncio code."""
    await cast(Awaitable[int], redis.hincrby(keys.counters(), _checked(name), amount))


def read_counters(redis: Redis, keys: Keys) -> dict[str, int]:
    """Every counter and its value."""
    raw = values.raw_map(redis.hgetall(keys.counters()))
    return {name.decode(): int(value) for name, value in sorted(raw.items())}


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"counter name {name!r}: use a-z, 0-9 and _ . : -")
    return name
