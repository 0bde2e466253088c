"""The global rate limiter: at most N WetBot requests per key in any window of W seconds.

Counted in Redis by ``lua/sliding_window.lua`` on Redis' own clock, so every
worker process on every host shares one budget per API key. Asking for a slot
never raises: it returns "go" or "wait N seconds", because in Dramatiq any
exception (``Retry`` included) spends a retry (research/dramatiq.md §2), and
waiting for a slot is not a failure.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import cast

from redis import Redis

from config.settings import RateLimit
from worker.keys import Keys
from worker.scripts import load_script

#: Seconds added to the window on our side. A slot counts from its request's
#: start until its answer comes back (``settle``): WetBot counts a request when
#: it arrives, which lies between the two, so even a request that reaches it
#: late (a retransmitted SYN, a slow proxy) cannot put N+1 arrivals in one of
#: its windows. The margin only covers clock granularity and the server's own
#: jitter: 50 ms, plus 0.5 % of long windows (0.35 s at 60 s).
SAFETY_MARGIN_S = 0.05
SAFETY_MARGIN_FRACTION = 0.005
#: Seconds after its turn that a waiter in a key's line keeps its place (``lua/sliding_window.lua``): it
#: covers the reconciler's pass and the message's pickup; a waiter that never comes back is dropped then.
LINE_GRACE_S = 5.0


def effective_window_s(rate: RateLimit) -> float:
    """The window slots are spaced by: the key's own plus the safety margin."""
    return rate.window_s + SAFETY_MARGIN_S + SAFETY_MARGIN_FRACTION * rate.window_s


@dataclass(frozen=True)
class SlotDecision:
    """The limiter's answer: ``granted``, or how long to wait before asking again."""

    #: True when a slot was taken for this request.
    granted: bool
    #: Seconds until a slot may free up; 0 when granted.
    wait_s: float
    #: The slot's member in the window (for ``settle``); "" when not granted.
    member: str = ""


class SlidingWindowLimiter:
    """Sliding-window limiter shared through Redis.

    Parameters:
      redis: client for the service's Redis.
      keys: key layout.
      rate: requests per window (``WETBOT_RATE_LIMIT``).
    """

    def __init__(self, redis: Redis, keys: Keys, rate: RateLimit) -> None:
        self._redis = redis
        self._keys = keys
        self.rate = rate
        self.effective_window_s = effective_window_s(rate)
        self._script = load_script(redis, "sliding_window")

    def try_acquire(
        self, key_id: str, *, waiter: str = "", grant_key: str = "", now_s: float | None = None
    ) -> SlotDecision:
        """Take a slot for ``key_id`` if one is free.

        Parameters:
          key_id: fingerprint of the API key.
          waiter: who asks (a grant id). Refused, it gets a place in the key's line and the wait until its
            turn: the slot after those of every waiter ahead of it. Without one the wait is until the next
            slot frees, whoever else waits for it.
          grant_key: the asking grant's hash: refused, it records the line there, so leaving the moving
            states (cancelled, parked, dead) gives up its place (``lua/transition.lua``).
          now_s: the time to use instead of Redis ``TIME`` (tests only).
        """
        now_arg = "" if now_s is None else str(int(now_s * 1_000_000))
        member = uuid.uuid4().hex
        granted, wait_us = self._script(
            keys=[
                self._keys.rate_window(key_id),
                self._keys.rate_block(key_id),
                self._keys.rate_line(key_id),
                *([grant_key] if grant_key else []),
            ],
            args=[
                self.rate.limit,
                int(self.effective_window_s * 1_000_000),
                member,
                now_arg,
                waiter,
                int(LINE_GRACE_S * 1_000_000),
            ],
        )
        if int(granted) == 1:
            return SlotDecision(granted=True, wait_s=0.0, member=member)
        return SlotDecision(granted=False, wait_s=max(int(wait_us), 1000) / 1_000_000)

    def settle_ref(self, key_id: str, member: str) -> dict[str, str]:
        """The slot to re-stamp with the time its answer came back, as ``StepEffects.slot`` takes it.

        Recording an outcome re-stamps the slot in the same step, so the slot
        covers the whole time the request may have taken to arrive.
        """
        return {"key": self._keys.rate_window(key_id), "member": member}

    def settle(self, key_id: str, member: str) -> None:
        """Re-stamp a slot now (its answer is back) when no ledger step carries it (a read-back)."""
        seconds, micros = cast(tuple[int, int], self._redis.time())
        self._redis.zadd(
            self._keys.rate_window(key_id), {member: int(seconds) * 1_000_000 + int(micros)}, xx=True, gt=True
        )

    def block(self, key_id: str, duration_s: float) -> None:
        """Let no request for ``key_id`` start for ``duration_s`` seconds (after a 429).

        Uses Redis' clock, like the window, and never shortens an existing block.
        """
        seconds, micros = self._redis.time()  # type: ignore[misc]
        until_us = int(seconds) * 1_000_000 + int(micros) + int(duration_s * 1_000_000)
        key = self._keys.rate_block(key_id)
        current = cast(bytes | None, self._redis.get(key))
        if current is not None and int(current) >= until_us:
            return
        self._redis.set(key, until_us, px=int(duration_s * 1000) + 1000)
