"""Group commit: concurrent requests of one kind share one Redis script call.

What batching saves is the per-call cost — one client round trip and one
script invocation for every request that arrived while the previous call was
in flight. No request waits for company: the first one after a quiet spell is
sent on the next turn of the event loop, with whatever else became ready in
that turn. A failed call fails every request in it with the same exception
(each answers 503; nothing was acknowledged); a request the call answers with
an exception fails alone. Used by ``CreationBatcher`` (grants) and
``EventInbox`` (the event inbox).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["MAX_PER_CALL", "GroupCommit"]

#: Requests per script call at most, so one call stays short (Redis runs scripts one at a time).
MAX_PER_CALL = 32

Request = TypeVar("Request")
Result = TypeVar("Result")


class GroupCommit(Generic[Request, Result]):
    """Sends requests through ``send``, as many per call as are waiting (at most ``max_per_call``).

    ``send`` gets a batch and returns one result per request, in order; a result that is an
    exception is raised in its own request only.
    """

    def __init__(
        self,
        send: Callable[[list[Request]], Awaitable[Sequence[Result | Exception]]],
        *,
        max_per_call: int = MAX_PER_CALL,
    ) -> None:
        self._send_batch = send
        self._max = max_per_call
        self._waiting: list[tuple[Request, asyncio.Future[Result]]] = []
        self._sender: asyncio.Task[None] | None = None
        #: script calls made, and the requests they carried (tests read them).
        self.calls = 0
        self.requests = 0

    async def submit(self, request: Request) -> Result:
        """``request``'s result, possibly from the same call as others'."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_waiting())
        return await future

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max]
                del self._waiting[: self._max]
                await self._send(batch)
        except asyncio.CancelledError:  # shutting down: nobody may wait for a call that will not come
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._sender = None

    async def _send(self, batch: list[tuple[Request, asyncio.Future[Result]]]) -> None:
        self.calls += 1
        self.requests += len(batch)
        try:
            results = await self._send_batch([request for request, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 -- not swallowed: re-raised in every waiting request
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its request was cancelled
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
