"""``POST /webhooks/patreon``: verify, parse, decide, queue; 204 only once the grants are durably queued.

Answers (INTERFACE.md): 503 without ``PATREON_WEBHOOK_SECRET``; 413 over
``MAX_BODY_BYTES``; 403 for a missing or wrong ``X-Patreon-Signature``; 400 for
a malformed body or a missing ``X-Patreon-Event``; 204 for everything
authentic, including events no rule wants (counted) and the portal's "Send
Test" payload (logged, never granted). A Redis or broker failure is a 503
(``producers.app``), so Patreon retries and the same idempotency keys apply.

The signature is the hex HMAC-MD5 of the *raw* body with the webhook's own
secret (research/patreon.md §1): the body is read once, verified, and those
same bytes are parsed. Re-serialised JSON would not match.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from producers.counters import count_event_async
from producers.patreon.events import MEMBER_TRIGGERS, MalformedEvent, NotAMemberEvent, parse_event
from producers.patreon.members import Outcome, handle_event
from producers.request_body import read_capped_body
from producers.state import AppState, app_state

__all__ = ["MAX_BODY_BYTES", "router", "signature"]

logger = logging.getLogger("wetbot_rewards.patreon")

#: Largest body accepted, in bytes. Real bodies reach 17.6 KB (research/patreon.md §6.7); a member
#: with many tiers and a long "about" stays far below this, and it bounds memory per request.
MAX_BODY_BYTES = 4 * 1024 * 1024

router = APIRouter()


def signature(secret: str, body: bytes) -> str:
    """``X-Patreon-Signature`` for ``body``: hex HMAC-MD5 keyed with the webhook secret (UTF-8)."""
    return hmac.new(secret.encode(), body, hashlib.md5).hexdigest()


@router.post("/webhooks/patreon", status_code=status.HTTP_204_NO_CONTENT)
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
        logger.warning(
            "patreon: bad signature (received %s..., %d bytes)", provided[:8] or "nothing", len(body)
        )  # fmt: skip
        await _count(state, "patreon.rejected")
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-Patreon-Signature")

    trigger = request.headers.get("x-patreon-event", "").strip()
    label = trigger if trigger in MEMBER_TRIGGERS else "other"
    try:
        if not trigger:
            raise MalformedEvent("X-Patreon-Event: header missing")
        event = parse_event(trigger, body)
    except MalformedEvent as exc:
        logger.warning("patreon: malformed %s delivery: %s", label, exc)
        await _count(state, "patreon.malformed")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except NotAMemberEvent:
        logger.info("patreon: %s delivery carries no member; ignored", label)
        await _count(state, f"patreon.{label}.ignored")
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    if event.is_test:
        logger.info("patreon: portal test delivery (%s) received and verified; nothing granted", trigger)
        await _count(state, "patreon.test")
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    plan, outcome = await run_in_threadpool(handle_event, state, event)
    kind = _kind(plan.acts, outcome)
    logger.info(
        "patreon: %s member %s: %d granted, %d already granted, %d revoked, %d cancelled, %d held, %d released, "
        "%d take-back(s) left to an operator%s",
        trigger, event.member_id, outcome.granted, outcome.duplicates, outcome.revoked, outcome.cancelled,
        outcome.held, outcome.released, len(outcome.left_to_operator),
        f" ({'; '.join(plan.notes)})" if plan.notes else "",
    )  # fmt: skip
    await _count(state, f"patreon.{label}.{kind}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _kind(acts: bool, outcome: Outcome) -> str:
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
