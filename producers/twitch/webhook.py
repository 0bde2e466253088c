"""``POST /webhooks/twitch``: the Twitch EventSub webhook receiver.

Order of work, and why:

1. No secret configured → 503 (nothing can be verified).
2. The body is read once, capped at ``MAX_BODY_BYTES`` (413 beyond it, by
   ``Content-Length`` or by the bytes actually read).
3. The signature over those raw bytes and the timestamp's freshness are
   checked (``twitch_signature``) → 403. Nothing touches Redis before this.
4. The message type comes from the signed body (a challenge, an event, or
   neither: a revocation); a ``Twitch-Eventsub-Message-Type`` header that
   says otherwise was altered → 400, nothing kept (``_message_type``).
5. ``webhook_callback_verification`` → 200 ``text/plain`` with the challenge.
6. Anything else is handled, then kept in the event inbox with its outcome
   (``producers.inbox``, one atomic step) and answered as JSON with 200:
   ``{"event_id", "outcome", "granted": [...], "parked": [...], "ignored", "error"}``.
   A notification's grants are durably queued (or parked) with the message id
   marked seen in the same step; a revocation is recorded, one Sentry warning
   per message; a signed message the rules cannot read is ``unusable``:
   answered 200 all the same (Twitch would revoke a subscription that keeps
   failing), counted, reported to Sentry once, and re-processable
   (``wetbot-rewards events reprocess``).

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
from collections.abc import Awaitable
from typing import Any, cast

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from config.rewards import ChannelPointsRedemptionRule, TwitchSection
from producers.counters import count_event, count_event_async
from producers.inbox import EventOutcome, Outcome, grants_outcome
from producers.request_body import read_capped_body
from producers.settle import record_event
from producers.state import AppState, app_state
from producers.submit import planned_for_identity, self_link_and_release
from producers.twitch.broadcaster_api import TwitchUser
from producers.twitch.gaps import record_gap
from producers.twitch.helix import Subscription
from producers.twitch.logins import LinkNames
from producers.twitch.rules import NO_REWARD_IDS, MalformedEvent, Plan, plan_notification
from producers.twitch.signature import HEADER_MESSAGE_TYPE, SignatureRejected, verify
from producers.twitch.subscription_status import SubscriptionStatusBook
from worker.keys import SEEN_TTL_S
from worker.observability import capture

__all__ = [
    "MAX_BODY_BYTES",
    "REDEMPTION_TYPE",
    "SEEN_MESSAGE",
    "SEEN_REVOCATION_STATE",
    "handle_message",
    "parse_body",
    "refunds",
    "router",
]

logger = logging.getLogger("wetbot_rewards.twitch")

#: Largest body accepted, in bytes (1 MiB). EventSub bodies are a few KiB.
MAX_BODY_BYTES = 1 << 20
#: ``keys.seen`` source of handled notification message ids.
SEEN_MESSAGE = "twitch-message"
#: ``keys.seen`` source of handled revocation message ids (apart from notifications', see ``_record_revocation``).
SEEN_REVOCATION_MESSAGE = "twitch-revocation-message"
#: Message types (``Twitch-Eventsub-Message-Type``).
NOTIFICATION = "notification"
REVOCATION = "revocation"
VERIFICATION = "webhook_callback_verification"
KNOWN_TYPES = frozenset({NOTIFICATION, REVOCATION, VERIFICATION})
#: The subscription type whose rules may name a reward by title (resolved by ``producers.twitch.reward_catalogue``).
REDEMPTION_TYPE = "channel.channel_points_custom_reward_redemption.add"
#: ``keys.source_state`` source of the last revocation per subscription type.
SEEN_REVOCATION_STATE = "twitch-revocation"
#: Subscription types that may appear in counter names and Sentry tags as they are.
_PLAIN_TYPE = re.compile(r"[a-z0-9_.]{1,60}")

router = APIRouter()


@router.post("/webhooks/twitch", status_code=status.HTTP_200_OK)
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

    payload = parse_body(body)
    message_type = _message_type(request.headers.get(HEADER_MESSAGE_TYPE, ""), payload)
    if message_type == VERIFICATION and isinstance(payload, dict):
        challenge = payload.get("challenge")
        if isinstance(challenge, str):
            subscription = payload.get("subscription")
            shown = _plain_type(str(subscription.get("type", ""))) if isinstance(subscription, dict) else "other"
            logger.info("twitch subscription verified: %s", shown)
            # The challenge alone, as text/plain: Twitch rejects it wrapped in JSON (docs/twitch.md §1.4).
            return Response(challenge, media_type="text/plain")
    outcome = await handle_message(state, message.message_id, message_type, payload)
    kept = await record_event(state, "twitch", message_type, message.message_id, request.headers, body, outcome)
    return JSONResponse({"event_id": kept.id, **outcome.detail()})


async def handle_message(
    state: AppState, message_id: str, message_type: str, payload: Any, *, check_seen: bool = True
) -> EventOutcome:
    """What one verified message asks for, carried out (also ``admin.reprocess``'s and the catch-up poll's
    way in, ``producers.twitch.catchup``).

    A message the rules cannot read is an ``unusable`` outcome, not an error:
    it is kept in the inbox and answered 2xx (see ``producers.inbox``).
    ``check_seen`` false: the message's "seen" marker is neither asked nor set
    (re-processing a message that granted nothing, whose marker was set when
    it was ignored; a catch-up, which is no delivery); the idempotency keys,
    built from the redemption's own id, alone keep it to one grant per rule.
    The grants of a redemption of one of our rewards (``Keys.twitch_own_rewards``)
    are watched, so Twitch is told their fate (``producers.twitch.redemptions``).
    Raises only storage errors (RedisError, BrokerError): nothing was promised, the caller answers 503.
    """
    try:
        if not isinstance(payload, dict):
            raise MalformedEvent("body: not a JSON object")
        subscription = _object(payload, "subscription")
        subscription_type = subscription.get("type")
        if not isinstance(subscription_type, str):
            raise MalformedEvent("subscription.type: must be a string")
        if message_type == REVOCATION:
            shown = await run_in_threadpool(_record_revocation, state, message_id, subscription, subscription_type)
            return EventOutcome(Outcome.REVOCATION, notes=(f"{shown} subscription revoked",))
        if message_type == VERIFICATION:
            raise MalformedEvent("challenge: must be a string")
        if message_type != NOTIFICATION:
            # Twitch's own example answers 2xx to message types it does not know.
            logger.info("twitch message of unknown type ignored")
            return EventOutcome(Outcome.IGNORED, ignored="unknown message type")
        event = _object(payload, "event")
        try:
            reward_ids = NO_REWARD_IDS
            if subscription_type == REDEMPTION_TYPE and state.rewards.twitch.reward_titles():
                reward_ids = await state.reward_ids.get(state.aredis, state.keys)  # a renamed reward keeps its id
            plan = plan_notification(state.rewards.twitch, subscription_type, event, message_id, reward_ids)
        except MalformedEvent as exc:
            raise MalformedEvent(f"event.{exc}") from None
    except MalformedEvent as exc:
        logger.warning("twitch %s message %s unusable: %s", message_type, message_id, exc)
        return EventOutcome(Outcome.UNUSABLE, error=str(exc))
    outcome = await _carry_out(state, message_id, subscription_type, plan, check_seen=check_seen)
    if subscription_type == REDEMPTION_TYPE and (outcome.granted or outcome.parked):
        await _watch_if_ours(state, event, plan, outcome)
    return outcome


# -- reading --------------------------------------------------------------------------------


def parse_body(body: bytes) -> Any:
    """The body's JSON, or None when it is not JSON (a signed body that is not JSON is unusable, not refused)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
        return None


