"""WetBot API client: one request per call, every outcome classified, never raises for HTTP trouble.

``requests`` stays inside this module. Each call opens a fresh connection
(``requests.request`` builds and closes its own session): at 10 requests per
minute there is nothing to gain from keep-alive, and a pooled connection the
server closed while idle would turn a harmless reconnect into an "ambiguous"
outcome.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from config.keyring import key_fingerprint
from worker.effects import JsonObject

#: Longest server message kept on a grant, in characters.
MAX_MESSAGE_CHARS = 300


class CallOutcome(StrEnum):
    """What one WetBot call amounted to (README "Exactly once": outcomes)."""

    #: 2xx with WetBot's envelope and the user's profile: applied; ``profile`` holds it.
    DELIVERED = "delivered"
    #: 429: nothing applied; wait (``retry_after_s`` when the server said).
    RATE_LIMITED = "rate_limited"
    #: 401/403: the key is wrong, revoked or not for this guild.
    UNAUTHORISED = "unauthorised"
    #: another 4xx: the server refused this content; sending it again will not help.
    REJECTED = "rejected"
    #: nothing can have been applied (connection refused or timed out, 408): safe to retry.
    TRANSIENT = "transient"
    #: the request may have been applied: read timeout, connection dropped after sending, any 5xx
    #: (a server can fail after applying), a 2xx that is not WetBot's envelope (a proxy's page).
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class CallResult:
    """One call's classified result."""

    outcome: CallOutcome
    #: HTTP status, or None when no response arrived.
    status: int | None
    #: Server message or a description of the failure, secrets removed.
    message: str
    #: The ``response`` object of a success envelope (the user's profile).
    profile: JsonObject | None = None
    #: Seconds from a ``Retry-After`` header, when present.
    retry_after_s: float | None = None

    @property
    def may_still_arrive(self) -> bool:
        """True when the request went out but no answer came back (a read timeout, a connection lost after
        sending): WetBot may not have counted it yet, and may still, within what the run's leases promise."""
        return self.status is None and self.outcome == CallOutcome.AMBIGUOUS


@dataclass(frozen=True)
class ItemDelta:
    """One entry of an inventory request."""

    item_id: str
    amount: float


class WetbotClient:
    """Calls WetBot with a bare key in ``Authorization`` and a timeout on every request.

    Parameters:
      base_url: API base, e.g. ``https://www.wetbot.space/api``.
      api_key: the guild's key, sent as is (no "Bearer").
      timeout_s: seconds for connecting and for reading the answer.
    """

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self.key_id = key_fingerprint(api_key)

    def add_items(self, guild_id: str, user_id: str, items: Iterable[ItemDelta]) -> CallResult:
        """``POST /guilds/{g}/users/{u}/inventory`` with ``{"items": [{"itemID", "amount"}]}``."""
        body = {"items": [{"itemID": item.item_id, "amount": _json_number(item.amount)} for item in items]}
        return self._call("POST", f"/guilds/{guild_id}/users/{user_id}/inventory", body)

    def get_profile(self, guild_id: str, user_id: str) -> CallResult:
        """``GET /guilds/{g}/users/{u}``: the user's profile, without changing it."""
        return self._call("GET", f"/guilds/{guild_id}/users/{user_id}", None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> CallResult:
        headers = {"Authorization": self._api_key, "Content-Type": "application/json", "Accept": "application/json"}
        try:
            response = requests.request(
                method,
                self._base_url + path,
                data=None if body is None else json.dumps(body),
                headers=headers,
                timeout=self._timeout_s,
                allow_redirects=False,
            )
        except requests.ConnectTimeout as exc:
            return CallResult(CallOutcome.TRANSIENT, None, self._describe("connect timeout", exc))
        except requests.ReadTimeout as exc:
            return CallResult(CallOutcome.AMBIGUOUS, None, self._describe("no answer within the timeout", exc))
        except requests.ConnectionError as exc:
            if _never_sent(exc):
                return CallResult(CallOutcome.TRANSIENT, None, self._describe("cannot connect", exc))
            return CallResult(CallOutcome.AMBIGUOUS, None, self._describe("connection lost after sending", exc))
        except requests.RequestException as exc:
            return CallResult(CallOutcome.AMBIGUOUS, None, self._describe("request failed", exc))
        return self._classify(response)

    def _classify(self, response: requests.Response) -> CallResult:
        envelope = _parse_envelope(response)
        status = response.status_code
        code = envelope.get("code")
        # Both envelopes carry a "code"; trust it when it says "error" under a 2xx status.
        if 200 <= status < 300 and isinstance(code, int) and code >= 400:
            status = code
        message = self._scrub(_message_of(envelope, response))
        retry_after_s = _retry_after(response.headers.get("Retry-After"))
        if 200 <= status < 300:
            profile = envelope.get("response")
            if isinstance(code, int) and 200 <= code < 300 and isinstance(profile, dict):
                return CallResult(CallOutcome.DELIVERED, status, message, profile)
            kind = response.headers.get("Content-Type", "no content type").split(";")[0].strip()
            return CallResult(
                CallOutcome.AMBIGUOUS, status, f"HTTP {status} without WetBot's envelope and profile ({kind})"
            )
        if status == 429:
            return CallResult(CallOutcome.RATE_LIMITED, status, message, retry_after_s=retry_after_s)
        if status in (401, 403):
            return CallResult(CallOutcome.UNAUTHORISED, status, message)
        if status == 408:
            return CallResult(CallOutcome.TRANSIENT, status, message, retry_after_s=retry_after_s)
        if status >= 500:
            return CallResult(CallOutcome.AMBIGUOUS, status, message, retry_after_s=retry_after_s)
        if 400 <= status < 500:
            return CallResult(CallOutcome.REJECTED, status, message)
        # 1xx/3xx: we never follow redirects; the request was not served as asked.
        return CallResult(CallOutcome.REJECTED, status, message or f"unexpected HTTP {status}")

    def _describe(self, what: str, exc: BaseException) -> str:
        return self._scrub(f"{what}: {type(exc).__name__}: {exc}")[:MAX_MESSAGE_CHARS]

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection failed before the request could reach the server."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NewConnectionError | ConnectTimeoutError | ConnectionRefusedError):
            return True
        reason = getattr(current, "reason", None)
        nested = reason if isinstance(reason, BaseException) else None
        if nested is None and current.args and isinstance(current.args[0], BaseException):
            nested = current.args[0]
        current = nested or current.__cause__ or current.__context__
    return False


def _parse_envelope(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _message_of(envelope: dict[str, Any], response: requests.Response) -> str:
    message = envelope.get("message")
    if isinstance(message, str) and message:
        return message[:MAX_MESSAGE_CHARS]
    if 200 <= response.status_code < 300:
        return ""
    text = response.text.strip()
    return (text or f"HTTP {response.status_code} {response.reason or ''}".strip())[:MAX_MESSAGE_CHARS]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json_number(amount: float) -> int | float:
    """Send whole amounts as integers (``1`` rather than ``1.0``); fractions stay fractions."""
    return int(amount) if float(amount).is_integer() else amount
