"""The Redis side of Patreon events: what we remember per member, and carrying out a ``Plan``.

Memory lives in one HASH per member, ``keys.source_state("patreon-member", <member id>)``:

=========================  ==========================================================
field                      value
=========================  ==========================================================
``charge_date``            newest accounted charge date (normalised; only ever raised)
``pledge_start``           start of the newest pledge seen
``cents``                  last known pledge level
``first_paid``             ``1``/``0``: the newest pledge's first charge was Paid
``hold:<rule id>``         JSON ``{"fact", "charge_date"}`` of a held ``require_paid`` grant
``grant:<rule id>:<id>``   ``1``: grant ``<id>`` made by that rule, not revoked yet
``fact:<rule id>:<fact>``  grant id made by that rule for that fact; never removed
``review:<grant id>``      the grant's state when a take-back of it was left to an operator
``written``                token of the last step, when replicas must confirm it (below)
=========================  ==========================================================

The hash has no TTL: it is small, one per member, and must outlive the 40-day
idempotency claims it backs up (``fact:`` fields are what makes a replay of an
old body, however late, grant nothing).

Concurrency and crashes: each attempt is one atomic step. ``handle_event``
WATCHes the member's hash, reads it, decides, WATCHes and reads the idempotency
claims of the grants it will ask for (so it knows each grant's id: the new one,
or the one a claim names), then queues in one MULTI both the grant-creation
script (``worker/lua/create_grants.lua``: ledger entries and queue messages)
and the memory update that records those grants. If another delivery for the
member wrote first, EXEC writes nothing at all and the event is decided again
on fresh memory; so two deliveries for one member, the same event or different
ones, end as if they had come one after the other. A crash before EXEC leaves
nothing, and Patreon's redelivery decides the same way.

With replicas to wait for (``REDIS_WAIT_REPLICAS``, ``worker.replication``) the
MULTI also sets ``written`` to a fresh token, and the webhook answers 2xx only
once ``confirm_fence`` has seen a replica take it: a MULTI cannot carry the
``WAIT`` itself, and a failover must not lose a grant Patreon was told about.
The writes outside the MULTI are confirmed on their own: a take-back's cancel
(``Ledger.cancel(confirm=True)``) and a link from the payload with its release
(``link_and_release``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from redis import Redis, WatchError
from redis.client import Pipeline

from producers.patreon.events import MemberEvent, NotAMemberEvent
from producers.patreon.rules import GrantDecision, Hold, MemberMemory, Plan, decide
from producers.state import AppState
from producers.submit import link_and_release, planned_for_identity
from worker import redis_values as values
from worker.creation import SCRIPT, EventRequest, MissingGrant, Mode, Planned, build_request, parse_reply
from worker.grant import CreateResult, Grant, GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.replication import ReplicaAcks, confirm_fence
from worker.scripts import load_script

__all__ = [
    "MAX_DECIDE_ATTEMPTS",
    "PLATFORM",
    "SOURCE",
    "MemberStore",
    "MemberEventResult",
    "handle_event",
    "revoke_key",
]

logger = logging.getLogger("wetbot_rewards.patreon")

#: ``source`` of every Patreon grant.
SOURCE = "patreon"
#: Link platform; links are keyed by the Patreon user id.
PLATFORM = "patreon"
#: ``keys.source_state`` namespace of member memory.
_STATE_SOURCE = "patreon-member"
#: Times one event is decided again because another delivery for the same member wrote first. Patreon
#: sends a handful of events per member per month, so losing this many races in a row means something is
#: looping; the WatchError then becomes a 503 and Patreon retries later.
MAX_DECIDE_ATTEMPTS = 5
#: Member-hash field a step sets to a fresh token when replicas must confirm it (``confirm_fence``).
WRITTEN_FIELD = "written"


def revoke_key(grant_id: str) -> str:
    """Idempotency key of the revocation of ``grant_id``: at most one per original grant."""
    return f"patreon-revoke:{grant_id}"


@dataclass
class MemoryChanges:
    """Writes to one member's hash, collected while a plan is carried out and applied in one MULTI."""

    recorded: list[tuple[str, str]] = field(default_factory=list)  # (rule id, grant id)
    facts: dict[tuple[str, str], str] = field(default_factory=dict)  # (rule id, fact) -> grant id
    forgotten: list[tuple[str, str]] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    dropped_holds: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    reviews: dict[str, str] = field(default_factory=dict)  # grant id -> its state when its take-back was skipped


