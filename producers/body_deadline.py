"""A deadline for each request's body: a sender that trickles it is answered 408 and cut off.

Without it a client sending one byte every few seconds holds a connection (and
a slot of the server) for as long as it likes; 300 of them hold 300. The ASGI
middleware ``BodyDeadline`` wraps ``receive``: every body chunk must arrive
before ``timeout_s`` after the request started. When the deadline passes, the
read raises ``HTTPException(408)`` (with ``Connection: close``, so the server
drops the half-read connection); FastAPI's body reading and
``producers.request_body.read_capped_body`` let that through, and the app
answers it like any other error. Requests that never read their body (a 401
before the body) are not held by it at all.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BODY_TIMEOUT_S", "BodyDeadline"]

#: Seconds a request's whole body may take to arrive. Twitch, Patreon and API callers send a few KiB at once;
#: ten seconds is generous even for a slow mobile link and bounds what a trickling sender can hold.
BODY_TIMEOUT_S = 10.0


class BodyDeadline:
    """ASGI middleware: ``receive`` fails with 408 once the body has taken longer than ``timeout_s``."""

    def __init__(self, app: ASGIApp, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    status.HTTP_408_REQUEST_TIMEOUT,
                    f"request body not received within {self.timeout_s:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)
