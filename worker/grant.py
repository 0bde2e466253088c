"""A grant as the ledger holds it: its states, its items, the request to create one, and its record.

Plain values with no Redis access, shared by the ledger (``worker.ledger``), grant creation
(``worker.creation``), the worker and the producers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "CANCELLABLE_STATES",
    "FINAL_STATES",
    "MAYBE_APPLIED_FLAGS",
    "SENDABLE_STATES",
    "CreateResult",
    "Grant",
    "GrantItem",
    "GrantState",
    "NewGrant",
    "grant_from_fields",
    "grant_from_hash",
]


class GrantState(StrEnum):
    """Where a grant is in its life (README "Exactly once": grant states)."""

    #: waiting for its turn (or for a paused key / a rate slot).
    QUEUED = "queued"
    #: a worker is sending it now.
    SENDING = "sending"
    #: a transient failure happened; another attempt is scheduled.
    RETRYING = "retrying"
    #: no Discord user is linked yet; delivered once a link appears.
    PARKED = "parked"
    #: WetBot applied it.
    DELIVERED = "delivered"
    #: the last request may or may not have been applied; an operator decides.
    UNKNOWN = "unknown"
    #: permanently refused, or out of attempts.
    DEAD = "dead"
    #: withdrawn before it was sent (e.g. a Patreon take-back of a grant not delivered yet).
    CANCELLED = "cancelled"


#: States in which nothing more will happen without an operator.
FINAL_STATES = frozenset({GrantState.DELIVERED, GrantState.DEAD, GrantState.UNKNOWN, GrantState.CANCELLED})
#: Grant fields that say its last request may have been applied (a read-back pending, a resend that may duplicate).
MAYBE_APPLIED_FLAGS = ("verify", "maybe_applied")
#: States a grant may be cancelled from: nothing is being sent now (see ``Grant.cancellable``).
CANCELLABLE_STATES = frozenset({GrantState.QUEUED, GrantState.RETRYING, GrantState.PARKED})
#: States whose grants should move: on the schedule (``Keys.due``), in their user's pending index; the Lua
#: scripts get their copy from this one (``worker.scripts``, ``-- include: moving_states``).
MOVING_STATES = frozenset({GrantState.QUEUED, GrantState.RETRYING, GrantState.SENDING})
#: States from which a worker may start sending.
SENDABLE_STATES = frozenset({GrantState.QUEUED, GrantState.RETRYING})


@dataclass(frozen=True)
class GrantItem:
    """One item of a grant: ``amount`` of ``item_id`` (negative takes away)."""

    item_id: str
    amount: float


@dataclass(frozen=True)
class NewGrant:
    """What a producer asks for."""

    guild_id: str
    user_id: str
    items: tuple[GrantItem, ...]
    source: str
    idempotency_key: str
    source_ref: str = ""
    rule: str = ""
    reason: str = ""
    #: Where the recipient comes from when no Discord id is known yet
    #: (``twitch`` / ``patreon`` and that platform's user id); the grant then
    #: waits ``parked`` until a link gives ``user_id``.
    platform: str = ""
    external_id: str = ""
    #: The idempotency claim never expires: the key is a once-ever fact (a viewer's follow of a channel),
    #: not a delivery that stops being retried. The grant it names is then never trimmed either
    #: (``worker.retention`` keeps a grant its claim names), so a repeat finds it however late.
    keep_claim: bool = False
    #: Who the supporter is on the source, for people to read and search (Twitch login and display
    #: name, Patreon full name); never used to route the grant.
    names: tuple[str, ...] = ()
    #: More ids the grant can be found by (a Patreon member id), beside ``user_id``, ``external_id``,
    #: ``idempotency_key`` and ``source_ref`` (``worker.grant_index.grant_terms``).
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grant:
    """A grant as the ledger holds it."""

    id: str
    state: GrantState
    guild_id: str
    user_id: str
    items: tuple[GrantItem, ...]
    source: str
    source_ref: str
    rule: str
    reason: str
    idempotency_key: str
    #: requests sent to WetBot for this grant (waiting for a slot is not one).
    attempts: int
    #: transient or ambiguous failures, counted against ``WETBOT_MAX_ATTEMPTS``.
    failures: int
    last_error: str
    created_at: float
    updated_at: float
    #: resulting amount of each granted item after delivery, from the returned profile.
    result: dict[str, float] | None = None
    platform: str = ""
    external_id: str = ""
    #: resends after an outcome that may have been applied (``AMBIGUOUS_POLICY=retry``): possible duplicates.
    possible_duplicates: int = 0
    #: True while the last request's outcome is to be verified by reading the profile back.
    verify_pending: bool = False
    #: the granted items' amounts in the user's profile as read for the last request, right before it
    #: (item -> amount, None = no entry; None as a whole = no baseline was read), for verification.
    baseline: dict[str, float | None] | None = None
    #: when that baseline was read, in seconds on Redis' clock (None: no baseline was read).
    baseline_at: float | None = None
    #: why no baseline was read for the last request ("" when one was, or before baselines were read).
    baseline_missing: str = ""
    #: the user's snapshot ``seq`` when the request started: a profile recorded since (another run's delivery)
    #: makes its read-back undecided; -1 (grants written before baselines were read) = no usable baseline.
    baseline_seq: int = 0
    #: the run token of the last request sent (guards recording its outcome).
    attempt_token: str = ""
    #: True when the next send repeats a request that may have been applied (``AMBIGUOUS_POLICY=retry``).
    maybe_applied: bool = False
    #: True when the grant goes out alone: a merged request carrying it was refused for its content.
    solo: bool = False
    #: the items of the last request that carried this grant, summed with the others it carried (coalescing).
    sent_items: tuple[GrantItem, ...] | None = None
    #: ids of every grant that last request carried (this one included); empty before coalescing existed.
    request_ids: tuple[str, ...] = ()
    #: ``NewGrant.names``: who the supporter is on the source.
    names: tuple[str, ...] = ()
    #: the inbox id of the webhook delivery that made it ("" for API and CLI grants; ``producers.inbox``).
    event_id: str = ""
    #: the source gave the supporter's payment back (a Twitch redemption CANCELED: the points were refunded,
    #: ``producers.twitch.redemptions``): the grant must never go out again.
    refunded: bool = False

    @property
    def cancellable(self) -> bool:
        """True when nothing of this grant can have reached WetBot, so cancelling it takes nothing back."""
        return self.state in CANCELLABLE_STATES and not (self.verify_pending or self.maybe_applied)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, as the HTTP API and the CLI show it."""
        return {
            "id": self.id,
            "state": self.state.value,
            "guild_id": self.guild_id,
            "user_id": self.user_id,
            "items": [{"item_id": item.item_id, "amount": item.amount} for item in self.items],
            "source": self.source,
            "source_ref": self.source_ref,
            "rule": self.rule,
            "reason": self.reason,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
            "failures": self.failures,
            "last_error": self.last_error or None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "result": self.result,
            "platform": self.platform or None,
            "external_id": self.external_id or None,
            "possible_duplicates": self.possible_duplicates,
            "verify_pending": self.verify_pending,
            "names": list(self.names),
            "refunded": self.refunded,
        }


