"""The audit log: who did what to the service, and when, for the operator console to show.

Every operator action (a console login, a re-processed event, a link added...) is one entry
on a Redis stream (``Keys.audit()``), trimmed to about ``MAX_ENTRIES`` so it cannot grow
without bound. An actor is a fingerprint, never a secret: ``console:<8 hex>`` is the start
of the sha256 of a console session id (``admin.console.sessions``), so two actions of one
login can be told apart from another login's without the cookie ever being written down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, cast

from redis import Redis

from config.domain import InvalidInput, is_ascii_digits
from worker import redis_values as values
from worker.keys import Keys

__all__ = ["MAX_ENTRIES", "Audit", "AuditEntry", "AuditLog"]

#: Entries kept (approximately: ``XADD ... MAXLEN ~``, so Redis trims whole nodes cheaply).
MAX_ENTRIES = 10_000
#: Longest text kept in one field; an entry is a line to read, not a place for a body.
MAX_FIELD_CHARS = 500


class Audit(Protocol):
    """Where an action is written: ``AuditLog``, or a test's recorder."""

    def record(self, actor: str, action: str, target: str, outcome: str, detail: str = "") -> object: ...


@dataclass(frozen=True)
class AuditEntry:
    """One recorded action."""

    #: the stream entry id (``<ms>-<seq>``): unique, and the paging cursor of ``AuditLog.recent``.
    id: str
    #: epoch seconds.
    at: float
    #: ``console:<fingerprint>`` (later also ``api:...``, ``cli:...``).
    actor: str
    #: what was done: ``login``, ``logout``, ``reprocess``, ``link-add``...
    action: str
    #: what it was done to (an event id, ``twitch:1234``...); may be empty.
    target: str
    #: ``ok``, ``refused``, ``failed``...
    outcome: str
    detail: str = ""


class AuditLog:
    """Writes and reads the audit stream."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def record(self, actor: str, action: str, target: str, outcome: str, detail: str = "") -> str:
        """Append one entry (the caller makes sure no secret is in it); returns its id."""
        fields = {
            "at_ms": str(int(time.time() * 1000)),
            "actor": actor[:MAX_FIELD_CHARS],
            "action": action[:MAX_FIELD_CHARS],
            "target": target[:MAX_FIELD_CHARS],
            "outcome": outcome[:MAX_FIELD_CHARS],
            "detail": detail[:MAX_FIELD_CHARS],
        }
        entry_id = self._redis.xadd(self._keys.audit(), fields, maxlen=MAX_ENTRIES, approximate=True)  # type: ignore[arg-type]
        return values.text(entry_id)

    def recent(self, limit: int = 50, before: str | None = None) -> list[AuditEntry]:
        """Up to ``limit`` entries, newest first, older than the entry id ``before`` when given (paging).

        Raises ``ValueError`` when ``before`` is not a stream id (``<ms>-<seq>``).
        """
        if before is not None and not _is_stream_id(before):
            raise InvalidInput("before", "must be an audit entry id such as 1700000000000-0")
        top = "+" if before is None else f"({before}"
        rows = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self._redis.xrevrange(self._keys.audit(), max=top, min="-", count=max(1, limit)),
        )
        return [_entry(raw_id, fields) for raw_id, fields in rows]


def _entry(raw_id: bytes, fields: dict[bytes, bytes]) -> AuditEntry:
    def text(name: str) -> str:
        return fields.get(name.encode(), b"").decode("utf-8", "replace")

    ident = values.text(raw_id)
    at_ms = text("at_ms")
    return AuditEntry(
        id=ident,
        at=(int(at_ms) if is_ascii_digits(at_ms) else int(ident.partition("-")[0])) / 1000,
        actor=text("actor"),
        action=text("action"),
        target=text("target"),
        outcome=text("outcome"),
        detail=text("detail"),
    )


def _is_stream_id(text: str) -> bool:
    ms, dash, seq = text.partition("-")
    return is_ascii_digits(ms) and len(ms) <= 20 and (not dash or (is_ascii_digits(seq) and len(seq) <= 20))
