"""Creating grants: one atomic script for a batch (``lua/create_grants.lua``), from sync or async code.

A producer hands over everything one event yields — the grants, how each is to
be queued, the webhook's "seen" marker and its counter — and Redis does it in
one step. Asyncio receivers hand several events to one call
(``producers.creation_batcher``); each is handled as if alone. With
``Mode.ENQUEUE``/``Mode.RESOLVE`` the Dramatiq message is written in that same
step, so no crash can leave a grant without its message, and a webhook costs
one round trip; so is a wake token per message, which an idle worker is
waiting for (``worker.pickup``).

With replicas to wait for (``worker.replication``), the script and a ``WAIT``
travel together: a producer answers 2xx only once a replica has the grant, so
a failover cannot lose what a source was told is queued.

Writing the message ourselves follows the Redis broker's storage (a hash of
encoded messages and a list of their ids, docs/dramatiq.md §4); the
message itself is encoded by Dramatiq (``broker.encoded_message``). Tests with
real workers guard the coupling, and dramatiq is pinned below 3.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript

from config.errors import WetbotRewardsError
from worker.broker import DISPATCH_TTL_S, QUEUE_NAME, encoded_message
from worker.grant import CreateResult, GrantState, NewGrant, grant_from_fields
from worker.grant_index import grant_terms
from worker.keys import IDEMPOTENCY_TTL_S, SEEN_TTL_S, WAKE_TOKENS_MAX, Keys, wake_key
from worker.replication import NO_ACKS, ReplicaAcks, run_confirmed, run_confirmed_async
from worker.schedule import CREATE_INFLIGHT_CAP
from worker.scripts import load_script, script_source

#: ``worker/lua/create_grants.lua``
SCRIPT = "create_grants"


class Mode(StrEnum):
    """How a new grant is to be queued."""

    #: queued, with its Dramatiq message written in the same step.
    ENQUEUE = "enqueue"
    #: queued and due now, without a message: a worker's reconciler dispatches it (``worker.schedule``).
    SCHEDULE = "schedule"
    #: parked until ``platform``/``external_id`` is linked.
    PARK = "park"
    #: ENQUEUE for the linked Discord user (run-time link, else ``static_user``), or PARK without one.
    RESOLVE = "resolve"


@dataclass(frozen=True)
class Planned:
    """One grant to create, and how."""

    new: NewGrant
    mode: Mode
    #: the rewards file's link for RESOLVE (a run-time link wins over it).
    static_user: str = ""


@dataclass(frozen=True)
class BatchResult:
    """``seen`` is True when the webhook delivery was handled before (nothing was done)."""

    seen: bool
    results: tuple[CreateResult, ...]


@dataclass(frozen=True)
class EventRequest:
    """One producer event: its grants, the "seen" marker of its delivery and its counter (both optional)."""

    planned: tuple[Planned, ...]
    seen_key: str = ""
    counter: str = ""


#: A new grant's ledger fields as the request carries them, kept to build its ``Grant`` when the script creates it.
_Sent = dict[str, str]


def check_event(event: EventRequest) -> None:
    """Raise ``ValueError`` when the script could not carry out ``event`` as asked."""
    for item in event.planned:
        if item.mode in (Mode.PARK, Mode.RESOLVE) and not (item.new.platform and item.new.external_id):
            raise ValueError("a grant that may park needs platform and external_id")


def build_request(
    keys: Keys, events: Sequence[EventRequest], *, now: float | None = None
) -> tuple[str, list[list[_Sent]]]:
    """The script's JSON request (pure: no I/O), and what was sent per event for ``parse_reply``.

    Callers check each event first (``check_event``).
    """
    now = time.time() if now is None else now
    encoded_events = []
    sent_per_event = []
    for event in events:
        grants = []
        sent = []
        for item in event.planned:
            new = item.new
            grant_id = uuid.uuid4().hex
            token = uuid.uuid4().hex
            message_id, message = encoded_message(grant_id, token)
            fields = _fields(new, grant_id, now)
            grants.append(
                {
                    "id": grant_id,
                    "idem": new.idempotency_key,
                    "keep_claim": new.keep_claim,
                    "mode": item.mode.value,
                    "fields": [part for pair in fields.items() for part in pair],
                    "guild": new.guild_id,
                    "user": new.user_id,
                    "platform": new.platform,
                    "external_id": new.external_id,
                    "static_user": item.static_user,
                    "reason": f"created by {new.source}",
                    "message_id": message_id,
                    "message": message,
                    "token": token,
                    "source": new.source,
                    "terms": grant_terms(new),
                }
            )
            sent.append(fields)
        encoded_events.append({"seen": event.seen_key, "counter": event.counter, "grants": grants})
        sent_per_event.append(sent)
    request = {
        "prefix": keys.prefix,
        "queue": f"{keys.dramatiq_namespace}:{QUEUE_NAME}",
        "wake": wake_key(keys.dramatiq_namespace, QUEUE_NAME),
        "wake_max": WAKE_TOKENS_MAX,
        "now": now,
        "idem_ttl": IDEMPOTENCY_TTL_S,
        "seen_ttl": SEEN_TTL_S,
        "dispatch_ttl_ms": int(DISPATCH_TTL_S * 1000),
        "inflight_cap": CREATE_INFLIGHT_CAP,
        "member_mark_ms": int(DISPATCH_TTL_S * 1000),
        "events": encoded_events,
    }
    return json.dumps(request), sent_per_event


class MissingGrant(WetbotRewardsError, LookupError):
    """Raised (or returned, by ``parse_reply``) when an idempotency key names a grant whose record is gone
    (deleted by hand): that event cannot be answered."""


def parse_reply(reply: bytes | str, sent_per_event: Sequence[Sequence[_Sent]]) -> list[BatchResult | MissingGrant]:
    """The script's JSON answer: per event a ``BatchResult`` (its ``CreateResult``s in request order) or the
    ``MissingGrant`` that keeps it from one; one event's error leaves the others' results intact."""
    answers = json.loads(reply)["events"]
    return [_event_result(answer, sent) for answer, sent in zip(answers, sent_per_event, strict=True)]


def _event_result(answer: dict[str, Any], sent: Sequence[_Sent]) -> BatchResult | MissingGrant:
    if answer["seen"]:
        return BatchResult(seen=True, results=())
    entries = answer["grants"] or []  # cjson writes an empty list as {}
    results = []
    for entry, mine in zip(entries, sent, strict=True):
        if entry["created"]:
            fields = dict(mine, state=entry["state"])
            if entry["user_id"]:
                fields["user_id"] = entry["user_id"]
            grant = grant_from_fields(fields)
        else:
            raw = entry["hash"] or {}
            if not raw:
                return MissingGrant(f"an idempotency key names a missing grant {entry['id']}")
            grant = grant_from_fields({str(k): str(v) for k, v in raw.items()})
        results.append(CreateResult(grant=grant, created=bool(entry["created"])))
    return BatchResult(seen=False, results=tuple(results))


def create_grants(
    redis: Redis,
    keys: Keys,
    planned: Sequence[Planned],
    *,
    seen_key: str = "",
    counter: str = "",
    acks: ReplicaAcks = NO_ACKS,
) -> BatchResult:
    """Create ``planned`` (and mark ``seen_key``, count ``counter``) in one atomic step, confirmed by ``acks``.

    Raises:
      MissingGrant: an idempotency key names a grant whose record was deleted.
      NotReplicated: too few replicas confirmed it (the grants may exist on the primary; a retry finds them).
    """
    event = EventRequest(tuple(planned), seen_key, counter)
    check_event(event)
    request, sent = build_request(keys, [event])
    # The barrier: a create that finds its grants made already (a retry) writes nothing of its own.
    barrier = keys.replication_barrier()
    reply: Any = run_confirmed(redis, load_script(redis, SCRIPT), acks, args=[request], barrier=barrier)
    outcome = parse_reply(reply, sent)[0]
    if isinstance(outcome, MissingGrant):
        raise outcome
    return outcome


async def create_events_async(
    redis: AsyncRedis,
    script: AsyncScript,
    keys: Keys,
    events: Sequence[EventRequest],
    *,
    acks: ReplicaAcks = NO_ACKS,
) -> list[BatchResult | MissingGrant]:
    """Several events in one atomic step from asyncio code (see ``producers.creation_batcher``).

    ``script`` is ``create_grants.lua`` registered on ``redis`` (``register_async``); each event
    was checked (``check_event``) when it was handed over.

    Raises:
      NotReplicated: too few replicas confirmed the step.
    """
    request, sent = build_request(keys, events)
    reply: Any = await run_confirmed_async(redis, script, acks, args=[request], barrier=keys.replication_barrier())
    return parse_reply(reply, sent)


def register_async(redis: AsyncRedis) -> AsyncScript:
    """``create_grants.lua`` registered on an asyncio client (keep it: registering hashes the source)."""
    return redis.register_script(script_source(SCRIPT))


def _fields(new: NewGrant, grant_id: str, now: float) -> dict[str, str]:
    return {
        "id": grant_id,
        "state": GrantState.QUEUED.value,
        "guild_id": new.guild_id,
        "user_id": new.user_id,
        "items": json.dumps([[item.item_id, item.amount] for item in new.items]),
        "source": new.source,
        "source_ref": new.source_ref,
        "rule": new.rule,
        "reason": new.reason,
        "idempotency_key": new.idempotency_key,
        "platform": new.platform,
        "external_id": new.external_id,
        "names": json.dumps(list(new.names)) if new.names else "",
        "attempts": "0",
        "failures": "0",
        "last_error": "",
        "created_at": repr(now),
        "updated_at": repr(now),
    }
