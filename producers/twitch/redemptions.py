"""The fate of each channel-point redemption, as Twitch is to be told it (docs/sources-sync.md §1).

A redemption of a reward our client id created stays UNFULFILLED in Twitch's queue until its grants have a
fate: FULFILLED once one is delivered; CANCELED — Twitch gives the viewer the points back — once every one is
dead or cancelled and nothing of them can have been applied; never while one is queued, retrying, parked or
unknown (a refund and a late grant would give the viewer both). Three atomic scripts carry it:

- ``lua/redemption_watch.lua`` (``watch``): the webhook and the catch-up poll both name a redemption's
  grants; each grant is marked ``watched``, and every step that stops it moving then notes it in
  ``Keys.watched_moves`` in that same step (``lua/grant_index.lua``), so no fate is missed whatever path
  moved the grant (worker, operator, link, retention).
- ``lua/redemption_decide.lua`` (``decide``): turns those notes into fates. A CANCELED redemption marks its
  grants ``refunded``, which a replay refuses: the points are back, the items must not follow.
- ``lua/redemption_call.lua`` (``claim_calls``, ``record_done``, ``record_retry``): the Helix calls that tell
  Twitch, claimed with a lease so a caller that dies mid-call is replaced, and recorded in every grant's
  history. A repeat after a crash between the call and its record is harmless: Helix only moves UNFULFILLED
  redemptions, and the caller reads back what Twitch holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis import Redis

from worker import redis_values as values
from worker.keys import Keys
from worker.scripts import load_script

__all__ = [
    "HELIX_BATCH",
    "CallBatch",
    "Fate",
    "Redemption",
    "RedemptionBook",
    "RedemptionStatus",
    "Told",
]

#: Redemption ids Helix's Update Redemption Status takes in one call (docs/sources-sync.md §1.1).
HELIX_BATCH = 50


class Fate(StrEnum):
    """What Twitch is told about a redemption."""

    #: a grant of it was delivered: the reward was given.
    FULFILLED = "FULFILLED"
    #: nothing of it was given and nothing can have been: the viewer gets the points back.
    CANCELED = "CANCELED"
    #: nothing is said (refunds off for its rule, or a grant may have been applied): it stays in the queue.
    KEPT = "KEPT"


class RedemptionStatus(StrEnum):
    """Where a redemption is."""

    #: a grant of it still moves (or is parked, or unknown).
    WAITING = "waiting"
    #: decided; the Helix call that tells Twitch is due or under way.
    CALLING = "calling"
    #: Twitch was told (or is told nothing: ``Fate.KEPT``).
    DONE = "done"


@dataclass(frozen=True)
class Redemption:
    """One watched redemption as Redis holds it."""

    id: str
    broadcaster_id: str
    reward_id: str
    refund: bool
    status: RedemptionStatus
    fate: Fate | None
    grant_ids: tuple[str, ...]
    #: what was done, for people ("" while waiting or calling).
    note: str
    #: the last failed Helix call's error ("" when none failed).
    last_error: str
    calls_failed: int
    created_at: float
    decided_at: float | None
    done_at: float | None


@dataclass(frozen=True)
class Told:
    """What Twitch holds for a redemption after its call: for people (``note``), and whether the viewer has the
    points back (``refunded``: meaningful for a CANCELED redemption only)."""

    note: str
    refunded: bool = False


@dataclass(frozen=True)
class CallBatch:
    """Redemptions of one reward that one Helix call moves to one status (at most ``HELIX_BATCH``)."""

    broadcaster_id: str
    reward_id: str
    fate: Fate
    redemption_ids: tuple[str, ...]


class RedemptionBook:
    """The watched redemptions under ``keys``' prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._watch = load_script(redis, "redemption_watch")
        self._decide = load_script(redis, "redemption_decide")
        self._call = load_script(redis, "redemption_call")

    def watch(
        self, redemption_id: str, *, broadcaster_id: str, reward_id: str, refund: bool, grant_ids: Iterable[str]
    ) -> RedemptionStatus:
        """Watch ``grant_ids``, the grants redemption ``redemption_id`` made; its status after the call.

        Safe to repeat and to call from every path that sees the redemption. A redemption decided already
        takes no more grants (its status says so): its fate is sealed.
        """
        request = {
            "prefix": self._keys.prefix,
            "id": redemption_id,
            "broadcaster_id": broadcaster_id,
            "reward_id": reward_id,
            "refund": "1" if refund else "0",
            "grants": sorted(set(grant_ids)),
        }
        status, _added = values.items(self._watch(args=[json.dumps(request)]))
        return RedemptionStatus(values.text(status))

    def decide(self, most: int = 500) -> dict[str, Fate]:
        """Decide the redemptions whose grants stopped moving since the last call (up to ``most`` grants'
        worth); the redemptions decided now, with their fates."""
        reply = values.texts(self._decide(args=[self._keys.prefix, most]))
        return {reply[i]: Fate(reply[i + 1]) for i in range(0, len(reply), 2)}

    def claim_calls(self, *, lease_s: float, most: int = 500) -> list[CallBatch]:
        """The Helix calls due now, claimed for ``lease_s`` seconds, grouped by broadcaster, reward and fate
        into batches Helix takes in one call."""
        reply = values.texts(self._call(args=[self._keys.prefix, "claim", lease_s, most]))
        grouped: dict[tuple[str, str, Fate], list[str]] = {}
        for i in range(0, len(reply), 4):
            rid, broadcaster_id, reward_id, fate = reply[i : i + 4]
            grouped.setdefault((broadcaster_id, reward_id, Fate(fate)), []).append(rid)
        return [
            CallBatch(broadcaster_id, reward_id, fate, tuple(ids[start : start + HELIX_BATCH]))
            for (broadcaster_id, reward_id, fate), ids in grouped.items()
            for start in range(0, len(ids), HELIX_BATCH)
        ]

    def record_done(self, outcomes: Mapping[str, Told]) -> int:
        """Redemption id -> what Twitch now holds: each is done, its grants' histories say so. A CANCELED one
        whose refund did not happen becomes KEPT and its grants may be replayed again. How many changed (a
        repeat changes none)."""
        if not outcomes:
            return 0
        told = {rid: {"note": t.note, "refunded": t.refunded} for rid, t in outcomes.items()}
        return values.integer(self._call(args=[self._keys.prefix, "done", json.dumps(told)]))

    def record_retry(self, errors: Mapping[str, str], *, delay_s: float) -> int:
        """Redemption id -> why its call failed: due again in ``delay_s`` seconds. How many changed."""
        if not errors:
            return 0
        return values.integer(self._call(args=[self._keys.prefix, "retry", json.dumps(dict(errors)), delay_s]))

    def get(self, redemption_id: str) -> Redemption | None:
        """One redemption, or None when it is not watched."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._keys.twitch_redemption(redemption_id))
        pipe.sort(self._keys.twitch_redemption_grants(redemption_id), alpha=True)
        fields_reply, grants_reply = pipe.execute()
        fields = {key.decode(): value.decode() for key, value in values.raw_map(fields_reply).items()}
        if not fields:
            return None
        return _redemption(redemption_id, fields, values.texts(grants_reply))

    def calls_due_count(self) -> int:
        """How many redemptions wait for their Helix call (due or claimed)."""
        return values.integer(self._redis.zcard(self._keys.twitch_redemption_calls()))


def _optional_float(fields: Mapping[str, str], name: str) -> float | None:
    return float(fields[name]) if fields.get(name) else None


def _redemption(redemption_id: str, fields: Mapping[str, str], grant_ids: Sequence[str]) -> Redemption:
    return Redemption(
        id=redemption_id,
        broadcaster_id=fields.get("broadcaster_id", ""),
        reward_id=fields.get("reward_id", ""),
        refund=fields.get("refund") == "1",
        status=RedemptionStatus(fields.get("status", RedemptionStatus.WAITING.value)),
        fate=Fate(fields["fate"]) if fields.get("fate") else None,
        grant_ids=tuple(grant_ids),
        note=fields.get("note", ""),
        last_error=fields.get("last_error", ""),
        calls_failed=int(fields.get("calls_failed", "0")),
        created_at=float(fields.get("created_at", "0")),
        decided_at=_optional_float(fields, "decided_at"),
        done_at=_optional_float(fields, "done_at"),
    )