class MemberStore:
    """Reads and writes member memory (see the module docstring)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def key(self, member_id: str) -> str:
        return self._keys.source_state(_STATE_SOURCE, member_id)

    def load(self, member_id: str, *, via: Redis | Pipeline | None = None) -> MemberMemory:
        """The member's memory; ``via`` a WATCHing pipeline (in immediate mode) to read under its watch."""
        raw = values.raw_map((via or self._redis).hgetall(self.key(member_id)))
        fields = {name.decode(): value.decode() for name, value in raw.items()}
        holds: dict[str, Hold] = {}
        grants: dict[str, list[str]] = {}
        granted: dict[tuple[str, str], str] = {}
        review: dict[str, str] = {}
        for name, value in fields.items():
            if name.startswith("hold:"):
                data = json.loads(value)
                holds[name[5:]] = Hold(name[5:], str(data["fact"]), data.get("charge_date"))
            elif name.startswith("grant:"):
                rule_id, _, grant_id = name[6:].rpartition(":")
                grants.setdefault(rule_id, []).append(grant_id)
            elif name.startswith("fact:"):  # rule ids may hold ":" (``patreon:renewal#0``), facts never do
                rule_id, _, fact = name[5:].rpartition(":")
                granted[(rule_id, fact)] = value
            elif name.startswith("review:"):
                review[name[7:]] = value
        first_paid = fields.get("first_paid")
        return MemberMemory(
            charge_date=fields.get("charge_date"),
            pledge_start=fields.get("pledge_start"),
            cents=int(fields["cents"]) if "cents" in fields else None,
            first_paid=None if first_paid is None else first_paid == "1",
            holds=holds,
            grants={rule_id: tuple(sorted(ids)) for rule_id, ids in grants.items()},
            granted=granted,
            review=review,
        )

    def write(self, pipe: Pipeline, member_id: str, changes: MemoryChanges) -> None:
        """Queue ``changes`` on ``pipe`` (inside its MULTI)."""
        key = self.key(member_id)
        deleted = [f"grant:{rule_id}:{grant_id}" for rule_id, grant_id in changes.forgotten]
        deleted += [f"hold:{rule_id}" for rule_id in changes.dropped_holds]
        if deleted:
            pipe.hdel(key, *deleted)
        mapping = dict(changes.fields)
        mapping.update({f"grant:{rule_id}:{grant_id}": "1" for rule_id, grant_id in changes.recorded})
        mapping.update({f"fact:{rule_id}:{fact}": grant_id for (rule_id, fact), grant_id in changes.facts.items()})
        mapping.update({f"review:{grant_id}": why for grant_id, why in changes.reviews.items()})
        mapping.update(
            {f"hold:{h.rule_id}": json.dumps({"fact": h.fact, "charge_date": h.charge_date}) for h in changes.holds}
        )
        if mapping:
            pipe.hset(key, mapping=mapping)


@dataclass(frozen=True)
class MemberEventResult:
    """What handling one event did: new grants, grants that already existed, revocations, holds made and used.

    ``revoked`` counts negative grants (for delivered originals), ``cancelled`` originals withdrawn before
    they were sent, ``left_to_operator`` the ids of originals not taken back (dead, unknown, sending).
    """

    granted: int = 0
    duplicates: int = 0
    revoked: int = 0
    held: int = 0
    released: int = 0
    cancelled: int = 0
    left_to_operator: tuple[str, ...] = ()
    #: every grant the event made or found made (rule grants and take-backs), for the event inbox.
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True)
class _Member:
    """The event with its ids checked present."""

    event: MemberEvent
    member_id: str
    patreon_user_id: str


