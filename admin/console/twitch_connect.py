"""Connecting and disconnecting the channel from the console's Twitch page.

*Connect with Twitch* is Twitch's authorization code flow (docs/sources-sync.md §4), offered where the
service has a public URL (``PUBLIC_URL``) and a client secret (the flow needs it):

1. ``POST /console/twitch/connect`` (a console form: session and CSRF checked) makes a random one-time
   ``state`` and a random browser binding. Redis keeps, under the state's sha256, the session it belongs
   to and the binding's sha256, for ``STATE_TTL_S`` (``Keys.console_twitch_state``); the binding goes
   to the browser as a cookie scoped to the callback. The browser is sent to Twitch's ``/authorize``
   asking for exactly the scopes the rules need (``scopes_for``).
2. Twitch sends the browser back to ``GET /console/twitch/callback`` with ``code`` and ``state`` (or
   ``error=access_denied``). The state is taken from Redis and deleted in one command (``GETDEL``): a
   second use finds nothing. It must be one of ours, still pending, carried by the browser that asked
   (the binding cookie) and of a session still logged in; otherwise the answer is a page saying so and
   nothing is stored. Then the code is exchanged and the pair stored by ``TokenVault.connect``, the
   same path as ``twitch connect``.

The binding cookie is ``SameSite=Lax`` where the session cookie is ``Strict``: Twitch's redirect is a
navigation from another site, which carries Lax cookies but not Strict ones. For the same reason the
callback answers with a page that moves on to the Twitch page by itself (a same-site navigation, so the
session cookie is sent there) instead of a redirect, which would still count as coming from Twitch.

No code, token or secret reaches a page, the log or the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from admin.console.context import ConsoleForm, console_form, console_state, see_other, session_store
from admin.console.login_pages import is_https
from admin.console.rendering import render_html
from admin.console.route import ConsoleRoute
from admin.console.sessions import FINGERPRINT_HEX, Flash
from admin.console.twitch_page import CALLBACK_PATH, TWITCH_PATH, connect_blocker, redirect_uri, vault_of
from producers.state import AppState
from producers.twitch.oauth import (
    InvalidAuthorizationCode,
    OAuthUnavailable,
    TwitchAuthError,
    scopes_for,
)
from producers.twitch.tokens import NoEncryptionKey, TokenVaultError, WrongClient

__all__ = ["BINDING_COOKIE", "STATE_TTL_S", "router"]

logger = logging.getLogger("wetbot_rewards.console")

router = APIRouter(route_class=ConsoleRoute)

CONNECT_PATH = f"{TWITCH_PATH}/connect"
DISCONNECT_PATH = f"{TWITCH_PATH}/disconnect"
#: Seconds a "Connect with Twitch" waits for Twitch's answer.
STATE_TTL_S = 600
#: The browser binding of a pending connect (HttpOnly, SameSite=Lax, Path=the callback).
BINDING_COOKIE = "wbr_twitch_connect"
#: Longest ``state`` / binding read from a request (ours are 43 characters).
_MAX_TOKEN_CHARS = 100


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


@router.post(CONNECT_PATH)
def connect(request: Request, form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    console = form.console
    settings = console.state.settings
    blocker = connect_blocker(settings)
    uri = redirect_uri(settings)
    if blocker is not None or uri is None:
        console.flash(f"Not connected: {blocker}.", "error")
        return see_other(TWITCH_PATH)
    state, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    pending = {"session": console.session.digest, "binding": _digest(binding)}
    console.state.redis.set(
        console.state.keys.console_twitch_state(_digest(state)), json.dumps(pending), ex=STATE_TTL_S, nx=True
    )
    scopes = scopes_for(console.state.rewards.twitch)
    with vault_of(console.state) as vault:
        target = vault.oauth.authorize_url(uri, scopes, state)
    console.audit("twitch connect", "twitch", "sent to Twitch", f"scopes: {' '.join(scopes) or 'none'}")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        BINDING_COOKIE,
        binding,
        max_age=STATE_TTL_S,
        path=CALLBACK_PATH,
        secure=is_https(request),
        httponly=True,
        samesite="lax",
    )
    return response


def _answer(request: Request, status_code: int, title: str, text: str, *, moved_on: bool = False) -> Response:
    """The callback's page (needs no session): what happened; ``moved_on``: it goes on to the Twitch page."""
    values = {"title": title, "text": text, "next_path": TWITCH_PATH if moved_on else ""}
    response = render_html("twitch_callback.html", values, status_code=status_code)
    response.delete_cookie(BINDING_COOKIE, path=CALLBACK_PATH, secure=is_https(request), httponly=True, samesite="lax")
    return response


_NOT_OURS = (
    "This answer from Twitch is not one the console is waiting for: used already, older than "
    f"{STATE_TTL_S // 60} minutes, or started in another browser or login. Nothing was stored. "
    "Open the Twitch page and press Connect with Twitch again."
)