def _message_type(header: str, payload: Any) -> str:
    """The message type, from the signed body; the unsigned header must agree with it.

    Only the message id, timestamp and body are signed. Whoever replays a
    captured notification can change the header: a cheer resent as
    ``revocation`` was recorded as one and marked seen, so the genuine
    notification then granted nothing. The body tells the three kinds apart
    (a challenge, an event, or neither), so the header is only checked.
    A type Twitch may add later (unknown to us) keeps the header's word.
    """
    derived = _body_type(payload)
    if header and header not in KNOWN_TYPES:
        return header[:60]
    if header and derived is not None and header != derived:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"{HEADER_MESSAGE_TYPE}: says {header} but the signed body is a {derived}",
        )
    if derived is None and not header:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"missing {HEADER_MESSAGE_TYPE} header")
    return derived or header


def _body_type(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    if "challenge" in payload:
        return VERIFICATION
    if "event" in payload:
        return NOTIFICATION
    if isinstance(payload.get("subscription"), dict):
        return REVOCATION
    return None


def _object(payload: dict[str, Any], field: str) -> dict[str, Any]:
    value = payload.get(field)
    if not isinstance(value, dict):
        raise MalformedEvent(f"{field}: must be an object")
    return value


def _plain_type(subscription_type: str) -> str:
    """The type if it is safe in counter names, tags and logs; else ``other``."""
    return subscription_type if _PLAIN_TYPE.fullmatch(subscription_type) else "other"


# -- acting ---------------------------------------------------------------------------------------


async def _carry_out(
    state: AppState, message_id: str, subscription_type: str, plan: Plan, *, check_seen: bool = True
) -> EventOutcome:
    """Links, then grants (queued or parked) with the seen marker and counter in one atomic step.

    The common case is one script call on the asyncio Redis client, shared
    with concurrent notifications (``creation_batcher``): no thread hop.
    Link rewards (rare) write their link first, through the synchronous path,
    so the redemption's own grant already goes to the linked user.
    """
    shown = _plain_type(subscription_type)
    seen = state.keys.seen(SEEN_MESSAGE, message_id) if check_seen else ""
    notes: tuple[str, ...] = ()
    if plan.links:
        if seen and await state.aredis.exists(seen):
            await count_event_async(state.aredis, state.keys, "twitch.duplicate")
            return EventOutcome(Outcome.DUPLICATE)
        notes = tuple(await run_in_threadpool(_make_links, state, plan))
    outcome = "granted" if plan.grants else "ignored"
    batch = await state.creator.create(
        [planned_for_identity(state.links, planned.to_new_grant(message_id)) for planned in plan.grants],
        seen_key=seen,
        counter=f"twitch.{shown}.{outcome}",
    )
    if batch.seen:
        await count_event_async(state.aredis, state.keys, "twitch.duplicate")
        return EventOutcome(Outcome.DUPLICATE)
    for why in plan.skipped:
        logger.debug("twitch %s %s: rule skipped: %s", shown, message_id, why)
    if not plan.grants:
        return EventOutcome(Outcome.IGNORED, ignored="; ".join(plan.skipped) or f"no rule for {shown}", notes=notes)
    created = sum(result.created for result in batch.results)
    logger.info("twitch %s %s: %d grant(s), %d new", shown, message_id, len(plan.grants), created)
    return grants_outcome([result.grant for result in batch.results], notes=notes)


async def _watch_if_ours(state: AppState, event: dict[str, Any], plan: Plan, outcome: EventOutcome) -> None:
    """Watch the redemption's grants when its reward is one our client id manages (only those can be
    fulfilled or refunded, docs/sources-sync.md §1.1); another app's reward is left alone."""
    reward = event.get("reward")
    reward_id = reward.get("id") if isinstance(reward, dict) else None
    redemption_id, broadcaster_id = event.get("id"), event.get("broadcaster_user_id")
    if not (isinstance(reward_id, str) and isinstance(redemption_id, str) and isinstance(broadcaster_id, str)):
        return
    if not await cast(Awaitable[int], state.aredis.sismember(state.keys.twitch_own_rewards(), reward_id)):
        return
    await run_in_threadpool(
        state.redemptions.watch,
        redemption_id,
        broadcaster_id=broadcaster_id,
        reward_id=reward_id,
        refund=refunds(state.rewards.twitch, plan),
        grant_ids=(*outcome.granted, *outcome.parked),
    )


def refunds(section: TwitchSection, plan: Plan) -> bool:
    """Whether a redemption that earned ``plan`` is refunded should its grants fail: unless one of the rules
    that matched says ``refund = false`` (one redemption has one fate, so the stricter rule wins)."""
    matched = {planned.rule_id for planned in plan.grants}
    return all(
        rule.refund
        for rule in section.rules_for(REDEMPTION_TYPE)
        if isinstance(rule, ChannelPointsRedemptionRule) and rule.rule_id in matched
    )


def _make_links(state: AppState, plan: Plan) -> list[str]:
    """Link rewards: link each viewer to the Discord id they typed (and queue what was parked for them).

    Self-made links only (``LinkStore.add_self``): one that would replace another link, or pass
    ``max_twitch_accounts``, is refused, logged and counted; the redemption's grant then follows the
    viewer's existing link, or is parked. Returns a line per link request, for the answer and the inbox.
    """
    notes: list[str] = []
    for link in plan.links:
        if link.discord_user_id is None:
            logger.info(
                "twitch user %s redeemed a link reward (%s) without a Discord id as input; no link made",
                link.twitch_user_id,
                link.rule_id,
            )
            count_event(state.redis, state.keys, "twitch.link_reward.invalid_input")
            notes.append(f"link reward {link.rule_id}: the input is not a Discord id; no link made")
            continue
        outcome, released = self_link_and_release(
            state.ledger,
            state.links,
            "twitch",
            link.twitch_user_id,
            link.discord_user_id,
            max_accounts=state.rewards.twitch.max_twitch_accounts,
        )
        if outcome.refused:
            logger.warning(
                "twitch user %s redeemed a link reward (%s) for Discord user %s; not linked: %s",
                link.twitch_user_id,
                link.rule_id,
                link.discord_user_id,
                outcome.why,
            )
            count_event(state.redis, state.keys, f"twitch.link_reward.refused.{outcome.value}")
            notes.append(f"link reward {link.rule_id}: not linked: {outcome.why}")
            continue
        _remember_names(state, plan, link.twitch_user_id)
        logger.info(
            "twitch user %s linked to Discord user %s by redemption; %d parked grant(s) queued",
            link.twitch_user_id,
            link.discord_user_id,
            len(released),
        )
        notes.append(f"linked Twitch user {link.twitch_user_id} to Discord user {link.discord_user_id}")
    return notes


def _remember_names(state: AppState, plan: Plan, twitch_user_id: str) -> None:
    """Keep the login and display name the event gave for a viewer it linked (the console shows them)."""
    names = next((g.names for g in plan.grants if g.twitch_user_id == twitch_user_id and g.names), ())
    if names:
        LinkNames(state.redis, state.keys).remember("twitch", TwitchUser(twitch_user_id, names[0], names[-1]))


def _record_revocation(state: AppState, message_id: str, subscription: dict[str, Any], subscription_type: str) -> str:
    """Remember the revocation and warn once per message: that event type's rewards stop until re-subscribed.
    A webhook subscription's revocation is a gap (``producers.twitch.gaps.record_gap``).

    Revocations have their own "seen" markers: a notification's id must never be
    marked handled by anything but its grants. Returns the type as shown.
    """
    shown = _plain_type(subscription_type)
    seen = state.keys.seen(SEEN_REVOCATION_MESSAGE, message_id)
    if state.redis.exists(seen):
        return shown
    reason = str(subscription.get("status", ""))[:100]
    state.redis.hset(
        state.keys.source_state(SEEN_REVOCATION_STATE, shown),
        mapping={
            "status": reason,
            "subscription_id": str(subscription.get("id", ""))[:100],
            "version": str(subscription.get("version", ""))[:20],
            "message_id": message_id,
            "at": repr(time.time()),
        },
    )
    if not state.redis.set(seen, "1", nx=True, ex=SEEN_TTL_S):
        return shown  # a concurrent delivery of the same message warned already
    count_event(state.redis, state.keys, "twitch.revocation")
    text = (
        f"Twitch revoked the EventSub subscription for {shown} ({reason}): its rewards stop until "
        "it is created again (the Twitch process's next subscription sweep, or wetbot-rewards twitch subscribe)"
    )
    logger.warning("%s", text)
    capture(text, level="warning", tags={"kind": "twitch-revocation", "state": shown, "reason": reason or "unknown"})
    transport = subscription.get("transport")
    if not (isinstance(transport, dict) and transport.get("method") == "websocket"):
        # A WebSocket session's revocation is the Twitch process's own gap (``eventsub_ws``), recorded there
        # once the subscription is back; a webhook's reaches only this process: recorded here, and the Twitch
        # process sweeps and catches up soon (``producers.twitch.gaps``).
        SubscriptionStatusBook(state.redis, state.keys).set_status(Subscription.from_json(subscription))
        record_gap(
            state.redis,
            state.keys,
            f"the {shown} subscription was revoked ({reason or 'no reason given'}); created again at the next "
            "subscription sweep",
            time.time(),
        )
    return shown