def handle_event(state: AppState, event: MemberEvent) -> tuple[Plan, MemberEventResult]:
    """Decide on ``event`` against the member's memory and carry the plan out (blocking: run in a threadpool).

    One atomic step per attempt (see the module docstring): read memory under WATCH, decide, then write
    the grants (``create_grants.lua``) and the new memory in one MULTI. Nothing is written when another
    delivery for the member wrote first; the event is then decided again on fresh memory. Once the MULTI
    is confirmed, the payload's Discord account links the patron (``_link_from_payload``): the event's own
    grants name that account already, so the link only releases grants parked before.

    Raises:
      NotAMemberEvent: for the portal test payload (no member); the router answers it without calling this.
      WatchError: when other deliveries for the member kept winning (``MAX_DECIDE_ATTEMPTS``); a 503.
      MissingGrant: an idempotency key names a grant whose record was deleted by hand; nothing written.
      RedisError, dramatiq.errors.BrokerError: storage trouble (``NotReplicated`` too); a 503, nothing promised.
    """
    if event.member_id is None or event.patreon_user_id is None:
        raise NotAMemberEvent("a member event needs a member id and a Patreon user id")
    member = _Member(event, event.member_id, event.patreon_user_id)
    store = MemberStore(state.redis, state.keys)
    acks = ReplicaAcks.from_settings(state.settings)
    cancelled: set[str] = set()  # originals cancelled by this event, whichever attempt did it
    for attempt in range(1, MAX_DECIDE_ATTEMPTS + 1):
        with state.redis.pipeline() as pipe:
            pipe.watch(store.key(member.member_id))  # type: ignore[no-untyped-call]
            memory = store.load(member.member_id, via=pipe)
            plan = decide(event, memory, state.rewards.patreon.rules)
            step = _prepare(state, member, memory, plan, cancelled)
            claims = _watch_claims(pipe, state.keys, step.entries)
            request, sent = build_request(state.keys, [EventRequest(tuple(e.planned for e in step.entries))])
            _record_ids(state, step, claims, sent[0])
            pipe.multi()
            load_script(state.redis, SCRIPT)(args=[request], client=pipe)
            store.write(pipe, member.member_id, step.changes)
            written = uuid.uuid4().hex
            if acks.wanted:
                pipe.hset(store.key(member.member_id), WRITTEN_FIELD, written)
            try:
                reply = pipe.execute()[0]
            except WatchError:
                logger.info(
                    "patreon member %s changed meanwhile (attempt %d); deciding again", member.member_id, attempt
                )
                continue
        confirm_fence(state.redis, acks, store.key(member.member_id), WRITTEN_FIELD, written)
        outcome = parse_reply(reply, sent)[0]
        if isinstance(outcome, MissingGrant):  # checked under WATCH before; only a deletion in between
            raise outcome
        _link_from_payload(state, member)
        for grant_id, grant_state in step.left_to_operator:
            logger.warning(
                "patreon member %s: %s takes back grant %s, but grant %s is %s: no negative grant sent, "
                "left to an operator (check WetBot, then take it back by hand if it was applied)",
                member.member_id,
                plan.revoke_reason,
                grant_id,
                grant_id,
                grant_state.value,
            )
        return plan, _outcome(plan, step, outcome.results)
    raise WatchError(f"patreon member {member.member_id}: still contended after {MAX_DECIDE_ATTEMPTS} attempts")


@dataclass(frozen=True)
class _Entry:
    """One grant to create: a rule's grant for ``fact``, or (``fact`` empty) a take-back of one of its grants."""

    planned: Planned
    rule_id: str
    fact: str = ""

    @property
    def is_take_back(self) -> bool:
        return not self.fact


@dataclass
class _Step:
    """One attempt's writes: the grants to create and the memory changes that record them."""

    entries: list[_Entry] = field(default_factory=list)
    changes: MemoryChanges = field(default_factory=MemoryChanges)
    #: Originals this event cancelled instead of taking them back with a negative grant.
    cancelled: list[str] = field(default_factory=list)
    #: Originals not taken back because their fate is not known to be "never sent" (see ``_take_back``).
    left_to_operator: list[tuple[str, GrantState]] = field(default_factory=list)


