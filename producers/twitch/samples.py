"""Sample EventSub messages, modelled on Twitch's documented examples (docs/twitch.md §2), signed like Twitch.

Used by ``wetbot-rewards twitch send-test`` and by tests and benchmarks. Each
call gets a fresh message id and timestamp unless given, so a sample is never
mistaken for a redelivery.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from producers.twitch.signature import (
    HEADER_MESSAGE_ID,
    HEADER_MESSAGE_TYPE,
    HEADER_RETRY,
    HEADER_SIGNATURE,
    HEADER_SUBSCRIPTION_TYPE,
    HEADER_SUBSCRIPTION_VERSION,
    HEADER_TIMESTAMP,
    sign,
)

__all__ = [
    "SAMPLE_BROADCASTER_ID",
    "SAMPLE_REWARD_ID",
    "SAMPLE_REWARD_TITLE",
    "SAMPLE_TYPES",
    "sample_event",
    "sample_payload",
    "signed_request",
    "twitch_timestamp",
]

SAMPLE_BROADCASTER_ID = "1337"
#: The custom reward of the documented redemption sample (also in config/rewards.example.toml).
SAMPLE_REWARD_ID = "92af127c-7326-4483-a52b-b0da0be61c01"
#: Its title, as in Twitch's sample.
SAMPLE_REWARD_TITLE = "title"

#: Subscription type -> version used by the samples (and by ``twitch subscribe``).
SAMPLE_TYPES: dict[str, str] = {
    "channel.subscribe": "1",
    "channel.subscription.gift": "1",
    "channel.subscription.message": "1",
    "channel.cheer": "1",
    "channel.channel_points_custom_reward_redemption.add": "1",
    "channel.follow": "2",
    "channel.raid": "1",
}


def twitch_timestamp(epoch: float | None = None) -> str:
    """RFC 3339 in UTC with nanosecond digits, as Twitch writes it (``2019-11-16T10:11:12.634234626Z``)."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _user(user_id: str, login: str) -> dict[str, str]:
    return {"user_id": user_id, "user_login": login, "user_name": login.title()}


def _broadcaster(broadcaster_id: str) -> dict[str, str]:
    return {
        "broadcaster_user_id": broadcaster_id,
        "broadcaster_user_login": "cooler_user",
        "broadcaster_user_name": "Cooler_User",
    }


def sample_event(
    subscription_type: str,
    *,
    user_id: str | None = None,
    broadcaster_id: str = SAMPLE_BROADCASTER_ID,
    reward_id: str = SAMPLE_REWARD_ID,
    reward_title: str = SAMPLE_REWARD_TITLE,
    user_input: str = "pogchamp",
    **overrides: Any,
) -> dict[str, Any]:
    """The ``event`` object of a documented sample; ``overrides`` replace top-level fields.

    Raises:
      KeyError: ``subscription_type`` is not one of ``SAMPLE_TYPES``.
    """
    user = user_id or "1234"
    base = _broadcaster(broadcaster_id)
    events: dict[str, dict[str, Any]] = {
        "channel.subscribe": {**_user(user, "cool_user"), **base, "tier": "1000", "is_gift": False},
        "channel.subscription.gift": {
            **_user(user, "cool_user"),
            **base,
            "total": 2,
            "tier": "1000",
            "cumulative_total": 284,
            "is_anonymous": False,
        },
        "channel.subscription.message": {
            **_user(user, "cool_user"),
            **base,
            "tier": "1000",
            "message": {"text": "Love the stream! FevziGG", "emotes": [{"begin": 23, "end": 30, "id": "302976485"}]},
            "cumulative_months": 15,
            "streak_months": 1,
            "duration_months": 6,
        },
        "channel.cheer": {
            "is_anonymous": False,
            **_user(user, "cool_user"),
            **base,
            "message": "pogchamp",
            "bits": 1000,
        },
        "channel.channel_points_custom_reward_redemption.add": {
            "id": str(uuid.uuid4()),
            **base,
            **_user(user, "cooler_user"),
            "user_input": user_input,
            "status": "unfulfilled",
            "reward": {"id": reward_id, "title": reward_title, "cost": 100, "prompt": "reward prompt"},
            "redeemed_at": twitch_timestamp(),
        },
        "channel.follow": {**_user(user, "cool_user"), **base, "followed_at": twitch_timestamp()},
        "channel.raid": {
            "from_broadcaster_user_id": user,
            "from_broadcaster_user_login": "cool_user",
            "from_broadcaster_user_name": "Cool_User",
            "to_broadcaster_user_id": broadcaster_id,
            "to_broadcaster_user_login": "cooler_user",
            "to_broadcaster_user_name": "Cooler_User",
            "viewers": 9001,
        },
    }
    return {**events[subscription_type], **overrides}


def _condition(subscription_type: str, broadcaster_id: str, event: dict[str, Any]) -> dict[str, str]:
    if subscription_type == "channel.raid":
        return {"to_broadcaster_user_id": broadcaster_id}
    if subscription_type == "channel.follow":
        return {"broadcaster_user_id": broadcaster_id, "moderator_user_id": broadcaster_id}
    if subscription_type == "channel.channel_points_custom_reward_redemption.add":
        return {"broadcaster_user_id": broadcaster_id, "reward_id": str(event.get("reward", {}).get("id", ""))}
    return {"broadcaster_user_id": broadcaster_id}


def sample_payload(
    subscription_type: str,
    event: dict[str, Any] | None = None,
    *,
    message_type: str = "notification",
    broadcaster_id: str = SAMPLE_BROADCASTER_ID,
) -> dict[str, Any]:
    """A whole body: ``{subscription, event}``, ``{challenge, subscription}`` or ``{subscription}`` (revocation)."""
    event = sample_event(subscription_type, broadcaster_id=broadcaster_id) if event is None else event
    status = {
        "notification": "enabled",
        "webhook_callback_verification": "webhook_callback_verification_pending",
        "revocation": "authorization_revoked",
    }.get(message_type, "enabled")
    subscription = {
        "id": str(uuid.uuid4()),
        "type": subscription_type,
        "version": SAMPLE_TYPES.get(subscription_type, "1"),
        "status": status,
        "cost": 0,
        "condition": _condition(subscription_type, broadcaster_id, event),
        "transport": {"method": "webhook", "callback": "https://example.com/webhooks/twitch"},
        "created_at": twitch_timestamp(),
    }
    if message_type == "webhook_callback_verification":
        return {"challenge": f"challenge-{uuid.uuid4()}", "subscription": subscription}
    if message_type == "revocation":
        return {"subscription": subscription}
    return {"subscription": subscription, "event": event}


def signed_request(
    secret: str,
    payload: dict[str, Any] | bytes,
    *,
    message_type: str = "notification",
    message_id: str | None = None,
    timestamp: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body bytes and the headers Twitch would send with them, signed with ``secret``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    message_id = message_id or str(uuid.uuid4())
    timestamp = timestamp or twitch_timestamp()
    subscription: dict[str, Any] = {}
    if isinstance(payload, dict) and isinstance(payload.get("subscription"), dict):
        subscription = payload["subscription"]
    headers = {
        "Content-Type": "application/json",
        HEADER_MESSAGE_ID: message_id,
        HEADER_RETRY: "0",
        HEADER_MESSAGE_TYPE: message_type,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(secret, message_id, timestamp, body),
        HEADER_SUBSCRIPTION_TYPE: str(subscription.get("type", "")),
        HEADER_SUBSCRIPTION_VERSION: str(subscription.get("version", "")),
    }
    return body, headers
