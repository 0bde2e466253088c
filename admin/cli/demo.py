"""``wetbot-rewards demo clear``: delete what demo mode (``make run`` without a WetBot key) left in Redis.

Demo mode keeps every key under ``wbr-demo:`` (``config.settings.DEMO_KEY_PREFIX``), so this deletes that
prefix and nothing else, whatever ``REDIS_KEY_PREFIX`` says: it can never touch a real install's keys.
It walks the keyspace with ``SCAN`` and deletes in batches (``UNLINK``) rather than in one Lua script:
a script would block Redis for the whole walk, and demo data needs no all-or-nothing. Running it twice
is safe (the second run finds nothing).

``demo redeem`` (``admin.cli.demo_redeem``) redeems a channel-point reward in the demo's Twitch simulator.
"""

from __future__ import annotations

import argparse
from typing import Any

from redis import Redis

from admin.cli.demo_redeem import add_redeem
from config.settings import DEMO_KEY_PREFIX, Settings
from worker import redis_values as values
from worker.connections import connect_redis

__all__ = ["clear_demo_keys", "register"]

#: Keys per ``SCAN`` step and per ``UNLINK``.
BATCH = 500


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``clear`` and ``redeem`` to the ``demo`` noun."""
    demo = parser.add_subparsers(title="demo commands", metavar="COMMAND")
    clear = demo.add_parser("clear", help=f"delete every Redis key under {DEMO_KEY_PREFIX}: (demo data only)")
    clear.set_defaults(run=_clear)
    add_redeem(demo)


def clear_demo_keys(redis: Redis) -> int:
    """Delete every key under ``wbr-demo:``; returns how many were deleted."""
    deleted = 0
    batch: list[Any] = []
    for key in redis.scan_iter(match=f"{DEMO_KEY_PREFIX}:*", count=BATCH):
        batch.append(key)
        if len(batch) >= BATCH:
            deleted += values.integer(redis.unlink(*batch))
            batch = []
    if batch:
        deleted += values.integer(redis.unlink(*batch))
    return deleted


def _clear(settings: Settings, args: argparse.Namespace) -> int:
    del args
    redis = connect_redis(settings)
    try:
        deleted = clear_demo_keys(redis)
    finally:
        redis.close()
    print(f"deleted {deleted} demo key(s) under {DEMO_KEY_PREFIX}:")
    return 0