@dataclass(frozen=True)
class CreateResult:
    """``created`` is False when the idempotency key already named ``grant``."""

    grant: Grant
    created: bool


def grant_from_hash(raw: Mapping[bytes, bytes]) -> Grant:
    """A ``Grant`` from its Redis hash."""
    return grant_from_fields({key.decode(): value.decode() for key, value in raw.items()})


def grant_from_fields(data: Mapping[str, str]) -> Grant:
    """A ``Grant`` from its hash's fields, already decoded."""
    result = json.loads(data["result"]) if data.get("result") else None
    return Grant(
        id=data["id"],
        state=GrantState(data["state"]),
        guild_id=data["guild_id"],
        user_id=data["user_id"],
        items=_items(data["items"]),
        source=data["source"],
        source_ref=data.get("source_ref", ""),
        rule=data.get("rule", ""),
        reason=data.get("reason", ""),
        idempotency_key=data["idempotency_key"],
        attempts=int(data.get("attempts", 0)),
        failures=int(data.get("failures", 0)),
        last_error=data.get("last_error", ""),
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        result=result,
        platform=data.get("platform", ""),
        external_id=data.get("external_id", ""),
        possible_duplicates=int(data.get("possible_duplicates", 0)),
        verify_pending=data.get("verify") == "1",
        baseline=json.loads(data["baseline"]) if data.get("baseline") else None,
        baseline_at=float(data["baseline_at"]) if data.get("baseline_at") else None,
        baseline_missing=data.get("baseline_missing", ""),
        baseline_seq=int(data.get("baseline_seq", 0)),
        attempt_token=data.get("attempt", ""),
        maybe_applied=data.get("maybe_applied") == "1",
        solo=data.get("solo") == "1",
        sent_items=_items(data["sent_items"]) if data.get("sent_items") else None,
        request_ids=tuple(json.loads(data["request_ids"])) if data.get("request_ids") else (),
        names=tuple(json.loads(data["names"])) if data.get("names") else (),
        event_id=data.get("event", ""),
        refunded=data.get("refunded") == "1",
    )


def _items(text: str) -> tuple[GrantItem, ...]:
    return tuple(GrantItem(item_id, float(amount)) for item_id, amount in json.loads(text))
