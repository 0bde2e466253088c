"""``ConsoleRoute``: every console answer gets the security headers, and every refusal a readable page.

Console routes answer HTML, also when they refuse: the app's JSON error handlers
(``producers.errors``) are for API clients, so an ``HTTPException``, a ``ConsoleRefusal``
or Redis being away is turned into a page here, inside the route. So is an action
the Redis replicas did not confirm (``producers.unconfirmed``): a page saying so,
never the flash of a "done". A value that breaks its rule (``config.domain.InvalidInput``: a
query parameter or form field) is a 400 page naming the field. Anything else is a bug: a 500 page
of the console's own kind, the exception logged and reported to Sentry once (here, since the
route answers it and the app's handlers never see it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import sentry_sdk
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from redis import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from admin.console.context import ConsoleOff, ConsoleRefusal, CsrfRefused, NeedSession, see_other
from admin.console.rendering import render_html
from config.domain import InvalidInput
from producers.unconfirmed import ActionUnconfirmed
from worker.replication import NotReplicated

__all__ = ["FORM_ACTION_ORIGIN", "SECURITY_HEADERS", "ConsoleRoute", "message_page"]

logger = logging.getLogger("wetbot_rewards.console")

#: The ``request.state`` attribute a page sets to let its forms lead to one more origin (``form-action``):
#: the Twitch page's *Connect with Twitch* form is answered with a redirect to Twitch, which browsers check
#: against the page's ``form-action``.
FORM_ACTION_ORIGIN = "console_form_action_origin"

#: On every console answer. No script runs anywhere in the console, so the policy allows none.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def message_page(status_code: int, title: str, text: str, *, login_link: bool = False) -> Response:
    """A page of its own (no session needed) saying what happened and what to do."""
    values = {"title": title, "text": text, "login_link": login_link}
    return render_html("message.html", values, status_code=status_code)


def _refusal_page(request: Request, exc: ConsoleRefusal) -> Response:
    if isinstance(exc, ConsoleOff):
        return message_page(
            503,
            "The console is off",
            "Set ADMIN_TOKEN (or GRANTS_API_TOKEN) on the server, restart the web process, then log in here.",
        )
    if isinstance(exc, NeedSession):
        if request.method in ("GET", "HEAD"):
            return see_other("/console/login")
        return message_page(403, "Not logged in", "Your login has ended. Log in again, then repeat.", login_link=True)
    if isinstance(exc, CsrfRefused):
        return message_page(
            403,
            "Form refused",
            "This form did not come from your current console page (or the page is too old). Nothing was done. "
            "Go back, reload the page and try again.",
        )
    return message_page(403, "Refused", "Nothing was done.")


def _unconfirmed_page(request: Request, exc: NotReplicated) -> Response:
    """503 "could not be confirmed": the action is not reported done; repeating it is safe."""
    logger.warning("console: %s %s: not confirmed by the Redis replicas: %s", request.method, request.url.path, exc)
    text = (
        exc.message
        if isinstance(exc, ActionUnconfirmed)
        else f"Redis replicas did not confirm this ({exc}); it is not reported done. Go back and try again."
    )
    return message_page(503, "Could not be confirmed", text[:1].upper() + text[1:] + ".")


def _first_problem(exc: RequestValidationError) -> str:
    """``<field>: <message>`` of the first problem FastAPI found in the query or the form."""
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "body", "path"))
        return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))
    return "invalid request"


def _bug_page(request: Request, exc: Exception) -> Response:
    """500: the console's own page; the exception goes to the log and, once, to Sentry (when configured)."""
    logger.error("console: %s %s failed", request.method, request.url.path, exc_info=exc)
    sentry_sdk.capture_exception(exc)
    return message_page(
        500,
        "Something went wrong",
        "The console hit an unexpected error; it has been logged. Nothing is known to be done: "
        "look at the grant or event again before repeating.",
    )


class ConsoleRoute(APIRoute):
    """Use as ``APIRouter(route_class=ConsoleRoute)`` for every console router."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except ConsoleRefusal as exc:
                response = _refusal_page(request, exc)
            except StarletteHTTPException as exc:
                response = message_page(exc.status_code, "Request refused", str(exc.detail))
                response.headers.update(exc.headers or {})
            except NotReplicated as exc:
                response = _unconfirmed_page(request, exc)
            except RedisError as exc:
                logger.error(
                    "console: %s %s: storage unavailable: %s", request.method, request.url.path, type(exc).__name__
                )
                response = message_page(
                    503, "Storage unavailable", "Redis does not answer right now; nothing was done. Try again soon."
                )
            except RequestValidationError as exc:
                response = message_page(400, "Request not understood", f"{_first_problem(exc)}. Nothing was done.")
            except InvalidInput as exc:
                response = message_page(400, "Request not understood", f"{exc}. Nothing was done.")
            except Exception as exc:  # noqa: BLE001 -- a bug: answered as a page, logged, reported
                response = _bug_page(request, exc)
            response.headers.update(SECURITY_HEADERS)
            extra = getattr(request.state, FORM_ACTION_ORIGIN, "")
            if extra:
                policy = SECURITY_HEADERS["Content-Security-Policy"]
                response.headers["Content-Security-Policy"] = policy.replace(
                    "form-action 'self'", f"form-action 'self' {extra}"
                )
            return response

        return handler
