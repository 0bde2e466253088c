"""Twitch OAuth for the broadcaster's user token: the Device Code Grant Flow, the authorization code grant
flow (the console's "Connect with Twitch"), refresh, validate, revoke.

Every endpoint lives under the OAuth base ``TWITCH_AUTH_URL`` (``/device``, ``/authorize``, ``/token``,
``/validate``, ``/revoke``). The device flow needs no web server and no redirect, which suits a home install,
and works for a public app (no client secret) as well as a confidential one (docs/sources-sync.md §4). A public app's
refresh tokens rotate on use, so whoever refreshes must store the new pair before anyone uses the old one
(``producers.twitch.tokens`` does, under a lock).

``requests`` stays inside this module; its errors and Twitch's refusals become ``TwitchAuthError``s whose
text never contains a token, a device code or the client secret: they are removed from anything Twitch's
answer echoes, and the exceptions carry no request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests

from config.errors import WetbotRewardsError
from config.rewards import SubscribeRule, TwitchSection

__all__ = [
    "DEVICE_CODE_GRANT",
    "SCOPES_BY_EVENT",
    "AccessDenied",
    "DeviceCode",
    "DeviceCodeExpired",
    "InvalidAccessToken",
    "InvalidAuthorizationCode",
    "InvalidRefreshToken",
    "OAuthClient",
    "OAuthRefused",
    "OAuthUnavailable",
    "TokenInfo",
    "TokenPair",
    "TwitchAuthError",
    "missing_scopes",
    "scopes_for",
]

#: Seconds per OAuth call.
DEFAULT_TIMEOUT_S = 10.0
#: ``grant_type`` of a device-code token request (RFC 8628).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: Seconds added to the polling interval each time Twitch answers ``slow_down`` (RFC 8628 §3.5).
SLOW_DOWN_STEP_S = 5.0
#: Longest error text kept from an answer: enough for Twitch's ``message``, not a whole HTML page.
_MESSAGE_MAX = 200

#: The scopes each EventSub type needs of the broadcaster's token. Redemptions need ``manage`` as well as
#: ``read``: the service marks its rewards' redemptions fulfilled or cancelled (refunded) through Helix
#: (docs/sources-sync.md §1). A raid needs no scope.
SCOPES_BY_EVENT: Mapping[str, tuple[str, ...]] = {
    "channel.subscribe": ("channel:read:subscriptions",),
    "channel.subscription.gift": ("channel:read:subscriptions",),
    "channel.subscription.message": ("channel:read:subscriptions",),
    "channel.cheer": ("bits:read",),
    "channel.channel_points_custom_reward_redemption.add": ("channel:read:redemptions", "channel:manage:redemptions"),
    "channel.follow": ("moderator:read:followers",),
    "channel.raid": (),
}


# -- errors ---------------------------------------------------------------------------------------------


class TwitchAuthError(WetbotRewardsError):
    """Base of the errors about the broadcaster's Twitch authorisation; ``status`` is Twitch's HTTP status
    (0: no answer). The text never holds a token or secret."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class OAuthUnavailable(TwitchAuthError):
    """Raised when Twitch cannot be reached, answers 5xx or 429, or answers something unreadable: try later."""


class OAuthRefused(TwitchAuthError):
    """Raised when Twitch refuses the request itself (a 4xx other than 429), e.g. an unknown client id."""


class DeviceCodeExpired(OAuthRefused):
    """Raised when the device code expired before the broadcaster approved it."""


class AccessDenied(OAuthRefused):
    """Raised when the broadcaster declined the authorisation request."""


class InvalidRefreshToken(OAuthRefused):
    """Raised when Twitch refuses a refresh token: revoked (the channel disconnected the app), expired
    unused, or already used (a public app's refresh tokens rotate). Only connecting again helps."""


class InvalidAuthorizationCode(OAuthRefused):
    """Raised when Twitch refuses an authorization code: unknown, used already, expired, or issued for
    another redirect URI or client. Connecting again (a new code) is the way."""


class InvalidAccessToken(OAuthRefused):
    """Raised when ``/validate`` answers 401: the access token expired or was revoked."""


# -- values ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceCode:
    """What ``/device`` answered: the code the broadcaster types at ``verification_uri``, and how to poll."""

    user_code: str
    verification_uri: str
    #: Seconds the code stays valid, counted from the answer.
    expires_in_s: float
    #: Seconds to wait between two polls of ``/token``.
    interval_s: float
    #: Exchanged for the tokens once approved; secret until then (whoever has it gets them).
    device_code: str = field(repr=False)