@router.get(CALLBACK_PATH)
def callback(request: Request, state: Annotated[AppState, Depends(console_state)]) -> Response:
    query = request.query_params
    sent_state = query.get("state", "")[:_MAX_TOKEN_CHARS]
    raw = state.redis.getdel(state.keys.console_twitch_state(_digest(sent_state))) if sent_state else None
    pending = json.loads(raw) if isinstance(raw, str | bytes) else None
    binding = request.cookies.get(BINDING_COOKIE, "")[:_MAX_TOKEN_CHARS]
    store = session_store(state)
    if (
        not isinstance(pending, dict)
        or not binding
        or not hmac.compare_digest(_digest(binding), str(pending.get("binding", "")))
        or not store.alive(str(pending.get("session", "")))
    ):
        logger.warning("console: a Twitch connect callback was refused: its state is not a pending one of this browser")
        return _answer(request, 400, "Not connected", _NOT_OURS)
    session = str(pending["session"])
    actor = f"console:{session[:FINGERPRINT_HEX]}"
    error = query.get("error", "")
    if error:
        said = "declined" if error == "access_denied" else f"refused ({error[:60]})"
        state.audit.record(actor, "twitch connect", "twitch", said)
        text = f"Twitch says the authorization was {said}. Nothing was stored; connect again when ready."
        store.set_flash_for(session, Flash(text, "error"))
        return _answer(request, 400, "Not connected", text)
    code = query.get("code", "")
    uri = redirect_uri(state.settings)
    if not code or uri is None or connect_blocker(state.settings) is not None:
        return _answer(request, 400, "Not connected", "Twitch sent no authorization code. Nothing was stored.")
    with vault_of(state) as vault:
        try:
            stored, before = vault.connect(vault.oauth.exchange_code(code, uri))
        except InvalidAuthorizationCode:
            text = "Twitch refused the authorization code (used already or expired). Nothing was stored: connect again."
            return _refused(request, state, actor, session, 400, text)
        except OAuthUnavailable as exc:
            text = f"Twitch could not be reached or failed (HTTP {exc.status or 'no answer'}). Nothing was stored: "
            text += "try again in a moment."
            return _refused(request, state, actor, session, 502, text)
        except (WrongClient, NoEncryptionKey) as exc:
            return _refused(request, state, actor, session, 400, f"{exc}.")
        except (TwitchAuthError, TokenVaultError) as exc:
            text = f"Twitch refused (HTTP {exc.status or 'no answer'}). Nothing was stored: connect again."
            return _refused(request, state, actor, session, 400, text)
    replaced = f", replacing {before.login}" if before.user_id and before.user_id != stored.user_id else ""
    state.audit.record(actor, "twitch connect", "twitch", "connected", f"{stored.login} ({stored.user_id}){replaced}")
    text = f"Connected as {stored.login} ({stored.user_id}){replaced}."
    store.set_flash_for(session, Flash(text))
    return _answer(request, 200, "Twitch connected", text, moved_on=True)


def _refused(request: Request, state: AppState, actor: str, session: str, status: int, text: str) -> Response:
    logger.warning("console: connecting Twitch failed (HTTP %s answer)", status)
    state.audit.record(actor, "twitch connect", "twitch", "failed", text[:200])
    session_store(state).set_flash_for(session, Flash(text, "error"))
    return _answer(request, status, "Not connected", text)


@router.post(DISCONNECT_PATH)
def disconnect(form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    console = form.console
    if console.state.settings.twitch_client_id is None:
        console.flash("Nothing done: TWITCH_CLIENT_ID is not set, so Twitch cannot be asked to revoke.", "error")
        return see_other(TWITCH_PATH)
    with vault_of(console.state) as vault:
        try:
            gone = vault.disconnect()
        except (TwitchAuthError, TokenVaultError) as exc:
            console.audit("twitch disconnect", "twitch", "failed", str(exc)[:200])
            console.flash(f"Nothing removed: {exc}. Try again.", "error")
            return see_other(TWITCH_PATH)
    if gone is None:
        console.audit("twitch disconnect", "twitch", "nothing connected")
        console.flash("No channel was connected: nothing to do.")
    elif gone.revoked:
        console.audit("twitch disconnect", "twitch", "disconnected", f"{gone.login} ({gone.user_id})")
        console.flash(f"Disconnected {gone.login} ({gone.user_id}): its tokens were revoked at Twitch and deleted.")
    else:
        console.audit("twitch disconnect", "twitch", "forgotten", f"{gone.login} ({gone.user_id}), not revoked")
        console.flash(
            f"Forgot the tokens of {gone.login}: this key cannot read them, so Twitch was not asked to revoke them. "
            "Remove the app at twitch.tv/settings/connections.",
            "error",
        )
    return see_other(TWITCH_PATH)
