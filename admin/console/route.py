"""``ConsoleRoute``: every console answer gets the security headers, and every refusal a readable page.

Console routes answer HTML, also when they refuse: the app's JSON error handlers
(``producers.errors``) are for API clients, so an ``HTTPException``, a ``ConsoleRefusal``
or Redis being away is turned into a page here, inside the route. So is an action
the Redis replicas did not confirm (``producers.unconfirmed``): a page saying so,
never the flash of a "done".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from redis import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from admin.console.context import ConsoleOff, ConsoleRefusal, CsrfRefused, NeedSession, see_other
from admin.console.rendering import render_html
from producers.unconfirmed import ActionUnconfirmed
from worker.replication import NotReplicated

__all__ = ["SECURITY_HEADERS", "ConsoleRoute", "message_page"]

logger = logging.getLogger("wetbot_rewards.console")

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
            response.headers.update(SECURITY_HEADERS)
            return response

        return handler
