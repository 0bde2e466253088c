"""``POST /webhooks/twitch``: the Twitch EventSub webhook receiver.

Order of work, and why:

1. No secret configured → 503 (nothing can be verified).
2. The body is read once, capped at ``MAX_BODY_BYTES`` (413 beyond it, by
   ``Content-Length`` or by the bytes actually read).
3. The signature over those raw bytes and the timestamp's freshness are
   checked (``twitch_signature``) → 403. Nothing touches Redis before this.
4. The same bytes are parsed → 400 when they are not the JSON shape the
   message type promises.
5. ``webhook_callback_verification`` → 200 ``text/plain`` with the challenge;
   ``revocation`` → recorded, one Sentry warning per message, 204;
   ``notification`` → the rules' grants are durably queued (or parked) and
   only then is the message id marked seen and 204 returned.

Grants are created on the asyncio Redis client (``creation_batcher``); the
rare link rewards and revocations use the synchronous client in the
threadpool. A Redis or broker error propagates to the app's handler, which
answers 503: nothing was acknowledged, so Twitch retries, and the
deterministic idempotency keys make the retry create only what is still
missing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from producers.counters import count_event, count_event_async
from producers.request_body import read_capped_body
from producers.state import AppState, app_state
from producers.submit import planned_for_identity, self_link_and_release
from producers.twitch.rules import MalformedEvent, Plan, plan_notification
from producers.twitch.signature import HEADER_MESSAGE_TYPE, SignatureRejected, VerifiedMessage, verify
from worker.keys import SEEN_TTL_S
from worker.observability import capture

__all__ = ["MAX_BODY_BYTES", "SEEN_MESSAGE", "SEEN_REVOCATION_STATE", "router"]

logger = logging.getLogger("wetbot_rewards.twitch")

#: Largest body accepted, in bytes (1 MiB). EventSub bodies are a few KiB.
MAX_BODY_BYTES = 1 << 20
#: ``keys.seen`` source of handled message ids (notifications and revocations).
SEEN_MESSAGE = "twitch-message"
#: ``keys.source_state`` source of the last revocation per subscription type.
SEEN_REVOCATION_STATE = "twitch-revocation"
#: Subscription types that may appear in counter names and Sentry tags as they are.
_PLAIN_TYPE = re.compile(r"[a-z0-9_.]{1,60}")

router = APIRouter()


@router.post("/webhooks/twitch", status_code=status.HTTP_204_NO_CONTENT)
async def twitch_webhook(request: Request) -> Response:
    """Receive one EventSub message (see the module docstring for the answers)."""
    state = app_state(request)
    secret = state.settings.twitch_webhook_secret
    if secret is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "TWITCH_WEBHOOK_SECRET is not set on this server")
    body = await read_capped_body(request, MAX_BODY_BYTES)
    try:
        message = verify(secret.get_secret_value(), request.headers, body, now=time.time())
    except SignatureRejected as exc:
        logger.info("twitch webhook rejected: %s", exc.reason)
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from None

    message_type = request.headers.get(HEADER_MESSAGE_TYPE, "")
    payload = _parse(body)
    subscription = _object(payload, "subscription")
    subscription_type = subscription.get("type")
    if not isinstance(subscription_type, str):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "subscription.type: must be a string")

    if message_type == "webhook_callback_verification":
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "challenge: must be a string")
        logger.info("twitch subscription verified: %s", _plain_type(subscription_type))
        # The challenge alone, as text/plain: Twitch rejects it wrapped in JSON (research/twitch.md §1.4).
        return Response(challenge, media_type="text/plain")
    if message_type == "revocation":
        await run_in_threadpool(_record_revocation, state, message, subscription, subscription_type)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    if message_type == "notification":
        event = _object(payload, "event")
        try:
            plan = plan_notification(state.rewards.twitch, subscription_type, event, message.message_id)
        except MalformedEvent as exc:
            logger.warning(
                "twitch %s notification %s unusable: %s", _plain_type(subscription_type), message.message_id, exc
            )
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"event.{exc}") from None
        await _carry_out(state, message, subscription_type, plan)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    if not message_type:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "missing Twitch-Eventsub-Message-Type header")
    # Twitch's own example answers 2xx to message types it does not know.
    logger.info("twitch message of unknown type ignored")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- reading --------------------------------------------------------------------------------


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body is not JSON") from None
    if not isinstance(payload, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body is not a JSON object")
    return payload


def _object(payload: dict[str, Any], field: str) -> dict[str, Any]:
    value = payload.get(field)
    if not isinstance(value, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{field}: must be an object")
    return value


def _plain_type(subscription_type: str) -> str:
    """The type if it is safe in counter names, tags and logs; else ``other``."""
    return subscription_type if _PLAIN_TYPE.fullmatch(subscription_type) else "other"


# -- acting ---------------------------------------------------------------------------------------


async def _carry_out(state: AppState, message: VerifiedMessage, subscription_type: str, plan: Plan) -> None:
    """Links, then grants (queued or parked) with the seen marker and counter in one atomic step.

    The common case is one script call on the asyncio Redis client, shared
    with concurrent notifications (``creation_batcher``): no thread hop.
    Link rewards (rare) write their link first, through the synchronous path,
    so the redemption's own grant already goes to the linked user.
    """
    shown = _plain_type(subscription_type)
    seen = state.keys.seen(SEEN_MESSAGE, message.message_id)
    if plan.links:
        if await state.aredis.exists(seen):
            await count_event_async(state.aredis, state.keys, "twitch.duplicate")
            return
        await run_in_threadpool(_make_links, state, plan)
    outcome = "granted" if plan.grants else "ignored"
    batch = await state.creator.create(
        [planned_for_identity(state.links, planned.to_new_grant(message.message_id)) for planned in plan.grants],
        seen_key=seen,
        counter=f"twitch.{shown}.{outcome}",
    )
    if batch.seen:
        await count_event_async(state.aredis, state.keys, "twitch.duplicate")
        return
    for why in plan.skipped:
        logger.debug("twitch %s %s: rule skipped: %s", shown, message.message_id, why)
    if plan.grants:
        created = sum(result.created for result in batch.results)
        logger.info("twitch %s %s: %d grant(s), %d new", shown, message.message_id, len(plan.grants), created)


def _make_links(state: AppState, plan: Plan) -> None:
    """Link rewards: link each viewer to the Discord id they typed (and queue what was parked for them).

    Self-made links only (``LinkStore.add_self``): one that would replace another link, or pass
    ``max_twitch_accounts``, is refused, logged and counted; the redemption's grant then follows the
    viewer's existing link, or is parked.
    """
    for link in plan.links:
        if link.discord_user_id is None:
            logger.info(
                "twitch user %s redeemed a link reward (%s) without a Discord id as input; no link made",
                link.twitch_user_id,
                link.rule_id,
            )
            count_event(state.redis, state.keys, "twitch.link_reward.invalid_input")
            continue
        outcome, released = self_link_and_release(
            state.ledger, state.links, "twitch", link.twitch_user_id, link.discord_user_id,
            max_accounts=state.rewards.twitch.max_twitch_accounts,
        )  # fmt: skip
        if outcome.refused:
            logger.warning(
                "twitch user %s redeemed a link reward (%s) for Discord user %s; not linked: %s",
                link.twitch_user_id, link.rule_id, link.discord_user_id, outcome.why,
            )  # fmt: skip
            count_event(state.redis, state.keys, f"twitch.link_reward.refused.{outcome.value}")
            continue
        logger.info(
            "twitch user %s linked to Discord user %s by redemption; %d parked grant(s) queued",
            link.twitch_user_id,
            link.discord_user_id,
            len(released),
        )


def _record_revocation(
    state: AppState, message: VerifiedMessage, subscription: dict[str, Any], subscription_type: str
) -> None:
    """Remember the revocation and warn once per message: that event type's rewards stop until re-subscribed."""
    seen = state.keys.seen(SEEN_MESSAGE, message.message_id)
    if state.redis.exists(seen):
        return
    shown = _plain_type(subscription_type)
    reason = str(subscription.get("status", ""))[:100]
    state.redis.hset(
        state.keys.source_state(SEEN_REVOCATION_STATE, shown),
        mapping={
            "status": reason,
            "subscription_id": str(subscription.get("id", ""))[:100],
            "version": str(subscription.get("version", ""))[:20],
            "message_id": message.message_id,
            "at": repr(time.time()),
        },
    )
    if not state.redis.set(seen, "1", nx=True, ex=SEEN_TTL_S):
        return  # a concurrent delivery of the same message warned already
    count_event(state.redis, state.keys, "twitch.revocation")
    text = (
        f"Twitch revoked the EventSub subscription for {shown} ({reason}): its rewards stop until "
        "it is created again (wetbot-rewards twitch subscribe)"
    )
    logger.warning("%s", text)
    capture(text, level="warning", tags={"kind": "twitch-revocation", "state": shown, "reason": reason or "unknown"})
