"""Group commit for webhook receivers: concurrent events share one create-script call.

Each event's grants, seen marker and counter are written atomically either
way (``worker.creation``); what batching saves is the per-call cost — one
client round trip and one script invocation for every event that arrived
while the previous call was in flight. Under a burst of notifications (a gift
bomb, Twitch resending a backlog) that was about a third of the receiver's
CPU per request (``BENCHMARKS.md``, Twitch ingest).

No event waits for company: the first one after a quiet spell is sent on the
next turn of the event loop, together with whatever else became ready in that
turn. A failed call fails every event in it with the same exception, so each
request answers 503 and its source retries; nothing was acknowledged. That
includes a call too few replicas confirmed (``worker.replication``): the
confirmation covers the whole call, so a batch waits for one ``WAIT``. An
event the script cannot answer (``MissingGrant``) fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis as AsyncRedis

from worker.creation import (
    BatchResult,
    EventRequest,
    MissingGrant,
    Planned,
    check_event,
    create_events_async,
    register_async,
)
from worker.keys import Keys
from worker.replication import NO_ACKS, ReplicaAcks

__all__ = ["MAX_EVENTS_PER_CALL", "CreationBatcher"]

#: Events per script call at most, so one call stays short (Redis runs scripts one at a time).
MAX_EVENTS_PER_CALL = 32

_Waiter = tuple[EventRequest, "asyncio.Future[BatchResult]"]


class CreationBatcher:
    """Creates each event's grants in one atomic step, sharing script calls between concurrent events."""

    def __init__(
        self,
        redis: AsyncRedis,
        keys: Keys,
        *,
        max_events_per_call: int = MAX_EVENTS_PER_CALL,
        acks: ReplicaAcks = NO_ACKS,
    ) -> None:
        self._redis = redis
        self._acks = acks
        self._script = register_async(redis)
        self._keys = keys
        self._max_events = max_events_per_call
        self._waiting: list[_Waiter] = []
        self._sender: asyncio.Task[None] | None = None
        #: script calls made, and the events they carried (tests read them).
        self.calls = 0
        self.events = 0

    async def create(self, planned: Sequence[Planned], *, seen_key: str = "", counter: str = "") -> BatchResult:
        """``worker.creation.create_grants`` for one event, possibly in the same call as others."""
        event = EventRequest(tuple(planned), seen_key, counter)
        check_event(event)  # a bad event fails alone, before it can share a call
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_waiting())
        return await future

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_events]
                del self._waiting[: self._max_events]
                await self._send(batch)
        except asyncio.CancelledError:  # shutting down: nobody may wait for a call that will not come
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._sender = None

    async def _send(self, batch: list[_Waiter]) -> None:
        self.calls += 1
        self.events += len(batch)
        try:
            results = await create_events_async(
                self._redis, self._script, self._keys, [event for event, _ in batch], acks=self._acks
            )
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 -- not swallowed: re-raised in every waiting request
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, results, strict=True):
            if future.done():
                continue  # its request was cancelled
            if isinstance(outcome, MissingGrant):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