def _prepare(state: AppState, member: _Member, memory: MemberMemory, plan: Plan, cancelled: set[str]) -> _Step:
    """The grants and memory changes that carry ``plan`` out (nothing written but take-back cancels)."""
    step = _Step(changes=MemoryChanges(fields=dict(plan.remember)))
    if plan.charge_date is not None and (memory.charge_date is None or plan.charge_date > memory.charge_date):
        step.changes.fields["charge_date"] = plan.charge_date
    _take_back(state, member, plan, memory, step, cancelled)
    for decision in plan.grants:
        step.entries.append(_Entry(_planned(state, _new_grant(member, decision)), decision.rule.rule_id, decision.fact))
    for hold in plan.new_holds:
        # Memory's ``fact:`` fields keep a granted hold from coming back; a claim still standing covers
        # grants made before those fields existed.
        if state.ledger.get_by_key(f"patreon:{member.member_id}:{hold.fact}:{hold.rule_id}") is None:
            step.changes.holds.append(hold)
    step.changes.dropped_holds = list(memory.holds) if plan.drop_all_holds else list(plan.released_holds)
    return step


def _watch_claims(pipe: Pipeline, keys: Keys, entries: Sequence[_Entry]) -> list[str | None]:
    """WATCH the idempotency claims of ``entries`` and read them: the grant id each names, or None if free.

    Watched, so what memory records (the id the script will create, or the one it will find) is still
    true when the MULTI runs. A claim naming a deleted grant raises ``MissingGrant`` before anything is written.
    """
    if not entries:
        return []
    claim_keys = [keys.idempotency(entry.planned.new.idempotency_key) for entry in entries]
    pipe.watch(*claim_keys)  # type: ignore[no-untyped-call]
    found: list[str | None] = []
    for grant_id in values.optional_texts(pipe.mget(claim_keys)):
        if grant_id is not None and not pipe.exists(keys.grant(grant_id)):
            raise MissingGrant(f"an idempotency key names a missing grant {grant_id}")
        found.append(grant_id)
    return found


def _record_ids(state: AppState, step: _Step, claims: list[str | None], sent: Sequence[Mapping[str, str]]) -> None:
    """Record in memory the grant each planned grant will be: the new one, or the one its claim names."""
    for entry, claimed, fields in zip(step.entries, claims, sent, strict=True):
        if entry.is_take_back:
            continue
        grant_id = claimed or fields["id"]
        step.changes.facts[(entry.rule_id, entry.fact)] = grant_id
        # A grant found again by its claim stays revocable unless it was already taken back.
        if claimed is None or state.ledger.get_by_key(revoke_key(claimed)) is None:
            step.changes.recorded.append((entry.rule_id, grant_id))


def _outcome(plan: Plan, step: _Step, results: Sequence[CreateResult]) -> MemberEventResult:
    granted = duplicates = revoked = 0
    for entry, result in zip(step.entries, results, strict=True):
        if entry.is_take_back:
            revoked += result.created
        else:
            granted += result.created
            duplicates += not result.created
    return MemberEventResult(
        granted=granted,
        duplicates=duplicates + plan.already_granted,
        revoked=revoked,
        held=len(step.changes.holds),
        released=len(plan.released_holds),
        cancelled=len(step.cancelled),
        left_to_operator=tuple(grant_id for grant_id, _ in step.left_to_operator),
        grants=tuple(result.grant for result in results),
    )


def _new_grant(member: _Member, decision: GrantDecision) -> NewGrant:
    rule = decision.rule
    return NewGrant(
        guild_id=rule.effective_guild_id,
        user_id=member.event.discord_user_id or "",
        items=tuple(GrantItem(item.id, item.amount) for item in rule.items),
        source=SOURCE,
        idempotency_key=decision.idempotency_key(member.member_id),
        source_ref=f"{member.event.trigger} member {member.member_id}",
        rule=rule.rule_id,
        reason=rule.reason or "",
        platform=PLATFORM,
        external_id=member.patreon_user_id,
        names=(member.event.full_name,) if member.event.full_name else (),
        aliases=(member.member_id,),
    )


def _planned(state: AppState, new: NewGrant) -> Planned:
    """To the Discord user the grant names; without one, to the linked user, or parked until a link exists."""
    return Planned(new, Mode.ENQUEUE) if new.user_id else planned_for_identity(state.links, new)


