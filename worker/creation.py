"""Creating grants: one atomic script for a batch (``lua/create_grants.lua``), from sync or async code.

A producer hands over everything one event yields — the grants, how each is to
be queued, the webhook's "seen" marker and its counter — and Redis does it in
one step. With ``Mode.ENQUEUE``/``Mode.RESOLVE`` the Dramatiq message is written
in that same step, so no crash can leave a grant without its message, and a
webhook costs one round trip.

Writing the message ourselves follows the Redis broker's storage (a hash of
encoded messages and a list of their ids, research/dramatiq.md §4); the
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

from worker.broker import QUEUE_NAME, encoded_message
from worker.keys import IDEMPOTENCY_TTL_S, SEEN_TTL_S, Keys
from worker.ledger import CreateResult, GrantState, NewGrant, grant_from_hash
from worker.scripts import load_script, script_source

#: ``worker/lua/create_grants.lua``
SCRIPT = "create_grants"


class Mode(StrEnum):
    """How a new grant is to be queued."""

    #: queued, with its Dramatiq message written in the same step.
    ENQUEUE = "enqueue"
    #: queued, with an outbox marker: the caller enqueues it and clears the marker.
    OUTBOX = "outbox"
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


def build_request(
    keys: Keys, planned: Sequence[Planned], *, seen_key: str = "", counter: str = "", now: float | None = None
) -> str:
    """The script's JSON request (pure: no I/O)."""
    now = time.time() if now is None else now
    grants = []
    for item in planned:
        new = item.new
        if item.mode in (Mode.PARK, Mode.RESOLVE) and not (new.platform and new.external_id):
            raise ValueError("a grant that may park needs platform and external_id")
        grant_id = uuid.uuid4().hex
        message_id, message = encoded_message(grant_id)
        grants.append(
            {
                "id": grant_id,
                "idem": new.idempotency_key,
                "mode": item.mode.value,
                "fields": _fields(new, grant_id, now),
                "platform": new.platform,
                "external_id": new.external_id,
                "static_user": item.static_user,
                "reason": f"created by {new.source}",
                "message_id": message_id,
                "message": message,
            }
        )
    request = {
        "prefix": keys.prefix,
        "queue": f"{keys.dramatiq_namespace}:{QUEUE_NAME}",
        "now": now,
        "idem_ttl": IDEMPOTENCY_TTL_S,
        "seen": seen_key,
        "seen_ttl": SEEN_TTL_S,
        "counter": counter,
        "grants": grants,
    }
    return json.dumps(request)


def parse_reply(reply: bytes | str) -> BatchResult:
    """The script's JSON answer as ``CreateResult``s, in request order."""
    data = json.loads(reply)
    results = []
    for entry in data.get("grants") or []:
        raw = entry.get("hash") or {}
        if not raw:
            raise LookupError(f"an idempotency key names a missing grant {entry.get('id')}")
        grant = grant_from_hash({str(k).encode(): str(v).encode() for k, v in raw.items()})
        created, in_outbox = bool(entry["created"]), bool(entry["in_outbox"])
        results.append(CreateResult(grant=grant, created=created, needs_enqueue=in_outbox))
    return BatchResult(seen=bool(data.get("seen")), results=tuple(results))


def create_grants(
    redis: Redis, keys: Keys, planned: Sequence[Planned], *, seen_key: str = "", counter: str = ""
) -> BatchResult:
    """Create ``planned`` (and mark ``seen_key``, count ``counter``) in one atomic step."""
    script = load_script(redis, SCRIPT)
    reply: Any = script(args=[build_request(keys, planned, seen_key=seen_key, counter=counter)])
    return parse_reply(reply)


async def create_grants_async(
    redis: AsyncRedis, keys: Keys, planned: Sequence[Planned], *, seen_key: str = "", counter: str = ""
) -> BatchResult:
    """``create_grants`` for asyncio code (webhook receivers): no thread hop, one round trip."""
    request = build_request(keys, planned, seen_key=seen_key, counter=counter)
    script = redis.register_script(script_source(SCRIPT))
    return parse_reply(await script(args=[request]))


def _fields(new: NewGrant, grant_id: str, now: float) -> list[str]:
    fields = {
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
        "attempts": "0",
        "failures": "0",
        "last_error": "",
        "created_at": repr(now),
        "updated_at": repr(now),
    }
    return [part for pair in fields.items() for part in pair]
