"""The event inbox in the console: the list (newest first, by outcome and source), one event, re-processing.

Re-processing calls ``admin.reprocess.reprocess``, the function behind ``wetbot-rewards
events reprocess``, so the console can do nothing the CLI would not: the same idempotency
keys, so a second click never grants twice.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from admin.console.context import BASE, ConsoleContext, ConsoleForm, console_form, console_page, see_other
from admin.console.route import ConsoleRoute
from admin.reprocess import REPROCESSABLE, NothingToReprocess, ReprocessRefused, reprocess
from config.domain import cursor_ms
from producers.inbox import InboxEvent, Outcome
from producers.unconfirmed import ActionUnconfirmed

__all__ = ["OUTCOME_HELP", "event_type", "pretty_body", "router"]

router = APIRouter(route_class=ConsoleRoute)

#: An event id as ``producers.inbox.event_id`` makes them.
EVENT_ID = re.compile(r"^[0-9a-f]{24}$")
#: Sources the filter offers.
SOURCES = ("twitch", "patreon")
PAGE_SIZE = 50
#: Longest body shown on an event's page (characters); the rest is cut with a note.
MAX_BODY_CHARS = 100_000
#: What each outcome means, in a streamer's words.
OUTCOME_HELP = {
    Outcome.GRANTED: "rewards were queued for WetBot",
    Outcome.PARKED: "rewards wait until the viewer is linked to a Discord account (Links page)",
    Outcome.IGNORED: "no rule wanted this event (nothing to grant)",
    Outcome.DUPLICATE: "a repeat of an event already handled",
    Outcome.UNUSABLE: "the rules could not read it: fix the rules, then re-process",
    Outcome.REVOCATION: "Twitch ended a subscription: subscribe again",
    Outcome.VERIFICATION: "Twitch checked the webhook address (answered)",
    Outcome.TEST: "a test delivery from Patreon (never granted)",
}


def pretty_body(body: bytes) -> tuple[str, bool]:
    """The body as indented JSON when it parses (True), else as text; cut at ``MAX_BODY_CHARS``."""
    text = body.decode("utf-8", "replace")
    is_json = False
    try:
        text = json.dumps(json.loads(body), indent=2, ensure_ascii=False, sort_keys=False)
        is_json = True
    except (ValueError, RecursionError):
        pass
    if len(text) > MAX_BODY_CHARS:
        text = text[:MAX_BODY_CHARS] + f"\n… ({len(text) - MAX_BODY_CHARS} more characters not shown)"
    return text, is_json


def event_type(event: InboxEvent) -> str:
    """What happened, as the source names it (``channel.cheer``, ``members:pledge:create``), else the kind."""
    for header in ("twitch-eventsub-subscription-type", "x-patreon-event"):
        if event.headers.get(header):
            return event.headers[header]
    return event.kind


def _row(event: InboxEvent) -> dict[str, Any]:
    return {"event": event, "type": event_type(event), "help": OUTCOME_HELP.get(event.outcome.outcome, "")}


@router.get(f"{BASE}/events")
def events_list(
    console: Annotated[ConsoleContext, Depends(console_page)],
    outcome: str = "",
    source: str = "",
    cursor: str = "",
    before_ms: str = "",
) -> Response:
    """Newest events first; ``outcome`` and ``source`` filter, ``cursor`` pages back (``before_ms`` is its
    old name, kept for old links)."""
    chosen = Outcome(outcome) if outcome in {o.value for o in Outcome} else None
    chosen_source = source if source in SOURCES else None
    before = cursor_ms(cursor or before_ms, field="cursor")  # InvalidInput: a 400 page (ConsoleRoute)
    inbox = console.state.inbox
    events = inbox.recent(outcome=chosen, source=chosen_source, limit=PAGE_SIZE + 1, before_ms=before)
    more = len(events) > PAGE_SIZE
    events = events[:PAGE_SIZE]
    older = int(events[-1].received_at * 1000) if more and events else None
    return console.render(
        "events.html",
        active="events",
        rows=[_row(event) for event in events],
        total=inbox.count(chosen),
        outcomes=[o.value for o in Outcome],
        sources=SOURCES,
        outcome=chosen.value if chosen else "",
        source=chosen_source or "",
        paged=before is not None,
        older=older,
        reprocessable=REPROCESSABLE,
    )


@router.get(f"{BASE}/events/{{event_id}}")
def event_page(event_id: str, console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    """One event: what came in, what handling did, the raw body; a Re-process button when it can help."""
    event = console.state.inbox.get(event_id) if EVENT_ID.fullmatch(event_id) else None
    if event is None:
        return console.render(
            "not_found.html",
            active="events",
            status_code=404,
            what="event",
            hint="It may be mistyped, or older than EVENT_RETENTION_S.",
        )
    body, is_json = pretty_body(event.body)
    return console.render(
        "event.html",
        active="events",
        event=event,
        event_type=event_type(event),
        help=OUTCOME_HELP.get(event.outcome.outcome, ""),
        body=body,
        body_is_json=is_json,
        can_reprocess=event.outcome.outcome in REPROCESSABLE,
    )


@router.post(f"{BASE}/events/{{event_id}}/reprocess")
async def reprocess_event(event_id: str, form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    """Handle the stored event again (``admin.reprocess``) and come back to its page with the result."""
    console = form.console
    if not EVENT_ID.fullmatch(event_id):
        return console.render("not_found.html", active="events", status_code=404, what="event", hint="")
    try:
        outcome = await reprocess(console.state, event_id)
    except NothingToReprocess as exc:
        text, kind, result = str(exc), "error", "refused"
    except ReprocessRefused as exc:
        text, kind, result = str(exc), "error", "refused"
    except ActionUnconfirmed as exc:  # the "could not be confirmed" page (ConsoleRoute), after the audit
        await run_in_threadpool(console.audit, "reprocess", event_id, "not confirmed", exc.message)
        raise
    else:
        found = len(outcome.granted) + len(outcome.parked)
        text = f"Re-processed: {outcome.outcome.value}" + (f", {found} grant(s)" if found else "")
        reason = outcome.error or outcome.ignored
        text += f" ({reason})" if reason else "."
        kind, result = "ok", outcome.outcome.value
    await run_in_threadpool(console.audit, "reprocess", event_id, result, text)
    await run_in_threadpool(console.flash, text, kind)
    return see_other(f"{BASE}/events/{event_id}")
