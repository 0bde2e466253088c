"""Keeping a handled event in the inbox, for every source (webhooks and re-processing alike)."""

from __future__ import annotations

from collections.abc import Mapping

from producers.counters import count_event_async
from producers.inbox import EventOutcome, Outcome, Recorded
from producers.state import AppState
from worker.observability import capture

__all__ = ["record_event"]


async def record_event(
    state: AppState,
    source: str,
    kind: str,
    ref: str,
    headers: Mapping[str, str],
    body: bytes,
    outcome: EventOutcome,
    *,
    reprocess: bool = False,
) -> Recorded:
    """Keep the event with ``outcome`` (``EventInbox.record``); count an unusable one and tell Sentry of it once."""
    recorded = await state.inbox.record(source, kind, ref, headers, body, outcome, reprocess=reprocess)
    if outcome.outcome == Outcome.UNUSABLE:
        await count_event_async(state.aredis, state.keys, f"{source}.unusable")
        if recorded.first_unusable:
            capture(
                f"{source} event {recorded.id} is signed but unusable: {outcome.error} (fix the rules or links, "
                f"then run wetbot-rewards events reprocess {recorded.id})",
                level="warning",
                tags={"kind": f"{source}-unusable-event"},
            )
    return recorded
