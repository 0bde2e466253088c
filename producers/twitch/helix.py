"""A small Twitch Helix client for EventSub subscriptions (``wetbot-rewards twitch subscribe``).

Webhook subscriptions need an *app access token*, obtained with the client
credentials grant (``TWITCH_CLIENT_ID`` + ``TWITCH_CLIENT_SECRET``). Only what
``subscribe`` needs is here: get a token, list, create and delete EventSub
subscriptions. ``requests`` stays inside this module; its errors become
``HelixError``, whose text never contains the client secret, the token or the
transport secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from config.errors import WetbotRewardsError

__all__ = ["ACTIVE_STATUSES", "HelixClient", "HelixError", "Subscription", "SubscriptionExists"]

#: Seconds per Helix call.
DEFAULT_TIMEOUT_S = 10.0
#: Pages read at most when listing subscriptions (100 each): a guard against a cursor that never ends.
MAX_PAGES = 100
#: Statuses of a subscription that is working or about to: anything else (verification
#: failed, revoked, failures exceeded, user removed, version removed) delivers nothing.
ACTIVE_STATUSES = frozenset({"enabled", "webhook_callback_verification_pending"})


class HelixError(WetbotRewardsError):
    """Raised when Twitch refuses a call or cannot be reached; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class SubscriptionExists(HelixError):
    """Raised when Twitch answers 409: a subscription with that type and condition already exists."""


@dataclass(frozen=True)
class Subscription:
    """One EventSub subscription as Helix lists it."""

    id: str
    type: str
    version: str
    status: str
    #: Condition fields with a value (Helix also lists the unused ones as "").
    condition: dict[str, str]
    method: str
    callback: str
    #: The WebSocket session a ``websocket`` subscription delivers to ("" for webhooks).
    session_id: str = ""
    #: When Twitch created it (RFC 3339, as Helix lists it).
    created_at: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Subscription:
        condition = data.get("condition") or {}
        transport = data.get("transport") or {}
        return cls(
            id=str(data.get("id", "")),
            type=str(data.get("type", "")),
            version=str(data.get("version", "")),
            status=str(data.get("status", "")),
            condition={str(k): str(v) for k, v in condition.items() if v not in (None, "")},
            method=str(transport.get("method", "")),
            callback=str(transport.get("callback", "")),
            session_id=str(transport.get("session_id") or ""),
            created_at=str(data.get("created_at") or ""),
        )

    @property
    def active(self) -> bool:
        """True when enabled or waiting for its callback verification."""
        return self.status in ACTIVE_STATUSES


class HelixClient:
    """Helix with an app access token, fetched on first use and fetched again once after a 401.

    Parameters:
      api_url: Helix base (``TWITCH_API_URL``), e.g. ``https://api.twitch.tv/helix``.
      auth_url: the OAuth base (``TWITCH_AUTH_URL``), e.g. ``https://id.twitch.tv/oauth2``; the token
        endpoint is ``<auth_url>/token``.
      client_id, client_secret: the app's credentials.
      timeout_s: seconds per call.
      session: a ``requests.Session`` to use (one is made otherwise).
    """

    def __init__(
        self,
        *,
        api_url: str,
        auth_url: str,
        client_id: str,
        client_secret: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        session: requests.Session | None = None,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._token_url = f"{auth_url.rstrip('/')}/token"
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout_s = timeout_s
        self._session = session or requests.Session()
        self._token: str | None = None
        self._secrets: list[str] = [client_secret]

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    # -- token ------------------------------------------------------------------------------
    def app_token(self) -> str:
        """An app access token (client credentials grant), cached for this client's life."""
        if self._token is None:
            response = self._send(
                "POST",
                self._token_url,
                data={
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "grant_type": "client_credentials",
                },
            )
            if response.status_code != 200:
                raise HelixError(f"Twitch refused the app credentials: {self._message(response)}", response.status_code)
            token = self._json(response).get("access_token")
            if not isinstance(token, str) or not token:
                raise HelixError("Twitch's token answer has no access_token", response.status_code)
            self._token = token
            self._secrets.append(token)
        return self._token

    # -- subscriptions ---------------------------------------------------------------------------
    def list_subscriptions(self) -> list[Subscription]:
        """Every EventSub subscription of this app, following the pagination cursor."""
        found: list[Subscription] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = {"after": cursor} if cursor else {}
            page = self._json(self._api("GET", "/eventsub/subscriptions", params=params, expect=(200,)))
            found.extend(Subscription.from_json(item) for item in page.get("data") or [] if isinstance(item, dict))
            cursor = (page.get("pagination") or {}).get("cursor")
            if not cursor:
                return found
        raise HelixError(f"more than {MAX_PAGES} pages of subscriptions; stopped listing")

    def create_subscription(
        self, subscription_type: str, version: str, condition: Mapping[str, str], callback: str, secret: str
    ) -> Subscription:
        """Create a webhook subscription (Twitch answers 202 and then sends the challenge to ``callback``).

        Raises:
          SubscriptionExists: Twitch answered 409.
          HelixError: any other refusal, e.g. 403 when the broadcaster has not
            authorised this app for the scope the type needs.
        """
        self._secrets.append(secret)
        body = {
            "type": subscription_type,
            "version": version,
            "condition": dict(condition),
            "transport": {"method": "webhook", "callback": callback, "secret": secret},
        }
        response = self._api("POST", "/eventsub/subscriptions", json=body, expect=(202, 409))
        if response.status_code == 409:
            raise SubscriptionExists(self._message(response), 409)
        data = self._json(response).get("data") or []
        if not data or not isinstance(data[0], dict):
            raise HelixError("Twitch's answer lists no subscription", response.status_code)
        return Subscription.from_json(data[0])

    def delete_subscription(self, subscription_id: str) -> None:
        """Delete one subscription (a missing one counts as deleted)."""
        self._api("DELETE", "/eventsub/subscriptions", params={"id": subscription_id}, expect=(204, 404))

    # -- plumbing -------------------------------------------------------------------------------
    def _api(self, method: str, path: str, *, expect: tuple[int, ...], **kwargs: Any) -> requests.Response:
        response = self._send(method, self._api_url + path, headers=self._headers(), **kwargs)
        if response.status_code == 401:  # the token expired or was revoked: get a new one, once
            self._token = None
            response = self._send(method, self._api_url + path, headers=self._headers(), **kwargs)
        if response.status_code not in expect:
            raise HelixError(
                f"{method} {path}: Twitch answered {response.status_code}: {self._message(response)}",
                response.status_code,
            )
        return response

    def _headers(self) -> dict[str, str]:
        return {"Client-Id": self._client_id, "Authorization": f"Bearer {self.app_token()}"}

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(method, url, timeout=self._timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise HelixError(f"cannot reach Twitch at {url} ({type(exc).__name__})") from None

    def _json(self, response: requests.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise HelixError(
                f"Twitch answered {response.status_code} with something that is not JSON", response.status_code
            ) from None
        if not isinstance(data, dict):
            raise HelixError("Twitch answered with JSON that is not an object", response.status_code)
        return data

    def _message(self, response: requests.Response) -> str:
        """Twitch's ``message`` field (or a piece of the body), with every secret this client knows removed."""
        try:
            data = response.json()
            text = str(data.get("message") or data) if isinstance(data, dict) else str(data)
        except ValueError:
            text = response.text
        text = text[:300]
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        return text or "(no message)"
