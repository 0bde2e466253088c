"""The OAuth half of the Twitch simulator (``/oauth2/...`` and the ``/activate`` page): grants and tokens.

Pure state and logic: :class:`OAuthState` is called by :class:`simulator.twitch.TwitchSimulator` with the
simulator's lock held, and answers :class:`simulator._http.Reply` objects in Twitch's OAuth error shape
``{"status": n, "message": "..."}``. What is documented and what is chosen is listed in the docstring of
``simulator.twitch``.
"""

from __future__ import annotations

import html
import math
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode, urlsplit

from simulator._http import Reply, Request

DEVICE_GRANT: str = "urn:ietf:params:oauth:grant-type:device_code"

DeviceState = Literal["pending", "approved", "denied", "used"]
#: What ``GET /oauth2/authorize`` does: show the consent page (``ask``), or answer as the broadcaster at once.
AuthorizeMode = Literal["ask", "approve", "deny"]
AUTHORIZE_MODES: tuple[AuthorizeMode, ...] = ("ask", "approve", "deny")
#: Seconds an authorization code may wait for its exchange (RFC 6749 §4.1.2 recommends at most 10 minutes).
AUTHORIZATION_CODE_LIFETIME_S = 600.0


@dataclass(frozen=True)
class TwitchUser:
    """A Twitch account the simulator knows: the broadcaster or a viewer."""

    id: str
    login: str
    display_name: str


@dataclass
class Grant:
    """One authorization: a user (None for an app token) giving a client some scopes. Revoking it ends every
    access token it issued and its refresh token."""

    id: int
    client_id: str
    user_id: str | None
    scopes: tuple[str, ...]
    refresh_token: str | None = None
    revoked: bool = False


@dataclass
class AccessToken:
    grant: Grant
    expires_at: float


@dataclass(frozen=True)
class TokenInfo:
    """What Helix learns from a live access token."""

    client_id: str
    user_id: str | None
    scopes: tuple[str, ...]


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    state: DeviceState = "pending"
    user_id: str | None = None
    last_poll: float | None = None


