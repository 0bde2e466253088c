"""A Dramatiq middleware that marks a grant ``dead`` when Dramatiq gives up on its message.

WetBot trouble never raises (``delivery.py``), so a message is only failed
after unexpected exceptions (a bug, Redis unreachable for minutes) have used up
the actor's retries. Without this the grant would keep its last state —
``queued`` or ``sending`` — with no message left to move it, invisible to
``dead list``. Here it becomes ``dead`` with the last error, is reported once,
and can be replayed.
"""

from __future__ import annotations

import logging

import dramatiq
from redis import RedisError

from worker.broker import ACTOR_NAME
from worker.ledger import GrantState, Ledger
from worker.observability import capture

logger = logging.getLogger("wetbot_rewards.dead_letters")

#: Characters of the last exception line kept on the grant.
MAX_ERROR_CHARS = 300


class DeadLetterRecorder(dramatiq.Middleware):
    """Records a failed ``deliver`` message on its grant."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.actor_name != ACTOR_NAME or not message.args:
            return
        grant_id = str(message.args[0])
        traceback = str(message.options.get("traceback") or "").strip()
        last_line = traceback.splitlines()[-1] if traceback else "no traceback"
        retries = message.options.get("retries", 0)  # failed attempts so far, this one included
        reason = f"the worker failed unexpectedly {retries} times: {last_line}"[:MAX_ERROR_CHARS]
        try:
            moved = self._ledger.transition(
                grant_id,
                GrantState.DEAD,
                reason,
                expect=[GrantState.QUEUED, GrantState.RETRYING, GrantState.SENDING],
                last_error=reason,
            )
        except RedisError as exc:
            logger.error(
                "grant %s: Dramatiq gave up on it, and Redis is unavailable to record that (%s)", grant_id, exc
            )
            return
        if moved:
            logger.error("grant %s is dead: %s", grant_id, reason)
            capture(
                f"grant dead: {reason}",
                level="error",
                tags={"kind": "grant_final", "state": GrantState.DEAD.value, "grant_id": grant_id},
            )
