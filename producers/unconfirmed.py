"""``ActionUnconfirmed``: an operator's action (console, API, CLI) that too few Redis replicas confirmed.

An action answers "done" only once ``REDIS_WAIT_REPLICAS`` replicas have its step (``worker.replication``),
so a failover cannot undo it behind the operator's back. Short of that, the step may stand on the primary
(and reach the replicas later) or be dropped by a failover: neither is known, so the answer says so and
claims nothing. Every action is one guarded step, so repeating it is safe: it does what is not done yet,
finds done what is (and confirms that), and never does anything twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from worker.replication import NotReplicated

__all__ = ["ActionUnconfirmed", "unconfirmed_as"]


class ActionUnconfirmed(NotReplicated):
    """Too few replicas confirmed ``what``: not claimed done; ``message`` tells the operator to repeat it.

    A ``NotReplicated`` (so a ``RedisError``): code that does not know it still answers "storage
    unavailable", never "done". ``done`` lists what an action over many grants (bulk replay) had confirmed
    before it stopped.
    """

    def __init__(self, what: str, cause: NotReplicated, done: tuple[str, ...] = ()) -> None:
        self.what = what
        self.done = done
        self.message = (
            f"{what} could not be confirmed by the Redis replicas ({cause}), so it is not reported done: it may "
            "stand on the primary only, where a failover would undo it. Run it again in a few seconds; a "
            "repeat is safe (it does what is not done yet, confirms what is, and does nothing twice)"
        )
        super().__init__(self.message, cause.reply)


@contextmanager
def unconfirmed_as(what: str) -> Iterator[None]:
    """Turn a ``NotReplicated`` raised inside into ``ActionUnconfirmed(what)`` (one already turned passes)."""
    try:
        yield
    except ActionUnconfirmed:
        raise
    except NotReplicated as exc:
        raise ActionUnconfirmed(what, exc) from exc
