"""Recording what handling an inbox event did, for every source (webhooks and re-processing alike)."""

from __future__ import annotations

from producers.counters import count_event_async
from producers.inbox import EventOutcome, Outcome
from producers.state import AppState
from worker.observability import capture

__all__ = ["settle_event"]


async def settle_event(
    state: AppState, source: str, ident: str, outcome: EventOutcome, *, reprocess: bool = False
) -> None:
    """Record ``outcome`` on the inbox entry; count an unusable event and tell Sentry of it once.

    A redelivery that finds its grants made already (``duplicate``) leaves what
    the first delivery recorded; a re-processing that does leaves the grants a
    concurrent one recorded.
    """
    mode = "always"
    if outcome.outcome == Outcome.DUPLICATE:
        mode = "unless-acted" if reprocess else "first"
    settled = await state.inbox.settle(ident, outcome, mode=mode, reprocess=reprocess)
    if outcome.outcome != Outcome.UNUSABLE:
        return
    await count_event_async(state.aredis, state.keys, f"{source}.unusable")
    if settled.first_unusable:
        capture(
            f"{source} event {ident} is signed but unusable: {outcome.error} (fix the rules or links, then run "
            f"wetbot-rewards events reprocess {ident})",
            level="warning",
            tags={"kind": f"{source}-unusable-event"},
        )
