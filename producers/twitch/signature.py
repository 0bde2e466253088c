"""Twitch EventSub webhook signatures and message freshness (docs/twitch.md §1.3, §1.5).

Twitch signs ``message id + timestamp + raw body`` with HMAC-SHA256 under the
subscription secret and sends ``sha256=<lowercase hex>``. The header strings
are used exactly as received and the body as the raw bytes: re-formatting the
timestamp or re-serialising the JSON would change what was signed.

Only the message id, the timestamp and the body are signed. Every other header
(message type, subscription type) can be altered by whoever replays a captured
request, so the receiver trusts the body over them wherever it can.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from config.errors import WetbotRewardsError

#: Prefix of the signature header value.
SIGNATURE_PREFIX = "sha256="
#: Seconds a message may be old: Twitch's replay guidance says "not older than 10 minutes".
MAX_AGE_S = 600.0
#: Seconds a timestamp may lie in the future (clock skew between Twitch and us).
MAX_FUTURE_S = 60.0
#: Longest message id accepted. Twitch's are UUIDs; the id becomes part of Redis keys.
MAX_MESSAGE_ID_LEN = 200

#: Header names, lower case (Starlette's header lookups are case-insensitive anyway).
HEADER_MESSAGE_ID = "twitch-eventsub-message-id"
HEADER_TIMESTAMP = "twitch-eventsub-message-timestamp"
HEADER_SIGNATURE = "twitch-eventsub-message-signature"
HEADER_MESSAGE_TYPE = "twitch-eventsub-message-type"
HEADER_RETRY = "twitch-eventsub-message-retry"
HEADER_SUBSCRIPTION_TYPE = "twitch-eventsub-subscription-type"
HEADER_SUBSCRIPTION_VERSION = "twitch-eventsub-subscription-version"


class SignatureRejected(WetbotRewardsError):
    """Raised when a request is not provably a fresh message from Twitch; ``reason`` says why (no secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedMessage:
    """The signed parts of an authentic, fresh message."""

    message_id: str
    #: The timestamp header exactly as received.
    timestamp: str
    #: Seconds since the epoch of ``timestamp``.
    sent_at: float


def sign(secret: str | bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """The signature header value Twitch would send: ``sha256=<hex HMAC-SHA256(secret, id + timestamp + body)>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, message_id.encode() + timestamp.encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def signature_matches(secret: str | bytes, message_id: str, timestamp: str, body: bytes, signature: str) -> bool:
    """True when ``signature`` is the right one, compared in constant time (bytes, so any input is safe)."""
    expected = sign(secret, message_id, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp with a zone (``Z`` or ``±hh:mm``).

    Twitch sends nanoseconds (``2019-11-16T10:11:12.634234626Z``), more than
    ``datetime`` holds, so the fraction is cut to microseconds first.

    Raises:
      ValueError: not such a timestamp (no zone counts as not one).
    """
    stripped = text.strip()
    if stripped != text or len(text) > 40 or "T" not in text.upper():
        raise ValueError("not an RFC 3339 timestamp")
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0:
            raise ValueError("not an RFC 3339 timestamp")
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no zone")
    return parsed.timestamp()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    max_age_s: float = MAX_AGE_S,
    max_future_s: float = MAX_FUTURE_S,
) -> VerifiedMessage:
    """Check that ``body`` with ``headers`` is an authentic Twitch message sent within the allowed window.

    Parameters:
      secret: the EventSub secret (``TWITCH_WEBHOOK_SECRET``).
      headers: Starlette ``Headers`` (case-insensitive) or a dict with lower-case names.
      body: the raw request body.
      now: seconds since the epoch.

    Raises:
      SignatureRejected: missing headers, a wrong signature, or a timestamp
        older than ``max_age_s`` or more than ``max_future_s`` ahead. The
        signature is checked first, so an unsigned request learns nothing
        about our clock.
    """
    message_id = headers.get(HEADER_MESSAGE_ID)
    timestamp = headers.get(HEADER_TIMESTAMP)
    signature = headers.get(HEADER_SIGNATURE)
    if not message_id or not timestamp or not signature:
        raise SignatureRejected("missing message id, timestamp or signature header")
    if not signature_matches(secret, message_id, timestamp, body, signature):
        raise SignatureRejected("signature does not match")
    if len(message_id) > MAX_MESSAGE_ID_LEN or not message_id.isprintable():
        raise SignatureRejected("message id is not a short printable string")
    try:
        sent_at = parse_timestamp(timestamp)
    except ValueError:
        raise SignatureRejected("timestamp is not RFC 3339") from None
    if sent_at < now - max_age_s:
        raise SignatureRejected(f"message is older than {max_age_s:g} s")
    if sent_at > now + max_future_s:
        raise SignatureRejected(f"message timestamp is more than {max_future_s:g} s ahead")
    return VerifiedMessage(message_id=message_id, timestamp=timestamp, sent_at=sent_at)
