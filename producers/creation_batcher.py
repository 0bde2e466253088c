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

from collections.abc import Sequence

from redis.asyncio import Redis as AsyncRedis

from producers.group_commit import MAX_PER_CALL, GroupCommit
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
MAX_EVENTS_PER_CALL = MAX_PER_CALL


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
        self._group: GroupCommit[EventRequest, BatchResult] = GroupCommit(self._send, max_per_call=max_events_per_call)

    @property
    def calls(self) -> int:
        """Script calls made (tests read it)."""
        return self._group.calls

    @property
    def events(self) -> int:
        """Events the calls carried (tests read it)."""
        return self._group.requests

    async def create(self, planned: Sequence[Planned], *, seen_key: str = "", counter: str = "") -> BatchResult:
        """``worker.creation.create_grants`` for one event, possibly in the same call as others."""
        event = EventRequest(tuple(planned), seen_key, counter)
        check_event(event)  # a bad event fails alone, before it can share a call
        return await self._group.submit(event)

    async def _send(self, events: list[EventRequest]) -> Sequence[BatchResult | MissingGrant]:
        return await create_events_async(self._redis, self._script, self._keys, events, acks=self._acks)
