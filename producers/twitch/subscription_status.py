"""What the EventSub subscriptions looked like when last checked (``Keys.twitch_subscriptions``; the console
lists it).

Written after each sweep (webhook transport, ``producers.twitch.subscription_sweep``) and after each subscribe
round and revocation (WebSocket transport, ``producers.twitch.eventsub_ws``). A whole snapshot replaces the
previous one in one step (``lua/replace_hash.lua``); a revocation changes one subscription's entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis

from producers.twitch.helix import Subscription
from worker import redis_values as values
from worker.keys import Keys
from worker.scripts import load_script

__all__ = ["SubscriptionCheck", "SubscriptionEntry", "SubscriptionStatusBook"]

#: The hash field holding the check itself (subscription ids never start with ':').
CHECK_FIELD = ":check"


@dataclass(frozen=True)
class SubscriptionEntry:
    """One subscription as last seen."""

    id: str
    type: str
    version: str
    #: ``name=value`` pairs of its condition, sorted.
    condition: str
    status: str
    #: ``webhook`` or ``websocket``.
    transport: str
    created_at: str
    #: Epoch seconds of the look that saw this status.
    checked_at: float
    #: Ours: the webhook callback this service manages, or our WebSocket session's (False: another's, untouched).
    ours: bool = True

    @property
    def active(self) -> bool:
        return self.status in ("enabled", "webhook_callback_verification_pending")

    @classmethod
    def of(cls, subscription: Subscription, checked_at: float, *, ours: bool = True) -> SubscriptionEntry:
        return cls(
            id=subscription.id,
            type=subscription.type,
            version=subscription.version,
            condition=" ".join(f"{k}={v}" for k, v in sorted(subscription.condition.items())),
            status=subscription.status,
            transport=subscription.method,
            created_at=subscription.created_at,
            checked_at=checked_at,
            ours=ours,
        )

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> SubscriptionEntry:
        data: Mapping[str, Any] = json.loads(raw)
        return cls(
            id=str(data["id"]),
            type=str(data["type"]),
            version=str(data["version"]),
            condition=str(data["condition"]),
            status=str(data["status"]),
            transport=str(data["transport"]),
            created_at=str(data.get("created_at", "")),
            checked_at=float(data["checked_at"]),
            ours=bool(data.get("ours", True)),
        )


@dataclass(frozen=True)
class SubscriptionCheck:
    """The last look as a whole: when, over which transport, and why it failed (None: it worked)."""

    checked_at: float
    transport: str
    error: str | None
    subscriptions: tuple[SubscriptionEntry, ...]


class SubscriptionStatusBook:
    """Reads and writes the snapshot."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.twitch_subscriptions()

    def write(self, transport: str, entries: Iterable[SubscriptionEntry], *, at: float | None = None) -> None:
        """The subscriptions as seen now replace the previous snapshot."""
        check = {"checked_at": time.time() if at is None else at, "transport": transport, "error": None}
        args: list[str] = [CHECK_FIELD, json.dumps(check)]
        for entry in entries:
            args += [entry.id, entry.to_json()]
        load_script(self._redis, "replace_hash")(keys=[self._key], args=args)

    def failed(self, transport: str, error: str) -> None:
        """The last look failed: the subscriptions stay as last seen, the check says why."""
        check = {"checked_at": time.time(), "transport": transport, "error": error[:300]}
        self._redis.hset(self._key, CHECK_FIELD, json.dumps(check))

    def set_status(self, subscription: Subscription, *, ours: bool = True) -> None:
        """One subscription's new status (a revocation), the others left as they are."""
        entry = SubscriptionEntry.of(subscription, time.time(), ours=ours)
        self._redis.hset(self._key, entry.id, entry.to_json())

    def read(self) -> SubscriptionCheck | None:
        """The snapshot (None: never written); subscriptions by type, then condition."""
        stored = values.text_map(self._redis.hgetall(self._key))
        raw_check = stored.pop(CHECK_FIELD, None)
        if raw_check is None and not stored:
            return None
        check: Mapping[str, Any] = json.loads(raw_check) if raw_check else {}
        entries = sorted(
            (SubscriptionEntry.from_json(raw) for raw in stored.values()), key=lambda e: (e.type, e.condition, e.id)
        )
        error = check.get("error")
        return SubscriptionCheck(
            checked_at=float(check.get("checked_at") or 0.0),
            transport=str(check.get("transport") or ""),
            error=None if error is None else str(error),
            subscriptions=tuple(entries),
        )
