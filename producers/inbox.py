"""The event inbox: every verified webhook delivery, kept with what handling it did.

A signed event the rules cannot read (a missing field, an id in an unexpected
shape) must not be refused: Twitch revokes a subscription after repeated
failures and Patreon pauses the whole webhook, so one odd event would stop
every supporter's rewards. So a verified delivery is handled, then kept with
its outcome in one atomic step (``record``), and the source gets a 2xx
whatever the rules made of it. Until that step is done the source has no
answer and delivers again, so no verified event is lost to a crash, and the
step costs one round trip on the hot path. An operator can fix the rules or
links and re-process an event (``admin.reprocess``): the handlers derive
the same idempotency keys from the same body, so re-processing can never
grant twice.

Ids are derived from the source's own delivery id (Twitch's message id; for
Patreon, which has none, a digest of trigger and body), so a redelivery lands
on the same entry. Headers are kept from an allow-list: never a signature.
Entries are deleted ``EVENT_RETENTION_S`` after they were received, by the
worker's retention thread (``worker.retention.trim_events``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from producers.group_commit import GroupCommit
from worker import redis_values as values
from worker.grant import Grant, GrantState
from worker.keys import Keys
from worker.scripts import script_source

__all__ = ["EventInbox", "EventOutcome", "InboxEvent", "Outcome", "event_id", "grants_outcome"]

#: Headers kept with an event (lower case). Signatures are never kept.
KEPT_HEADERS = frozenset(
    {
        "content-type",
        "user-agent",
        "twitch-eventsub-message-id",
        "twitch-eventsub-message-type",
        "twitch-eventsub-message-timestamp",
        "twitch-eventsub-message-retry",
        "twitch-eventsub-subscription-type",
        "twitch-eventsub-subscription-version",
        "x-patreon-event",
    }
)
#: Longest header value kept, in characters.
MAX_HEADER_CHARS = 300


class Outcome(StrEnum):
    """What handling an event did."""

    #: grants were made (or found made) and queued.
    GRANTED = "granted"
    #: grants were made for users with no Discord link yet: they wait for the link.
    PARKED = "parked"
    #: nothing to grant (no rule, a rule's condition not met): ``ignored`` says why.
    IGNORED = "ignored"
    #: an earlier delivery of the same event was handled.
    DUPLICATE = "duplicate"
    #: signed, but the rules cannot read it: ``error`` says why; fix, then re-process.
    UNUSABLE = "unusable"
    #: Twitch revoked a subscription.
    REVOCATION = "revocation"
    #: Twitch's subscription challenge, answered.
    VERIFICATION = "verification"
    #: the Patreon portal's test payload (never granted).
    TEST = "test"


@dataclass(frozen=True)
class EventOutcome:
    """The outcome of one handling, as recorded and as answered to the source (``answer``)."""

    outcome: Outcome
    granted: tuple[str, ...] = ()
    parked: tuple[str, ...] = ()
    ignored: str = ""
    error: str = ""
    #: other facts worth showing (Patreon: revoked, held, released...).
    notes: tuple[str, ...] = ()

    def detail(self) -> dict[str, Any]:
        """The non-empty parts, for the webhook's answer and the inbox entry."""
        out: dict[str, Any] = {"outcome": self.outcome.value}
        if self.granted:
            out["granted"] = list(self.granted)
        if self.parked:
            out["parked"] = list(self.parked)
        if self.ignored:
            out["ignored"] = self.ignored
        if self.error:
            out["error"] = self.error
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> EventOutcome:
        return cls(
            Outcome(detail["outcome"]),
            granted=tuple(detail.get("granted", ())),
            parked=tuple(detail.get("parked", ())),
            ignored=str(detail.get("ignored", "")),
            error=str(detail.get("error", "")),
            notes=tuple(detail.get("notes", ())),
        )


def grants_outcome(grants: Sequence[Grant], *, notes: tuple[str, ...] = ()) -> EventOutcome:
    """``granted`` (queued or further along) and ``parked`` ids of what an event made or found made."""
    parked = tuple(grant.id for grant in grants if grant.state == GrantState.PARKED)
    granted = tuple(grant.id for grant in grants if grant.state != GrantState.PARKED)
    return EventOutcome(Outcome.GRANTED if granted else Outcome.PARKED, granted=granted, parked=parked, notes=notes)


