"""The delivery engine's timing constants, in one object with the production values as defaults.

They are the service's behaviour, not settings an operator tunes, so they are not in the environment;
but a test can pass its own (``worker.runtime.build_deliverer(timings=...)``) so that it waits only as
long as the behaviour it checks needs, instead of sleeping the production margins.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timings:
    """How long the deliverer and the limiter wait, hold and retry, in seconds."""

    #: Longest wait for a rate slot slept in the worker thread. A longer one hands the grant back for its
    #: turn in the key's line (``SlidingWindowLimiter.try_acquire``), and the reconciler dispatches it as
    #: its slot frees (``worker.schedule.Reconciler``), so a key's backlog holds no thread while it waits:
    #: another key's grant always finds one (``bench/drain.py``'s isolation figure). The hand-back costs a
    #: few Redis round trips, a few milliseconds; this is about as long.
    max_inline_wait_s: float = 0.05
    #: How long a lease outlives the HTTP timeout. The lease says "a live run is sending to this user";
    #: once it has run out the grant moves again (a killed worker's grant after timeout + margin + ~1 s:
    #: 26 s with the default 15 s). The margin also gives a run whose answer is back time to record it
    #: while Redis pauses (a failover), before anyone treats the request as abandoned.
    lease_margin_s: float = 10.0
    #: Until a grant whose user is busy (another grant's run or read-back) is looked at again.
    busy_retry_s: float = 2.0
    #: How long a run keeps trying to record an outcome while Redis does not answer.
    record_retry_s: float = 90.0
    #: Until a grant is looked at again when no replica confirmed its step into sending (not sent).
    unconfirmed_retry_s: float = 5.0
    #: How long after its turn a waiter in a key's line keeps its place (``lua/sliding_window.lua``): it
    #: covers the reconciler's pass and the message's pickup; a waiter that never comes back is dropped then.
    line_grace_s: float = 5.0

    @property
    def claim_lease_s(self) -> float:
        """How long a claim's lease lasts before the request starts (it covers the inline wait)."""
        return self.max_inline_wait_s + self.lease_margin_s


#: The production timings.
DEFAULT_TIMINGS = Timings()
