"""The route class of the token-protected API: check the caller before reading a byte of the body.

FastAPI reads and parses a route's body before it solves its dependencies, so
a ``Depends(require_token)`` ran only after a 200 MiB body had been read and
parsed. ``GuardedRoute`` checks, in this order and before FastAPI sees the
request: the bearer token (``require_token``), that a body is JSON
(``Content-Type``; 415 with a hint otherwise), and its size (413 beyond
``API_MAX_BODY_BYTES``, read with ``read_capped_body``). The body read is then
handed to FastAPI as if it had just arrived. A slow body is cut by
``producers.body_deadline``.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from starlette.types import Message

from producers.api.auth import require_admin_token, require_token
from producers.errors import JSON_HINT
from producers.request_body import read_capped_body
from producers.state import AppState, app_state

__all__ = ["API_MAX_BODY_BYTES", "AdminRoute", "GuardedRoute"]

#: Largest body of ``POST /grants`` or ``/links``, in bytes: a grant of 50 items with long ids and a
#: 500-character reason is under 10 KiB, so 64 KiB leaves room and still bounds what one request costs.
API_MAX_BODY_BYTES = 64 * 1024


class GuardedRoute(APIRoute):
    """An ``APIRoute`` that requires the bearer token first and reads at most ``API_MAX_BODY_BYTES`` of JSON."""

    @staticmethod
    def check_caller(request: Request, state: AppState) -> None:
        require_token(request, state)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def guarded(request: Request) -> Response:
            self.check_caller(request, app_state(request))
            if takes_body:
                _require_json(request)
                body = await read_capped_body(request, API_MAX_BODY_BYTES)
                request = Request(request.scope, _replay(body, request))
            return await handler(request)

        return guarded


class AdminRoute(GuardedRoute):
    """``GuardedRoute`` for the operator API: the bearer token is ``ADMIN_TOKEN`` (``Settings.console_token``)."""

    @staticmethod
    def check_caller(request: Request, state: AppState) -> None:
        require_admin_token(request, state)


def _require_json(request: Request) -> None:
    """415 for a body that does not say it is JSON (a form-encoded ``curl -d`` is the usual one)."""
    declared = request.headers.get("content-type")
    if declared is None:
        if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
            return  # no body: FastAPI reports the missing fields
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"body has no Content-Type; {JSON_HINT}")
    message = email.message.Message()
    message["content-type"] = declared
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"body is {message.get_content_type()}, not JSON; {JSON_HINT}"
        )


def _replay(body: bytes, request: Request) -> Callable[[], Coroutine[Any, Any, Message]]:
    """An ASGI ``receive`` that yields ``body`` once, then waits on the real one (for the disconnect)."""
    pending = True

    async def receive() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return receive
