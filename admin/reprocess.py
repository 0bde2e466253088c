"""Re-processing an inbox event after the rules or links were fixed (``wetbot-rewards events reprocess``).

The stored body goes through the same handler as a live delivery, under the
same idempotency keys, so re-processing never grants twice:

* ``unusable`` events (the rules could not read them) are handled as if
  delivered again;
* ``ignored`` events granted nothing, so a Twitch message's "seen" marker
  (set when it was ignored) is not asked; its grants' keys still are;
* events that made or found grants (``granted``, ``parked``, ``duplicate``) and
  revocations, challenges and test payloads are left as they are: there is
  nothing to re-process, and saying so is the idempotent answer.

The grants it makes are confirmed by the replicas as a live delivery's are
(creates, Patreon's fence, link rewards: ``worker.replication``); short of them
it raises ``ActionUnconfirmed`` and claims nothing, and re-processing again is
safe (the same idempotency keys find what the first run made). The inbox's
record of the new outcome is not confirmed: a failover may bring back the old
outcome, and re-processing the event again then finds its grants.
"""

from __future__ import annotations

from config.errors import WetbotRewardsError
from producers.inbox import EventOutcome, InboxEvent, Outcome
from producers.patreon.webhook import handle_delivery
from producers.settle import record_event
from producers.state import AppState
from producers.twitch.webhook import handle_message, parse_body
from producers.unconfirmed import unconfirmed_as

__all__ = ["REPROCESSABLE", "NothingToReprocess", "ReprocessRefused", "reprocess"]

#: Outcomes whose events can be re-processed.
REPROCESSABLE = frozenset({Outcome.UNUSABLE, Outcome.IGNORED})


class ReprocessRefused(WetbotRewardsError):
    """Raised when the event cannot be re-processed (an unknown id or source); the message says why."""


class NothingToReprocess(WetbotRewardsError):
    """Raised when the event's outcome leaves nothing to re-process; ``event`` is the entry as it stands."""

    def __init__(self, event: InboxEvent) -> None:
        super().__init__(f"event {event.id} is {event.outcome.outcome.value}: nothing to re-process")
        self.event = event


async def reprocess(state: AppState, event_id: str) -> EventOutcome:
    """Handle the stored event again and record the new outcome.

    Raises:
      ReprocessRefused: no such event.
      NothingToReprocess: the event already made or found its grants (or is not a grant event).
      ActionUnconfirmed: too few replicas confirmed the grants it made (run it again).
      RedisError, BrokerError: storage trouble; nothing was recorded (run it again).
    """
    with unconfirmed_as(f"re-processing event {event_id}"):
        return await _reprocess(state, event_id)


async def _reprocess(state: AppState, event_id: str) -> EventOutcome:
    event = state.inbox.get(event_id)
    if event is None:
        raise ReprocessRefused(f"no event {event_id} in the inbox (a mistyped id, or older than EVENT_RETENTION_S)")
    kind = event.outcome.outcome
    if kind not in REPROCESSABLE:
        raise NothingToReprocess(event)
    if event.source == "twitch":
        outcome = await handle_message(
            state, event.ref, event.kind, parse_body(event.body), check_seen=kind != Outcome.IGNORED
        )
    elif event.source == "patreon":
        outcome = await handle_delivery(state, event.headers.get("x-patreon-event", ""), event.body)
    else:
        raise ReprocessRefused(f"event {event_id} comes from an unknown source {event.source!r}")
    await record_event(state, event.source, event.kind, event.ref, event.headers, event.body, outcome, reprocess=True)
    return outcome