@dataclass(frozen=True)
class TokenPair:
    """A user access token with the refresh token that renews it (``/token``'s answer)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...]
    #: Seconds the access token is valid for, as Twitch said when it was issued.
    expires_in_s: float


@dataclass(frozen=True)
class TokenInfo:
    """What ``/validate`` says about a user access token."""

    client_id: str
    login: str
    user_id: str
    scopes: tuple[str, ...]
    #: Seconds the token has left.
    expires_in_s: float


# -- scopes ---------------------------------------------------------------------------------------------


def scopes_for(section: TwitchSection) -> tuple[str, ...]:
    """Exactly the scopes ``section``'s rules need (``SCOPES_BY_EVENT``), sorted, without repeats.

    A ``channel.subscribe`` rule that rewards gifters also listens to ``channel.subscription.gift``
    (``twitch subscribe`` does so); both need the same scope. ``[[twitch.rewards]]`` tables need
    ``channel:manage:redemptions``: the service creates and updates them (docs/sources-sync.md §1.1).
    """
    events = {rule.event for rule in section.rules}
    if any(isinstance(rule, SubscribeRule) and rule.gifted in ("gifter", "both") for rule in section.rules):
        events.add("channel.subscription.gift")
    scopes = {scope for event in events for scope in SCOPES_BY_EVENT[event]}
    if section.rewards:
        scopes.add("channel:manage:redemptions")
    return tuple(sorted(scopes))


def missing_scopes(needed: Iterable[str], granted: Iterable[str]) -> tuple[str, ...]:
    """The scopes in ``needed`` a token with ``granted`` lacks (connect again to add them), sorted."""
    return tuple(sorted(set(needed) - set(granted)))


# -- client ---------------------------------------------------------------------------------------------


class OAuthClient:
    """Twitch's OAuth endpoints for one app.

    Parameters:
      auth_url: the OAuth base (``TWITCH_AUTH_URL``), e.g. ``https://id.twitch.tv/oauth2``.
      client_id: the app's client id.
      client_secret: the app's secret for a confidential app; none for a public one.
      timeout_s: seconds per call.
      session: a ``requests.Session`` to use (one is made otherwise).
    """

    def __init__(
        self,
        *,
        auth_url: str,
        client_id: str,
        client_secret: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        session: requests.Session | None = None,
    ) -> None:
        self._base = auth_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout_s = timeout_s
        self._session = session or requests.Session()
        self._secrets: set[str] = {client_secret} if client_secret else set()

    @property
    def client_id(self) -> str:
        """The app's client id (not a secret: Twitch shows it in every authorisation page)."""
        return self._client_id

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    # -- device code grant flow -----------------------------------------------------------------------
    def start_device_flow(self, scopes: Iterable[str]) -> DeviceCode:
        """Ask Twitch for a device code for ``scopes`` (``POST <base>/device``).

        Raises:
          OAuthRefused: Twitch refused (an unknown client id, an app without the device flow, a bad scope).
          OAuthUnavailable: Twitch could not be reached or answered 5xx/429.
        """
        response = self._post("/device", {"client_id": self._client_id, "scopes": " ".join(scopes)})
        data = self._answer(response, "the device code request")
        try:
            code = DeviceCode(
                user_code=_text(data, "user_code"),
                verification_uri=_text(data, "verification_uri"),
                expires_in_s=_seconds(data, "expires_in"),
                interval_s=_seconds(data, "interval", default=5.0),
                device_code=_text(data, "device_code"),
            )
        except ValueError as exc:
            raise OAuthUnavailable(f"Twitch's device code answer is incomplete ({exc})", response.status_code) from None
        self._secrets.add(code.device_code)
        return code

    def poll_device_token(self, code: DeviceCode, scopes: Iterable[str]) -> TokenPair:
        """Poll ``<base>/token`` until the broadcaster approves ``code``; return the tokens.

        Waits ``interval`` seconds before each poll; ``authorization_pending`` polls on, ``slow_down``
        adds 5 seconds to the interval for every later poll (RFC 8628 §3.5). A poll Twitch does not answer
        (a dropped connection, a 5xx) is tried again at the next interval: the broadcaster may take
        minutes, and one blip must not throw the code away.

        Raises:
          DeviceCodeExpired: the code expired (Twitch said so, or its ``expires_in`` passed).
          AccessDenied: the broadcaster declined.
          OAuthRefused: any other refusal (e.g. the app's client id was deleted).
        """
        scope_text = " ".join(scopes)
        deadline = time.monotonic() + code.expires_in_s
        interval = code.interval_s
        while True:
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
            form = {
                "client_id": self._client_id,
                "scopes": scope_text,
                "device_code": code.device_code,
                "grant_type": DEVICE_CODE_GRANT,
            }
            if self._client_secret:
                form["client_secret"] = self._client_secret
            try:
                response = self._post("/token", form)
            except OAuthUnavailable:
                response = None
            if response is not None and response.status_code < 500 and response.status_code != 429:
                if response.ok:
                    return self._token_answer(response, "the device code exchange")
                reasons = _reasons(response)
                if "slow_down" in reasons:
                    interval += SLOW_DOWN_STEP_S
                elif reasons & {"access_denied", "authorization_declined"}:
                    raise AccessDenied("the broadcaster declined the authorisation request", response.status_code)
                elif reasons & {"expired_token", "invalid device code"}:
                    raise DeviceCodeExpired("the code expired before it was approved", response.status_code)
                elif "authorization_pending" not in reasons:
                    self._answer(response, "the device code exchange")  # raises the refusal as it is
            if time.monotonic() >= deadline:
                raise DeviceCodeExpired("the code expired before it was approved")

    # -- authorization code grant flow -------------------------------------------------------------------
    @property
    def has_secret(self) -> bool:
        """Whether this is a confidential app (the authorization code flow needs its secret)."""
        return self._client_secret is not None

    def authorize_url(self, redirect_uri: str, scopes: Iterable[str], state: str) -> str:
        """Where to send the broadcaster's browser: ``<base>/authorize`` asking for ``scopes``; Twitch sends it
        back to ``redirect_uri`` with ``code`` and ``state`` (docs/sources-sync.md §4)."""
        query = {
            "client_id": self._client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "state": state,
        }
        return f"{self._base}/authorize?{urlencode(query)}"

    def exchange_code(self, code: str, redirect_uri: str) -> TokenPair:
        """The tokens for an authorization ``code`` (``grant_type=authorization_code``, with the secret and the
        same ``redirect_uri``).

        Raises:
          OAuthRefused: this app has no client secret (nothing is sent), or Twitch refused otherwise.
          InvalidAuthorizationCode: Twitch refused the code (400).
          OAuthUnavailable: Twitch could not be reached or answered 5xx/429.
        """
        if self._client_secret is None:
            raise OAuthRefused("TWITCH_CLIENT_SECRET is not set: the authorization code flow needs it")
        self._secrets.add(code)
        form = {
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
        }
        try:
            return self._token_answer(self._post("/token", form), "the authorization code exchange")
        except OAuthRefused as exc:
            if exc.status == 400:
                raise InvalidAuthorizationCode(f"Twitch refused the authorization code: {exc}", exc.status) from None
            raise

    # -- refresh, validate, revoke ----------------------------------------------------------------------
    def refresh(self, refresh_token: str) -> TokenPair:
        """Exchange ``refresh_token`` for a new pair (``grant_type=refresh_token``).

        The old refresh token may stop working at once (a public app's rotate): store the answer before
        anything else uses the old one.

        Raises:
          InvalidRefreshToken: Twitch refused the refresh token (400/401).
          OAuthRefused: another refusal (e.g. the client id).
          OAuthUnavailable: Twitch could not be reached or answered 5xx/429.
        """
        self._secrets.add(refresh_token)
        form = {"client_id": self._client_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
        if self._client_secret:
            form["client_secret"] = self._client_secret
        try:
            return self._token_answer(self._post("/token", form), "the token refresh")
        except InvalidRefreshToken:
            raise
        except OAuthRefused as exc:
            if exc.status in (400, 401):
                raise InvalidRefreshToken(f"Twitch refused the refresh token: {exc}", exc.status) from None
            raise

    def validate(self, access_token: str) -> TokenInfo:
        """What Twitch says about ``access_token`` (``GET <base>/validate``): its user, client id, scopes.

        Twitch requires apps to call it at start and every hour (docs/sources-sync.md §4).

        Raises:
          InvalidAccessToken: 401, the token expired or was revoked.
          OAuthRefused: another refusal.
          OAuthUnavailable: Twitch could not be reached or answered 5xx/429.
        """
        self._secrets.add(access_token)
        response = self._send("GET", "/validate", headers={"Authorization": f"OAuth {access_token}"})
        if response.status_code == 401:
            raise InvalidAccessToken(
                f"Twitch says the access token is not valid: {self._message(response)}", response.status_code
            )
        data = self._answer(response, "the token validation")
        try:
            return TokenInfo(
                client_id=_text(data, "client_id"),
                login=_text(data, "login"),
                user_id=_text(data, "user_id"),
                scopes=_scopes(data),
                expires_in_s=_seconds(data, "expires_in", default=0.0),
            )
        except ValueError as exc:
            raise OAuthUnavailable(f"Twitch's validation answer is incomplete ({exc})", response.status_code) from None

    def revoke(self, token: str) -> None:
        """Revoke ``token`` (access or refresh) at Twitch. One Twitch no longer knows counts as revoked.

        Raises:
          OAuthRefused: Twitch refused for another reason (e.g. the token belongs to another client id).
          OAuthUnavailable: Twitch could not be reached or answered 5xx/429.
        """
        self._secrets.add(token)
        response = self._post("/revoke", {"client_id": self._client_id, "token": token})
        if response.status_code == 400 and "invalid token" in self._message(response).lower():
            return
        self._answer(response, "the token revocation", want_json=False)

    # -- plumbing -------------------------------------------------------------------------------------
    def _token_answer(self, response: requests.Response, what: str) -> TokenPair:
        data = self._answer(response, what)
        try:
            pair = TokenPair(
                access_token=_text(data, "access_token"),
                refresh_token=_text(data, "refresh_token"),
                scopes=_scopes(data, "scope"),
                expires_in_s=_seconds(data, "expires_in", default=0.0),
            )
        except ValueError as exc:
            raise OAuthUnavailable(f"Twitch's answer to {what} is incomplete ({exc})", response.status_code) from None
        self._secrets.update((pair.access_token, pair.refresh_token))
        return pair

    def _answer(self, response: requests.Response, what: str, *, want_json: bool = True) -> dict[str, Any]:
        """The JSON object of a 2xx answer.

        Raises:
          OAuthUnavailable: 5xx, 429 or unreadable; OAuthRefused: another status.
        """
        status = response.status_code
        if status == 429 or status >= 500:
            raise OAuthUnavailable(f"Twitch answered {status} to {what}: {self._message(response)}", status)
        if not 200 <= status < 300:
            raise OAuthRefused(f"Twitch answered {status} to {what}: {self._message(response)}", status)
        if not want_json:
            return {}
        try:
            data = response.json()
        except ValueError:
            raise OAuthUnavailable(f"Twitch answered {what} with something that is not JSON", status) from None
        if not isinstance(data, dict):
            raise OAuthUnavailable(f"Twitch answered {what} with JSON that is not an object", status)
        return data

    def _post(self, path: str, form: dict[str, str]) -> requests.Response:
        return self._send("POST", path, data=form)

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self._base + path
        try:
            return self._session.request(method, url, timeout=self._timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise OAuthUnavailable(f"cannot reach Twitch at {url} ({type(exc).__name__})") from None

    def _message(self, response: requests.Response) -> str:
        """Twitch's ``message`` (or ``error``) field, or a piece of the body, with every secret removed."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            text = str(data.get("message") or data.get("error_description") or data.get("error") or "")
        else:
            text = response.text
        text = " ".join(text.split())[:_MESSAGE_MAX]
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return text or "(no message)"


def _reasons(response: requests.Response) -> set[str]:
    """The reason codes of a refusal, lower case: Twitch puts it in ``message`` (``authorization_pending``),
    RFC 8628 in ``error``; both are read."""
    try:
        data = response.json()
    except ValueError:
        return set()
    if not isinstance(data, dict):
        return set()
    return {str(data[name]).strip().lower() for name in ("message", "error") if isinstance(data.get(name), str)}


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"no {name}")
    return value


def _seconds(data: Mapping[str, Any], name: str, *, default: float | None = None) -> float:
    value = data.get(name)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"no {name}")
    return float(value)


def _scopes(data: Mapping[str, Any], name: str = "scopes") -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(sorted(value.split()))
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(sorted(value))
    raise ValueError(f"no {name}")