@dataclass
class AuthorizationCode:
    """A code ``/oauth2/authorize`` handed to the redirect URI; exchanged once, with the same redirect URI."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    user_id: str
    expires_at: float
    used: bool = False


@dataclass
class OAuthConfig:
    """The settings of the OAuth side that tests change at run time."""

    clients: dict[str, str | None]
    access_token_lifetime_s: float = 14_400.0
    device_code_lifetime_s: float = 1_800.0
    device_poll_interval_s: float = 5.0
    auto_approve_after_s: float | None = None
    authorize: AuthorizeMode = "ask"
    #: The redirect URIs registered for the apps (None: any http(s) URI is taken as registered).
    redirect_uris: tuple[str, ...] | None = None


def oauth_error(status: int, message: str) -> Reply:
    return Reply(status, {"status": status, "message": message})


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


@dataclass
class OAuthState:
    """Grants, tokens and device codes. Every method expects the caller to hold the simulator's lock."""

    config: OAuthConfig
    broadcaster: TwitchUser
    users: Mapping[str, TwitchUser]
    root_url: str = ""
    grants: list[Grant] = field(default_factory=list)
    tokens: dict[str, AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    devices: dict[str, DeviceCode] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)

    # ---------------------------------------------------------------- issuing

    def issue(self, client_id: str, user_id: str | None, scopes: Iterable[str], now: float) -> dict[str, object]:
        """A new grant with its first access token (and a refresh token for a user); the token answer."""
        grant = Grant(len(self.grants) + 1, client_id, user_id, tuple(scopes))
        self.grants.append(grant)
        answer = self._access_answer(grant, now)
        if user_id is not None:
            grant.refresh_token = secrets.token_hex(25)
            self.refresh_tokens[grant.refresh_token] = grant
            answer["refresh_token"] = grant.refresh_token
            answer["scope"] = list(grant.scopes)
        return answer

    def _access_answer(self, grant: Grant, now: float) -> dict[str, object]:
        value = secrets.token_hex(15)
        lifetime = self.config.access_token_lifetime_s
        self.tokens[value] = AccessToken(grant, now + lifetime)
        return {"access_token": value, "expires_in": math.ceil(lifetime), "token_type": "bearer"}

    def granted(self, client_id: str, user_id: str) -> frozenset[str]:
        """The scopes ``user_id`` has granted ``client_id`` through grants not revoked."""
        scopes = (g.scopes for g in self.grants if g.client_id == client_id and g.user_id == user_id and not g.revoked)
        return frozenset(scope for group in scopes for scope in group)

    def token_info(self, value: str, now: float) -> TokenInfo | None:
        """The live token's owner and scopes; None when it is unknown, expired or revoked."""
        token = self.tokens.get(value)
        if token is None or token.grant.revoked or token.expires_at <= now:
            return None
        return TokenInfo(token.grant.client_id, token.grant.user_id, token.grant.scopes)

    # ---------------------------------------------------------------- control

    def approve(self, user_code: str | None, login: str | None, now: float, *, deny: bool = False) -> str:
        """Approve (or deny) a pending device code; returns its user code. Without ``user_code`` the only
        pending one is meant; ``login`` names who approves (default: the broadcaster)."""
        pending = [d for d in self.devices.values() if d.state == "pending" and d.expires_at > now]
        if user_code is not None:
            pending = [d for d in pending if d.user_code == user_code.upper()]
        if len(pending) != 1:
            raise ValueError(f"{len(pending)} pending device codes match; give the user_code of one")
        device = pending[0]
        if deny:
            device.state = "denied"
            return device.user_code
        user = self.broadcaster if login is None else self.user_by_login(login)
        device.state, device.user_id = "approved", user.id
        return device.user_code

    def user_by_login(self, login: str) -> TwitchUser:
        for user in self.users.values():
            if user.login == login.lower():
                return user
        raise ValueError(f"no user with login {login!r}")

    def pending(self, now: float) -> list[DeviceCode]:
        self._auto_approve(now)
        return [d for d in self.devices.values() if d.state == "pending" and d.expires_at > now]

    def expire_access_tokens(self, now: float) -> None:
        for token in self.tokens.values():
            token.expires_at = min(token.expires_at, now)

    def revoke_all(self) -> None:
        for grant in self.grants:
            grant.revoked = True

    def _auto_approve(self, now: float) -> None:
        after = self.config.auto_approve_after_s
        if after is None:
            return
        for device in self.devices.values():
            if device.state == "pending" and now - device.issued_at >= after and device.expires_at > now:
                device.state, device.user_id = "approved", self.broadcaster.id

    # ---------------------------------------------------------------- endpoints

    def handle(self, request: Request, now: float) -> Reply:
        endpoint = request.path.removeprefix("/oauth2").strip("/")
        if endpoint == "authorize" and request.method in ("GET", "POST"):
            return self._authorize(request, now)
        methods = {"device": "POST", "token": "POST", "validate": "GET", "revoke": "POST"}
        if endpoint not in methods:
            return oauth_error(404, "Not Found")
        if request.method != methods[endpoint]:
            return oauth_error(405, "Method Not Allowed")
        if endpoint == "validate":
            return self._validate(request, now)
        form = request.form()
        if endpoint == "device":
            return self._device(form, now)
        if endpoint == "revoke":
            return self._revoke(form)
        return self._token(form, now)

    def _device(self, form: Mapping[str, str], now: float) -> Reply:
        client_id = form.get("client_id", "")
        if not client_id:
            return oauth_error(400, "missing client id")
        if client_id not in self.config.clients:
            return oauth_error(400, "invalid client")
        letters = string.ascii_uppercase
        user_code = "".join(secrets.choice(letters) for _ in range(8))
        device = DeviceCode(
            device_code=secrets.token_urlsafe(30),
            user_code=user_code,
            client_id=client_id,
            scopes=tuple(form.get("scopes", "").split()),
            issued_at=now,
            expires_at=now + self.config.device_code_lifetime_s,
        )
        self.devices[device.device_code] = device
        return Reply(
            200,
            {
                "device_code": device.device_code,
                "expires_in": math.ceil(self.config.device_code_lifetime_s),
                "interval": _number(self.config.device_poll_interval_s),
                "user_code": user_code,
                "verification_uri": f"{self.root_url}/activate?public=true&device-code={user_code}",
            },
        )

    def _token(self, form: Mapping[str, str], now: float) -> Reply:
        grant_type = form.get("grant_type", "")
        client_id = form.get("client_id", "")
        if not client_id:
            return oauth_error(400, "missing client id")
        if client_id not in self.config.clients:
            return oauth_error(400, "invalid client")
        if grant_type == DEVICE_GRANT:
            return self._device_token(client_id, form.get("device_code", ""), now)
        secret = self.config.clients[client_id]
        if grant_type == "authorization_code":
            if secret is None or form.get("client_secret") != secret:
                return oauth_error(403, "invalid client secret")
            return self._code_token(client_id, form, now)
        if grant_type == "client_credentials":
            if secret is None or form.get("client_secret") != secret:
                return oauth_error(403, "invalid client secret")
            return Reply(200, self.issue(client_id, None, (), now))
        if grant_type == "refresh_token":
            if secret is not None and form.get("client_secret") != secret:
                return oauth_error(403, "invalid client secret")
            return self._refresh(client_id, form.get("refresh_token", ""), now)
        return oauth_error(400, "unsupported grant type")

    def _device_token(self, client_id: str, device_code: str, now: float) -> Reply:
        device = self.devices.get(device_code)
        if device is None or device.client_id != client_id or device.state == "used":
            return oauth_error(400, "invalid device code")
        if device.expires_at <= now:
            return oauth_error(400, "expired_token")
        previous, device.last_poll = device.last_poll, now
        if previous is not None and now - previous < self.config.device_poll_interval_s:
            return oauth_error(400, "slow_down")
        self._auto_approve(now)
        if device.state == "denied":
            return oauth_error(400, "access_denied")
        if device.state == "pending":
            return oauth_error(400, "authorization_pending")
        device.state = "used"
        return Reply(200, self.issue(client_id, device.user_id, device.scopes, now))

    def _refresh(self, client_id: str, refresh_token: str, now: float) -> Reply:
        grant = self.refresh_tokens.get(refresh_token)
        if grant is None or grant.client_id != client_id or grant.revoked:
            return oauth_error(400, "Invalid refresh token")
        del self.refresh_tokens[refresh_token]  # rotation: the used refresh token stops working
        grant.refresh_token = secrets.token_hex(25)
        self.refresh_tokens[grant.refresh_token] = grant
        answer = self._access_answer(grant, now)
        answer["refresh_token"] = grant.refresh_token
        answer["scope"] = list(grant.scopes)
        return Reply(200, answer)

    def _validate(self, request: Request, now: float) -> Reply:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        token = self.tokens.get(value.strip()) if scheme.lower() in ("oauth", "bearer") else None
        info = self.token_info(value.strip(), now) if token is not None else None
        if token is None or info is None:
            return oauth_error(401, "invalid access token")
        answer: dict[str, object] = {"client_id": info.client_id, "scopes": list(info.scopes)}
        if info.user_id is not None:
            user = self.users.get(info.user_id)
            answer["login"] = user.login if user else ""
            answer["user_id"] = info.user_id
        answer["expires_in"] = max(0, math.floor(token.expires_at - now))
        return Reply(200, answer)

    def _revoke(self, form: Mapping[str, str]) -> Reply:
        client_id = form.get("client_id", "")
        if client_id not in self.config.clients:
            return oauth_error(404, "client does not exist")
        value = form.get("token", "")
        token = self.tokens.get(value)
        grant = token.grant if token is not None else self.refresh_tokens.get(value)
        if grant is None or grant.client_id != client_id:
            return oauth_error(400, "Invalid token")
        grant.revoked = True
        return Reply(200)

    # ---------------------------------------------------------------- authorization code grant flow

    def _authorize(self, request: Request, now: float) -> Reply:
        """``GET /oauth2/authorize``: the consent page, or (``config.authorize``) the broadcaster's answer at
        once; ``POST`` is the page's Authorize / Deny. Either answer is a 302 to the redirect URI, with
        ``code``, ``scope`` and ``state``, or ``error=access_denied``, ``error_description`` and ``state``. A
        request that is not the app's own (unknown client, unregistered redirect URI, another response type)
        is answered here, never sent on to the redirect URI."""
        form = request.form()
        client_id, redirect_uri = form.get("client_id", ""), form.get("redirect_uri", "")
        if client_id not in self.config.clients:
            return Reply(400, html="<!DOCTYPE html><p>invalid client</p>")
        if not self._registered(redirect_uri):
            return Reply(400, html="<!DOCTYPE html><p>redirect_mismatch: the redirect URI is not registered</p>")
        if form.get("response_type") != "code":
            return Reply(400, html="<!DOCTYPE html><p>unsupported response type</p>")
        scopes = tuple(form.get("scope", "").split())
        state = form.get("state", "")
        answer = self.config.authorize if request.method == "GET" else form.get("action", "")
        if answer == "approve":
            code = secrets.token_hex(15)
            self.codes[code] = AuthorizationCode(
                client_id, redirect_uri, scopes, self.broadcaster.id, now + AUTHORIZATION_CODE_LIFETIME_S
            )
            return _redirect(redirect_uri, {"code": code, "scope": " ".join(scopes), "state": state})
        if answer == "deny":
            query = {"error": "access_denied", "error_description": "The user denied you access", "state": state}
            return _redirect(redirect_uri, query)
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(form.get(name, ""))}">'
            for name in ("client_id", "redirect_uri", "response_type", "scope", "state")
        )
        page = (
            "<!DOCTYPE html><html><head><title>Authorize (Twitch simulator)</title></head><body>"
            f"<h1>Authorize an app</h1><p>Signed in as {html.escape(self.broadcaster.display_name)}. "
            f"Scopes: {html.escape(' '.join(scopes)) or 'none'}.</p>"
            f'<form method="post" action="/oauth2/authorize">{hidden}'
            '<button name="action" value="approve">Authorize</button>'
            '<button name="action" value="deny">Cancel</button></form></body></html>'
        )
        return Reply(200, html=page)

    def _registered(self, redirect_uri: str) -> bool:
        if self.config.redirect_uris is not None:
            return redirect_uri in self.config.redirect_uris
        parts = urlsplit(redirect_uri)
        return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment

    def _code_token(self, client_id: str, form: Mapping[str, str], now: float) -> Reply:
        code = self.codes.get(form.get("code", ""))
        if code is None or code.used or code.client_id != client_id or code.expires_at <= now:
            return oauth_error(400, "Invalid authorization code")
        if form.get("redirect_uri", "") != code.redirect_uri:
            return oauth_error(400, "Parameter redirect_uri does not match registered URI")
        code.used = True  # single use: a second exchange of the same code is refused
        return Reply(200, self.issue(client_id, code.user_id, code.scopes, now))

    # ---------------------------------------------------------------- the verification page

    def activate_page(self, request: Request, now: float) -> Reply:
        """``GET /activate`` shows the code with Authorize / Deny buttons; ``POST /activate`` acts on it (as
        the broadcaster), so a person running the demo can approve ``twitch connect`` in a browser."""
        if request.method == "POST":
            form = request.form()
            code = form.get("user_code", "")
            try:
                self.approve(code, None, now, deny=form.get("action") == "deny")
            except ValueError:
                return Reply(400, html="<!DOCTYPE html><p>That code is not pending (expired, used or unknown).</p>")
            verb = "denied" if form.get("action") == "deny" else "authorized"
            return Reply(200, html=f"<!DOCTYPE html><p>Device {verb}. You can close this page.</p>")
        code = html.escape(request.arg("device-code") or "")
        page = (
            "<!DOCTYPE html><html><head><title>Activate (Twitch simulator)</title></head><body>"
            f"<h1>Activate a device</h1><p>Signed in as {html.escape(self.broadcaster.display_name)}.</p>"
            '<form method="post" action="/activate">'
            f'<input name="user_code" value="{code}" autofocus>'
            '<button name="action" value="approve">Authorize</button>'
            '<button name="action" value="deny">Deny</button></form></body></html>'
        )
        return Reply(200, html=page)


def _redirect(uri: str, query: Mapping[str, str]) -> Reply:
    joiner = "&" if urlsplit(uri).query else "?"
    return Reply(302, headers={"Location": uri + joiner + urlencode(query)})