@dataclass(frozen=True)
class InboxEvent:
    """One kept delivery."""

    id: str
    source: str
    kind: str
    ref: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    deliveries: int
    outcome: EventOutcome
    reprocessed: int = 0
    #: epoch seconds of the first handling that made or found grants (None: none did).
    acted_at: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The entry without its body, for lists and JSON output."""
        return {
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "ref": self.ref,
            "received_at": self.received_at,
            "deliveries": self.deliveries,
            "reprocessed": self.reprocessed,
            **self.outcome.detail(),
        }


@dataclass(frozen=True)
class Recorded:
    """What ``record`` left on the entry: its id, its outcome now, and whether this call made it unusable
    for the first time (report it then, once)."""

    id: str
    outcome: Outcome
    first_unusable: bool


def event_id(source: str, ref: str) -> str:
    """The inbox id of ``source``'s delivery ``ref``: 24 hex digits, safe in keys, URLs and terminals."""
    return hashlib.sha256(f"{source}\n{ref}".encode("utf-8", "surrogateescape")).hexdigest()[:24]


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed headers, lower-cased and shortened (never a signature)."""
    return {name.lower(): value[:MAX_HEADER_CHARS] for name, value in headers.items() if name.lower() in KEPT_HEADERS}


class EventInbox:
    """Writes the inbox on the asyncio client (webhooks) and reads it on the synchronous one (CLI, API)."""

    def __init__(self, redis: Redis, aredis: AsyncRedis | None, keys: Keys) -> None:
        self._redis = redis
        self._aredis = aredis
        self._keys = keys
        if aredis is not None:
            self._record = aredis.register_script(script_source("inbox_record"))
        self._group: GroupCommit[list[str | bytes], Recorded] = GroupCommit(self._record_many)

    async def record(
        self,
        source: str,
        kind: str,
        ref: str,
        headers: Mapping[str, str],
        body: bytes,
        outcome: EventOutcome,
        *,
        reprocess: bool = False,
    ) -> Recorded:
        """Keep a handled delivery with its outcome (a redelivery or re-processing: update the entry).

        Concurrent calls share one script call (``producers.group_commit``).
        """
        ident = event_id(source, ref)
        entry: list[str | bytes] = [
            ident,
            source,
            kind[:100],
            ref[:300],
            json.dumps(kept_headers(headers), sort_keys=True),
            body,
            outcome.outcome.value,
            json.dumps(outcome.detail(), sort_keys=True),
            "1" if reprocess else "0",
        ]
        return await self._group.submit(entry)

    async def _record_many(self, entries: list[list[str | bytes]]) -> list[Recorded]:
        args: list[str | bytes | int] = [self._keys.prefix, _ms(None)]
        for entry in entries:
            args.extend(entry)
        reply = values.items(await self._record(args=args))
        return [
            Recorded(values.text(entry[0]), Outcome(values.text(reply[2 * i])), bool(reply[2 * i + 1]))
            for i, entry in enumerate(entries)
        ]

    def get(self, ident: str) -> InboxEvent | None:
        """The entry, or None."""
        raw = values.raw_map(self._redis.hgetall(self._keys.event(ident)))
        return _event(raw) if raw else None

    def exists(self, ident: str) -> bool:
        """True while the inbox keeps the entry (without reading its body)."""
        return bool(self._redis.exists(self._keys.event(ident)))

    def recent(
        self,
        *,
        outcome: Outcome | None = None,
        source: str | None = None,
        limit: int = 50,
        before_ms: int | None = None,
    ) -> list[InboxEvent]:
        """Entries, newest first, from an index (all, or one outcome's), filtered by source."""
        index = self._keys.events() if outcome is None else self._keys.events_by_outcome(outcome.value)
        top: str | int = "+inf" if before_ms is None else f"({before_ms}"
        found: list[InboxEvent] = []
        offset = 0
        page = max(limit, 50)
        while len(found) < limit:
            ids = values.texts(self._redis.zrevrangebyscore(index, top, "-inf", start=offset, num=page))
            if not ids:
                break
            offset += len(ids)
            with self._redis.pipeline(transaction=False) as pipe:
                for raw_id in ids:
                    pipe.hgetall(self._keys.event(raw_id))
                rows = values.raw_maps(pipe.execute())
            for raw in rows:
                if raw and (source is None or raw.get(b"source") == source.encode()):
                    found.append(_event(raw))
        return found[:limit]

    def count(self, outcome: Outcome | None = None) -> int:
        index = self._keys.events() if outcome is None else self._keys.events_by_outcome(outcome.value)
        return values.integer(self._redis.zcard(index))


def _event(raw: dict[bytes, bytes]) -> InboxEvent:
    def text(name: str, default: str = "") -> str:
        value = raw.get(name.encode())
        return default if value is None else value.decode("utf-8", "replace")

    detail = json.loads(text("detail", "{}"))
    detail["outcome"] = text("outcome", Outcome.UNUSABLE.value)
    acted = text("acted_at")
    return InboxEvent(
        id=text("id"),
        source=text("source"),
        kind=text("kind"),
        ref=text("ref"),
        headers=json.loads(text("headers", "{}")),
        body=raw.get(b"body", b""),
        received_at=int(text("received_at", "0")) / 1000,
        deliveries=int(text("deliveries", "1")),
        outcome=EventOutcome.from_detail(detail),
        reprocessed=int(text("reprocessed", "0")),
        acted_at=int(acted) / 1000 if acted else None,
    )


def _ms(now: float | None) -> int:
    return int((time.time() if now is None else now) * 1000)
