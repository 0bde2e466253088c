"""Helpers for tests that build a request's state by hand, or count what reached WetBot.

Under ``AMBIGUOUS_POLICY=verify`` (and ``hold``) the worker reads the member's profile right before each
request when the key has a spare slot (the *baseline*, ``Deliverer._read_baseline``), and a read-back
judges a maybe-applied outcome only against it. A test that puts a grant in ``sending`` (or verify-pending)
by hand, as a worker that died mid-request left it, gives it a baseline the way the worker's step into
``sending`` writes one (``baseline_fields``); a test whose point is elsewhere can take the key's spare
slots (``fill_window``) so that no baseline is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import cast

from redis import Redis

from simulator.wetbot import WetbotSimulator
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter
from worker.verify import SPARE_FRACTION


def redis_now_s(redis: Redis) -> float:
    """Redis' clock in seconds (the clock ``baseline_at`` is on)."""
    seconds, micros = cast(tuple[int, int], redis.time())
    return int(seconds) + int(micros) / 1_000_000


def baseline_fields(
    redis: Redis, ledger: Ledger, guild_id: str, user_id: str, amounts: Mapping[str, float | None]
) -> dict[str, str]:
    """The grant fields the worker's step into ``sending`` writes for a baseline of ``amounts`` read now."""
    snapshot = ledger.get_profile(guild_id, user_id)
    return {
        "baseline": json.dumps(dict(amounts)),
        "baseline_at": repr(redis_now_s(redis)),
        "baseline_missing": "",
        "baseline_seq": str(snapshot.seq if snapshot else 0),
    }


def fill_window(redis: Redis, keys: Keys, limiter: SlidingWindowLimiter, key_id: str) -> int:
    """Take slots of ``key_id``'s window until the next request leaves fewer than ``SPARE_FRACTION`` of
    it free, even with no other grant of the guild queued: no baseline is read before the requests that
    follow (while those slots last). Returns how many slots were taken."""
    limit = limiter.rate.limit
    keep_free = math.ceil(limit * SPARE_FRACTION)  # as the worker computes it
    taken = 0
    while limit - cast(int, redis.zcard(keys.rate_window(key_id))) - 1 >= keep_free:
        assert limiter.try_acquire(key_id).granted, "the window filled up before the spare slots were gone"
        taken += 1
    return taken


def methods(sim: WetbotSimulator) -> list[str]:
    """The method of every request that reached WetBot, in order."""
    return [record.method for record in sim.requests()]


def posts(sim: WetbotSimulator) -> int:
    """Requests that could change an inventory (sent to WetBot, as opposed to reads)."""
    return sum(1 for record in sim.requests() if record.method == "POST")


def gets(sim: WetbotSimulator) -> int:
    """Profile reads: baselines and read-backs."""
    return sum(1 for record in sim.requests() if record.method == "GET")
