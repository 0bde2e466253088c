"""Logging in and out of the console, and its stylesheet (the only parts reachable without a session).

The login form is protected by a double-submit token: ``GET /console/login`` sets a random
value in a cookie of its own and in the form; a POST without the two matching is refused, so
another site cannot log a browser in behind the operator's back. A wrong token costs the
sender time: every failure waits ``login_delay_s`` (about a second, doubling after a few
failures from the same client address within ``FAILURE_WINDOW_S``) before the answer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from importlib import resources
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from admin.console.context import (
    BASE,
    COOKIE,
    ConsoleForm,
    console_form,
    console_state,
    see_other,
    session_store,
)
from admin.console.forms import read_form
from admin.console.rendering import render_html
from admin.console.route import ConsoleRoute
from producers.state import AppState

__all__ = ["LOGIN_COOKIE", "login_delay_s", "router"]

logger = logging.getLogger("wetbot_rewards.console")

router = APIRouter(route_class=ConsoleRoute)

#: The login form's double-submit cookie (Path=/console/login).
LOGIN_COOKIE = "wbr_console_login"
LOGIN_PATH = f"{BASE}/login"
#: Seconds a login form stays usable.
LOGIN_FORM_MAX_AGE_S = 3600
#: Seconds failures from one address are counted over.
FAILURE_WINDOW_S = 900
#: Failures within the window answered after the base delay; after that each one doubles it.
FREE_FAILURES = 3
BASE_DELAY_S = 1.0
MAX_DELAY_S = 16.0
#: Messages the login page shows for ``?msg=`` (a code, so nothing typed by anyone is echoed).
LOGIN_MESSAGES = {"logged-out": "You are logged out."}


def login_delay_s(failures: int) -> float:
    """Seconds to wait before answering the ``failures``-th wrong token within the window."""
    return min(MAX_DELAY_S, BASE_DELAY_S * float(2 ** max(0, failures - FREE_FAILURES)))


def is_https(request: Request) -> bool:
    """The browser talks https: directly, or through the proxy (Caddy sets ``X-Forwarded-Proto: https``)."""
    forwarded = request.headers.get("x-forwarded-proto", "").partition(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _login_form(request: Request, *, message: str = "", kind: str = "", status_code: int = 200) -> Response:
    form_token = request.cookies.get(LOGIN_COOKIE, "")
    if not (20 <= len(form_token) <= 100 and form_token.replace("-", "").replace("_", "").isalnum()):
        form_token = secrets.token_urlsafe(24)
    response = render_html(
        "login.html", {"csrf": form_token, "message": message, "kind": kind}, status_code=status_code
    )
    response.set_cookie(
        LOGIN_COOKIE,
        form_token,
        max_age=LOGIN_FORM_MAX_AGE_S,
        path=LOGIN_PATH,
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get(LOGIN_PATH)
def login_form(request: Request, state: Annotated[AppState, Depends(console_state)]) -> Response:
    """The login form (an operator already logged in goes straight to the overview)."""
    if session_store(state).get(request.cookies.get(COOKIE)) is not None:
        return see_other(BASE)
    code = request.query_params.get("msg", "")
    return _login_form(request, message=LOGIN_MESSAGES.get(code, ""), kind="ok")


@router.post(LOGIN_PATH)
async def login(request: Request, state: Annotated[AppState, Depends(console_state)]) -> Response:
    """Check the token (constant time); right: a new session and its cookie; wrong: slowed, then 401."""
    fields = await read_form(request)
    cookie_token = request.cookies.get(LOGIN_COOKIE, "")
    sent_token = fields.get("csrf", "")
    if not cookie_token or not hmac.compare_digest(cookie_token.encode(), sent_token.encode()):
        return _login_form(
            request, message="The login form had expired. Please try again.", kind="error", status_code=403
        )
    expected = cast(str, state.settings.console_token and state.settings.console_token.get_secret_value())
    client = request.client.host if request.client else "unknown"
    if not hmac.compare_digest(fields.get("token", "").encode(), expected.encode()):
        failures = await run_in_threadpool(_count_failure, state, client)
        await run_in_threadpool(state.audit.record, "console:-", "login", "", "refused", f"wrong token from {client}")
        logger.warning("console: wrong token from %s (%d in %ds)", client, failures, FAILURE_WINDOW_S)
        await asyncio.sleep(login_delay_s(failures))
        return _login_form(
            request,
            message="That is not the admin token. Check ADMIN_TOKEN and try again.",
            kind="error",
            status_code=401,
        )
    store = session_store(state)
    cookie_value, session = await run_in_threadpool(store.create)
    await run_in_threadpool(state.redis.delete, state.keys.console_login_failures(client))
    await run_in_threadpool(state.audit.record, session.actor, "login", "", "ok", f"from {client}")
    response = see_other(BASE)
    response.set_cookie(
        COOKIE,
        cookie_value,
        max_age=store.max_age_s,
        path=BASE,
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH, secure=is_https(request), httponly=True, samesite="strict")
    return response


def _count_failure(state: AppState, client: str) -> int:
    key = state.keys.console_login_failures(client[:100])
    with state.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, FAILURE_WINDOW_S)
        count, _ = pipe.execute()
    return int(count)


@router.post(f"{BASE}/logout")
def logout(request: Request, form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    """End the session (its cookie is refused from now on) and clear the cookie."""
    console = form.console
    console.store.end(console.session)
    console.audit("logout", "", "ok")
    response = see_other(f"{LOGIN_PATH}?msg=logged-out")
    response.delete_cookie(COOKIE, path=BASE, secure=is_https(request), httponly=True, samesite="strict")
    return response


_CSS = resources.files("admin.console").joinpath("static/console.css").read_text(encoding="utf-8")


@router.get(f"{BASE}/console.css")
def stylesheet() -> Response:
    """The console's one stylesheet (public: the login page needs it)."""
    return Response(_CSS, media_type="text/css")
