"""``POST /webhooks/patreon``: verify, parse, decide, queue; 204 only once the grants are durably queued.

Answers (README "HTTP"): 503 without ``PATREON_WEBHOOK_SECRET``; 413 over
``MAX_BODY_BYTES``; 403 for a missing or wrong ``X-Patreon-Signature``; 400 for
a malformed body or a missing ``X-Patreon-Event``; 204 for everything
authentic, including events no rule wants (counted) and the portal's "Send
Test" payload (logged, never granted). A Redis or broker failure is a 503
(``wetbot_rewards.app``), so Patreon retries and the same idempotency keys apply.

The signature is the hex HMAC-MD5 of the *raw* body with the webhook's own
secret (docs/patreon.md §1): the body is read once, verified, and those
same bytes are parsed. Re-serialised JSON would not match.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from producers.counters import count_event_async
from producers.inbox import EventOutcome, grants_outcome
from producers.inbox import Outcome as EventOutcomeKind
from producers.patreon.events import MEMBER_TRIGGERS, MalformedEvent, NotAMemberEvent, parse_event
from producers.patreon.members import MemberEventResult, handle_event
from producers.request_body import read_capped_body
from producers.settle import record_event
from producers.state import AppState, app_state

__all__ = ["MAX_BODY_BYTES", "handle_delivery", "router", "signature"]

logger = logging.getLogger("wetbot_rewards.patreon")

#: Largest body accepted, in bytes. Real bodies reach 17.6 KB (docs/patreon.md §6.7); a member
#: with many tiers and a long "about" stays far below this, and it bounds memory per request.
MAX_BODY_BYTES = 4 * 1024 * 1024

router = APIRouter()


def signature(secret: str, body: bytes) -> str:
    """``X-Patreon-Signature`` for ``body``: hex HMAC-MD5 keyed with the webhook secret (UTF-8)."""
    return hmac.new(secret.encode(), body, hashlib.md5).hexdigest()


@router.post("/webhooks/patreon", status_code=status.HTTP_200_OK)
async def receive(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Response:
    """One Patreon delivery; see the module docstring for the answers."""
    secret = state.settings.patreon_webhook_secret
    if secret is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "PATREON_WEBHOOK_SECRET is not set on this server")
    body = await read_capped_body(request, MAX_BODY_BYTES)
    expected = signature(secret.get_secret_value(), body)
    provided = request.headers.get("x-patreon-signature", "").strip().lower()
    if not hmac.compare_digest(expected.encode(), provided.encode("latin-1", "replace")):
        # Nothing derived from the computed digest or the secret: a prefix of the right answer helps whoever
        # is guessing it. The received prefix is the caller's own text, enough to tell deliveries apart.
        logger.warning("patreon: bad signature (received %s..., %d bytes)", provided[:8] or "nothing", len(body))
        await _count(state, "patreon.rejected")
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-Patreon-Signature")

    trigger = request.headers.get("x-patreon-event", "").strip()
    ref = hashlib.sha256(trigger.encode("utf-8", "surrogateescape") + b"\n" + body).hexdigest()
    outcome = await handle_delivery(state, trigger, body)
    kept = await record_event(state, "patreon", trigger or "(no trigger)", ref, request.headers, body, outcome)
    return JSONResponse({"event_id": kept.id, **outcome.detail()})


async def handle_delivery(state: AppState, trigger: str, body: bytes) -> EventOutcome:
    """What one verified delivery asks for, carried out (also ``admin.reprocess``'s way in).

    A body the rules cannot read is an ``unusable`` outcome, kept and answered
    2xx: Patreon pauses the whole webhook after repeated failures.
    Raises only storage errors (a 503: nothing was promised).
    """
    label = trigger if trigger in MEMBER_TRIGGERS else "other"
    try:
        if not trigger:
            raise MalformedEvent("X-Patreon-Event: header missing")
        event = parse_event(trigger, body)
    except MalformedEvent as exc:
        logger.warning("patreon: malformed %s delivery: %s", label, exc)
        await _count(state, "patreon.malformed")
        return EventOutcome(EventOutcomeKind.UNUSABLE, error=str(exc))
    except NotAMemberEvent:
        logger.info("patreon: %s delivery carries no member; ignored", label)
        await _count(state, f"patreon.{label}.ignored")
        return EventOutcome(EventOutcomeKind.IGNORED, ignored=f"{label}: not a member event")
    if event.is_test:
        logger.info("patreon: portal test delivery (%s) received and verified; nothing granted", trigger)
        await _count(state, "patreon.test")
        return EventOutcome(EventOutcomeKind.TEST, ignored="the portal's test payload is never granted")

    plan, outcome = await run_in_threadpool(handle_event, state, event)
    kind = _kind(plan.acts, outcome)
    logger.info(
        "patreon: %s member %s: %d granted, %d already granted, %d revoked, %d cancelled, %d held, %d released, "
        "%d take-back(s) left to an operator%s",
        trigger,
        event.member_id,
        outcome.granted,
        outcome.duplicates,
        outcome.revoked,
        outcome.cancelled,
        outcome.held,
        outcome.released,
        len(outcome.left_to_operator),
        f" ({'; '.join(plan.notes)})" if plan.notes else "",
    )
    await _count(state, f"patreon.{label}.{kind}")
    return _event_outcome(plan.notes, outcome)


def _event_outcome(notes: list[str], outcome: MemberEventResult) -> EventOutcome:
    """The inbox outcome of a handled member event: its grants, or why there were none."""
    facts = tuple(
        f"{count} {what}"
        for count, what in (
            (outcome.revoked, "taken back"),
            (outcome.cancelled, "cancelled before sending"),
            (outcome.held, "held until a later charge"),
            (outcome.released, "holds used"),
            (len(outcome.left_to_operator), "take-backs left to an operator"),
        )
        if count
    )
    if outcome.grants:
        return grants_outcome(outcome.grants, notes=facts)
    if outcome.duplicates:
        return EventOutcome(EventOutcomeKind.DUPLICATE, notes=facts)
    return EventOutcome(EventOutcomeKind.IGNORED, ignored="; ".join(notes) or "no rule asks for it", notes=facts)


def _kind(acts: bool, outcome: MemberEventResult) -> str:
    """The counter suffix of a handled member event."""
    if outcome.granted or outcome.revoked or outcome.cancelled:
        return "granted"
    if outcome.held or outcome.released:
        return "held"
    if outcome.duplicates:
        return "duplicate"
    return "handled" if acts else "ignored"


async def _count(state: AppState, name: str) -> None:
    await count_event_async(state.aredis, state.keys, name)