#: How often a take-back looks again at an original that moved while it was being cancelled.
_CANCEL_ATTEMPTS = 3


def _take_back(
    state: AppState, member: _Member, plan: Plan, memory: MemberMemory, step: _Step, cancelled: set[str]
) -> None:
    """Take back what the plan's rules granted this member, by the state of each original (once each).

    * ``delivered``: a negative grant to the same user (``patreon-revoke:<id>``).
    * ``queued``/``retrying``/``parked`` and nothing can have reached WetBot
      (``Grant.cancellable``): the original is cancelled (``Ledger.cancel``),
      which its queue message then finds and skips.
    * ``dead``/``unknown``/``sending``, or ``retrying`` after an outcome that may
      have been applied: WetBot got nothing, or maybe something, or the answer
      is not back yet; a negative grant could take away what was
      never given (a dead original would leave the patron at -1). Nothing is
      sent: the grant is left to an operator, logged, noted on the event and
      kept in memory as ``review:<id>``.
    * ``cancelled`` (or gone): nothing to take back.

    The cancel is done right away, outside the MULTI (its script belongs to
    the ledger). It is conditional and idempotent, so a lost race or a crash
    before EXEC only means the next attempt finds the original cancelled.
    It is confirmed on its own (``confirm=True``): the fence after the MULTI
    covers only what the MULTI's primary has, and the cancel may have gone to
    another one (a pool that moved to a new primary in between).
    ``cancelled`` collects the ids this event cancelled, across attempts.
    """
    why = plan.revoke_reason
    for rule_id in plan.revoke:
        for grant_id in memory.grants.get(rule_id, ()):
            step.changes.forgotten.append((rule_id, grant_id))
            original = state.ledger.get(grant_id)
            for _ in range(_CANCEL_ATTEMPTS):
                if original is None or not original.cancellable:
                    break
                if state.ledger.cancel(grant_id, f"taken back by patreon ({why}) before it was sent", confirm=True):
                    cancelled.add(grant_id)
                original = state.ledger.get(grant_id)  # cancelled now, or moved on meanwhile: look again
            if original is None or original.state is GrantState.CANCELLED:
                if grant_id in cancelled:
                    step.cancelled.append(grant_id)
            elif original.state is GrantState.DELIVERED:
                negative = _negative(original, member, why)
                step.entries.append(_Entry(_planned(state, negative), rule_id))
            else:
                step.left_to_operator.append((grant_id, original.state))
                step.changes.reviews[grant_id] = original.state.value
                plan.notes.append(f"take-back of grant {grant_id} ({original.state.value}) left to an operator")


def _negative(original: Grant, member: _Member, why: str) -> NewGrant:
    return NewGrant(
        guild_id=original.guild_id,
        user_id=original.user_id,
        items=tuple(GrantItem(item.item_id, -item.amount) for item in original.items),
        source=SOURCE,
        idempotency_key=revoke_key(original.id),
        source_ref=f"{member.event.trigger} member {member.member_id} revokes {original.id}",
        rule=original.rule,
        reason=f"revoked ({why})",
        platform=original.platform,
        external_id=original.external_id,
        names=original.names,
        aliases=(member.member_id,),
    )


def _link_from_payload(state: AppState, member: _Member) -> None:
    """A payload naming the patron's Discord account links them, once, and releases what was parked for them.

    Only when no link exists yet: a link set by an operator (``POST /links``) is never overwritten. When the
    link is there already, what is still parked for it is released: an earlier delivery may have stopped
    between the link and the release (a crash, a release the replicas did not confirm).
    """
    discord_id = member.event.discord_user_id
    current = None if discord_id is None else state.links.resolve(PLATFORM, member.patreon_user_id)
    if discord_id is None or current not in (None, discord_id):
        return
    if current is None:
        released = link_and_release(state.ledger, state.links, PLATFORM, member.patreon_user_id, discord_id)
    else:
        released = state.ledger.release_parked(PLATFORM, member.patreon_user_id, discord_id, confirm=True)
    if current is not None and not released:
        return
    logger.info(
        "patreon user %s linked to Discord user %s from the payload; %d parked grant(s) queued",
        member.patreon_user_id,
        discord_id,
        len(released),
    )
