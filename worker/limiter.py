"""The global rate limiter: at most N WetBot requests per key in any window of W seconds.

Counted in Redis by ``lua/sliding_window.lua`` on Redis' own clock, so every
worker process on every host shares one budget per API key. Asking for a slot
never raises: it returns "go" or "wait N seconds", because in Dramatiq any
exception (``Retry`` included) spends a retry (docs/dramatiq.md §2), and
waiting for a slot is not a failure.

**A slot counts until a window after its request can have reached WetBot.**
WetBot counts a request when it *arrives*, which is some time after we took
its slot: the worker still has to step the grant into ``sending``, connect and
write, and a starved process (CPU load, a VM pause), a slow connect or a
server that stamps requests late can stretch that well past the window's
margin. A slot is stamped with its start, and re-stamped with the time its
answer came back when the outcome is recorded (``settle_ref``/``settle``):
the answer comes after the arrival, so a settled slot always covers it. Until
then a slot is **pending** (``Keys.rate_pending``: the latest time its
request may still arrive, ``hold_s`` after the slot was taken) and does not
leave the window, however old its start: the script moves it up instead.

Without that hold, the slot left the window a window
after its start, and a request whose answer came back later than that (a
read timeout as long as the window, a worker killed mid-request, a run
starved between its slot and its send) no longer counted while WetBot still
did; another request took the freed slot, and WetBot saw N+1 arrivals in one
of its windows and answered 429 (the chaos tests' fast window, 10 per 2 s with
a 2 s timeout, under a CPU hog; ``tests/worker/test_starved_slot.py`` plays it
deterministically). The re-stamp could not help: it only updated a slot still
in the window. Under the hog, slot to arrival reached 229 ms against a 60 ms
margin, most of it in the worker between its slot and its send; the simulator (in the
test's process) stamped requests within 9 ms of accepting them, and a late
stamp is a late arrival anyway, which the limiter has to cover
(RELIABILITY.md, "The starved-process 429").

What bounds ``hold_s`` is the run's leases (``worker.delivery``): the claim's
until the step into ``sending``, then the request's (its timeout plus a
margin). A request that reaches WetBot later than that is outside what the
leases promise anyway: its grant moves again, to a takeover, by then. A
slot whose answer is never recorded (its worker died) therefore counts for
``hold_s`` plus a window, and so does one whose request got no answer (a read
timeout, a connection lost after sending: WetBot may count it after we gave up);
a slot taken for a request that is then not sent is settled at once (``settle``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from redis import Redis

from config.settings import RateLimit
from worker import redis_values as values
from worker.effects import SlotSettle
from worker.keys import Keys
from worker.scripts import load_script
from worker.timings import DEFAULT_TIMINGS, Timings

#: Seconds added to the window on our side. A slot counts from its request's
#: start until a window after its answer comes back (``settle``), or, while the
#: answer is not back, after the latest its request may arrive (``hold_s``):
#: WetBot counts a request when it arrives, which lies in between, so even a
#: request that reaches it late (a starved worker, a retransmitted SYN, a slow
#: proxy) cannot put N+1 arrivals in one of its windows. The margin only covers
#: clock granularity and the server's own jitter: 50 ms, plus 0.5 % of long
#: windows (0.35 s at 60 s).
SAFETY_MARGIN_S = 0.05
SAFETY_MARGIN_FRACTION = 0.005
#: Windows after a 429 during which no slot counts as spare (``try_spare``): WetBot's limit may be stricter
#: than ours (a key shared with another tool), and a read taken then would push the request into a 429.
THROTTLED_WINDOWS = 10
#: Seconds a re-stamped slot's window key lives at least (it needs one window; the rest is slack).
SETTLED_TTL_S = 120.0


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
    #: When the wait ends, in microseconds on Redis' clock (a waiter's turn); 0 when granted or not asked. A
    #: hand-back is due then, not ``wait_s`` after whenever its caller gets to schedule it.
    due_at_us: int = 0


class SlidingWindowLimiter:
    """Sliding-window limiter shared through Redis.

    Parameters:
      redis: client for the service's Redis.
      keys: key layout.
      rate: requests per window (``WETBOT_RATE_LIMIT``).
      timings: the line's grace (``Timings.line_grace_s``).
    """

    def __init__(self, redis: Redis, keys: Keys, rate: RateLimit, *, timings: Timings = DEFAULT_TIMINGS) -> None:
        self._redis = redis
        self._line_grace_s = timings.line_grace_s
        self._keys = keys
        self.rate = rate
        self.effective_window_s = effective_window_s(rate)
        self._script = load_script(redis, "sliding_window")
        self._block = load_script(redis, "rate_block")

    def try_acquire(
        self,
        key_id: str,
        *,
        waiter: str = "",
        grant_key: str = "",
        hold_s: float = 0.0,
    ) -> SlotDecision:
        """Take a slot for ``key_id`` if one is free.

        Parameters:
          key_id: fingerprint of the API key.
          waiter: who asks (a grant id). Refused, it gets a place in the key's line and the wait until its
            turn: the slot after those of every waiter ahead of it. Without one the wait is until the next
            slot frees, whoever else waits for it.
          grant_key: the asking grant's hash: refused, it records the line there, so leaving the moving
            states (cancelled, parked, dead) gives up its place (``lua/transition.lua``).
          hold_s: the latest, in seconds from now, that the slot's request may reach WetBot: until its
            answer is recorded (``settle_ref``, ``settle``) the slot counts until a window after that.
            0 (a slot that stands for no real request, in tests): it counts one window from now.
        """
        member = uuid.uuid4().hex
        granted, wait_us, *clock = self._script(
            keys=[
                self._keys.rate_window(key_id),
                self._keys.rate_block(key_id),
                self._keys.rate_line(key_id),
                self._keys.rate_pending(key_id),
                *([grant_key] if grant_key else []),
            ],
            args=[
                self.rate.limit,
                int(self.effective_window_s * 1_000_000),
                member,
                waiter,
                int(self._line_grace_s * 1_000_000),
                max(0, int(hold_s * 1_000_000)),
            ],
        )
        if int(granted) == 1:
            return SlotDecision(granted=True, wait_s=0.0, member=member)
        wait = max(int(wait_us), 1000)
        return SlotDecision(granted=False, wait_s=wait / 1_000_000, due_at_us=int(clock[0]) + wait if clock else 0)

    def try_spare(
        self, key_id: str, *, keep_free: int, demand_key: str = "", own_demand: int = 0, hold_s: float = 0.0
    ) -> SlotDecision:
        """Take one more slot for ``key_id`` only if it is spare: nobody waits in the key's line, WetBot has
        not answered 429 for ``THROTTLED_WINDOWS`` windows, and once it is taken at least ``keep_free``
        slots of the window stay free for the grants already queued (the size of the ZSET ``demand_key``,
        when given, less the ``own_demand`` of the asking request) and then some. ``hold_s`` as in
        ``try_acquire``.

        The look at the line and the window is a hint (another worker may take a slot in between); the
        slot itself is taken by the same atomic script as every other, so the limit always holds.
        """
        now_s = values.redis_time(self._redis).s
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(self._keys.rate_line(key_id))
        pipe.exists(self._keys.rate_throttled(key_id))
        pipe.zcard(demand_key or self._keys.rate_line(key_id))
        waiting, throttled, demand = (values.integer(reply) for reply in values.items(pipe.execute()))
        if waiting or throttled:
            return SlotDecision(granted=False, wait_s=0.0)
        others = max(int(demand) - own_demand, 0) if demand_key else 0
        if self.rate.limit - len(self.held_slots(key_id, now_s)) - 1 - others < keep_free:
            return SlotDecision(granted=False, wait_s=0.0)
        return self.try_acquire(key_id, hold_s=hold_s)

    def give_back(self, key_id: str, member: str) -> None:
        """Free a slot whose request was never sent (a baseline read that is no longer needed)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self._keys.rate_window(key_id), member)
        pipe.zrem(self._keys.rate_pending(key_id), member)
        pipe.execute()

    def settle_ref(self, key_id: str, member: str, *, may_still_arrive: bool = False) -> SlotSettle:
        """The slot to re-stamp with the time its answer came back, as ``StepEffects.slot`` takes it.

        Recording an outcome re-stamps the slot in the same step (``lua/transition.lua``) and ends its
        hold, so the slot covers the whole time the request may have taken to arrive, and no more. A
        request that got no answer (``CallResult.may_still_arrive``) keeps its hold: WetBot may count it
        after the client gave up, so its slot counts until a window after the latest it may arrive.
        """
        pending = "" if may_still_arrive else self._keys.rate_pending(key_id)
        return SlotSettle(self._keys.rate_window(key_id), member, pending, self._settled_ttl_ms())

    def settle(self, key_id: str, member: str, *, may_still_arrive: bool = False) -> None:
        """Re-stamp a slot now and end its hold, when no ledger step carries it: its answer is back, or its
        request will not be sent (the grant moved meanwhile, or no replica confirmed the step into sending).

        Like the step's re-stamp: the slot counts one window from now, and comes back if it had left. A
        request that got no answer keeps its hold (``settle_ref``).
        """
        now_us = values.redis_time(self._redis).us
        window = self._keys.rate_window(key_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(window, {member: now_us}, gt=True)
        if not may_still_arrive:
            pipe.zrem(self._keys.rate_pending(key_id), member)
        pipe.pttl(window)
        ttl_ms = int(pipe.execute()[-1])
        if ttl_ms < 0:
            self._redis.pexpire(window, self._settled_ttl_ms())

    def held_slots(self, key_id: str, now_s: float) -> list[float]:
        """The times (epoch seconds, oldest first) the slots of ``key_id`` held at ``now_s`` count from.

        The Python mirror of the script's window (``worker.eta``): a slot counts a window after its time;
        a pending slot older than that counts from now, or from its pending deadline once that is past.
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(self._keys.rate_window(key_id), 0, -1, withscores=True)
        pipe.zrange(self._keys.rate_pending(key_id), 0, -1, withscores=True)
        slots, pending = (values.scored(reply) for reply in values.items(pipe.execute()))
        return held_slot_times(slots, dict(pending), now_s=now_s, window_s=self.effective_window_s)

    def block(self, key_id: str, duration_s: float) -> None:
        """Let no request for ``key_id`` start for ``duration_s`` seconds (after a 429).

        Uses Redis' clock, like the window, and never shortens an existing block: the read and the write
        are one step (``lua/rate_block.lua``), so of two 429s answered at once the longer block stays.
        """
        throttled_ms = int(max(duration_s, self.rate.window_s) * THROTTLED_WINDOWS * 1000)
        self._block(
            keys=[self._keys.rate_block(key_id), self._keys.rate_throttled(key_id)],
            args=[int(duration_s * 1_000_000), throttled_ms, int(duration_s * 1000) + 1000],
        )

    def _settled_ttl_ms(self) -> int:
        return int((self.effective_window_s + SETTLED_TTL_S) * 1000)


def held_slot_times(
    slots: Iterable[tuple[str, float]], pending: Mapping[str, float], *, now_s: float, window_s: float
) -> list[float]:
    """``lua/sliding_window.lua``'s window at ``now_s``, from the window's and the pending set's scores (us).

    Returns, oldest first, the time each held slot counts from, in seconds: its own while it is within the
    window; else, while pending, now or its pending deadline, whichever is earlier; the others are gone.
    """
    cutoff_us = (now_s - window_s) * 1_000_000
    held = []
    for member, score in slots:
        deadline = pending.get(member)
        if score > cutoff_us:
            held.append(score / 1_000_000)
        elif deadline is not None and deadline > cutoff_us:
            held.append(min(now_s, deadline / 1_000_000))
    return sorted(held)
