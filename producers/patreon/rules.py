"""What one Patreon member event means: which grants, holds and revocations (pure; no Redis here).

``decide(event, memory, rules)`` compares the event with what we remember of
the member (``MemberMemory``, kept by ``producers.patreon.members``) and
returns a ``Plan``. Patreon sends no delivery id and no event time, retries
for weeks and replays everything queued when a paused webhook resumes
(docs/patreon.md §3), so every decision is keyed on business facts:

* **Idempotency keys** ``patreon:<member>:<fact>:<rule_id>``, where the fact is
  ``pledge-<pledge start>-<charge date>`` for a new pledge,
  ``charge-<charge date>`` for a renewal and
  ``update-<tier ids>-<cents>-<charge date>`` for a pledge change. A
  redelivery yields the same key, and the ledger creates at most one grant per key.
  The key's claim expires after 40 days, but Patreon bodies carry no time and
  stay validly signed forever, so memory also keeps every (rule, fact) granted,
  for good: a fact granted before is neither granted nor held again.
* **Memory** guards what outlives the 40-day claims and what keys cannot see:
  the newest accounted charge date (an older ``members:update`` is never a
  renewal, an older Declined/Refunded never revokes), the current pledge's
  start (an older pledge's events are stale), the last known pledge level (for
  upgrades), whether the first charge was paid, held grants, and the grants
  each rule made (to know what to revoke).
* **Memory only moves forward.** The charge date is only raised; a
  ``members:pledge:create`` of the pledge memory already holds (a redelivery,
  or one that arrives after later events of its pledge) changes neither the
  level nor lowers ``first_paid`` from paid to unpaid; a ``members:update``
  repeating an accounted charge leaves the level as later pledge changes set it.

Decisions (docs/patreon.md §5):

* ``members:pledge:create`` grants per matching rule (``tier_id``, ``min_cents``).
  With ``require_paid`` and a first charge that is not Paid yet, the grant is
  *held* with the key it would have had; the first later Paid
  ``members:update``/``members:pledge:update`` (charge date not older) grants it.
  Any non-Paid status is held (Declined first charges are retried by Patreon).
* ``renewal``: a ``members:update`` with Paid and a charge date newer than the
  newest one accounted for (the pledge's first charge, earlier renewals, upgrade
  charges). The pledge's first charge is never a renewal: not when the pledge
  began unpaid and this is the first Paid, and not, for a member never seen
  before, when the charge lies within ``INITIAL_CHARGE_WINDOW_S`` of the pledge start.
* ``members:pledge:update``: every pledge change, or with ``upgrade_only`` only
  when the pledge level (``currently_entitled_amount_cents``, else the best
  included tier) is higher than the last level remembered for the member (from
  the pledge, its changes and paid charges; a declined month's drop to 0 is not
  remembered). With no remembered level it is not an upgrade.
* Revocation: rules whose ``revoke_on`` names the trigger
  (``members:pledge:delete``) or the charge status (Declined, Refunded, Fraud;
  "Refunded by Patreon" counts as Refunded, "Partially Refunded" does not) take
  back every grant they made for the member that was not taken back yet (how,
  by the original's state, is ``producers.patreon.members._take_back``). An
  event whose charge date (or pledge start, for a delete) is older than the
  remembered one is stale and revokes nothing. A rule does not grant from an
  event whose status it revokes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from config.rewards import PatreonRule, PledgeCreateRule, PledgeUpdateRule, RenewalRule
from producers.patreon.events import MemberEvent

__all__ = [
    "CREATE",
    "DELETE",
    "INITIAL_CHARGE_WINDOW_S",
    "PLEDGE_UPDATE",
    "UPDATE",
    "GrantDecision",
    "Hold",
    "MemberMemory",
    "Plan",
    "decide",
    "revoke_trigger",
]

CREATE = "members:pledge:create"
UPDATE = "members:update"
PLEDGE_UPDATE = "members:pledge:update"
DELETE = "members:pledge:delete"
PAID = "Paid"

#: Charge statuses that can revoke, as ``revoke_on`` spells them (docs/patreon.md §4 lists the statuses).
_REVOKING_STATUSES = {
    "Declined": "Declined",
    "Refunded": "Refunded",
    "Refunded by Patreon": "Refunded",
    "Fraud": "Fraud",
}

#: Seconds after the pledge start within which a Paid charge of a never-seen member is the pledge's
#: first charge, not a renewal. Campaigns that charge up front charge within seconds of pledging
#: (the samples: 7 s); a day leaves room for payment delays and is far below any billing cycle.
INITIAL_CHARGE_WINDOW_S = 24 * 3600


@dataclass(frozen=True)
class Hold:
    """A ``require_paid`` grant waiting for the first charge to be Paid."""

    rule_id: str
    #: The fact of the grant's idempotency key, fixed when the pledge was seen.
    fact: str
    #: The pending charge's date; an older Paid does not release the hold.
    charge_date: str | None = None


@dataclass(frozen=True)
class MemberMemory:
    """What we remember of one member between events (empty for a member never seen)."""

    #: Newest charge date accounted for (a pledge's first charge, Paid charges).
    charge_date: str | None = None
    #: Start of the newest pledge seen (``pledge_relationship_start``).
    pledge_start: str | None = None
    #: Last known pledge level in cents.
    cents: int | None = None
    #: Whether the newest pledge's first charge is known to be paid (None: never saw the pledge).
    first_paid: bool | None = None
    holds: Mapping[str, Hold] = field(default_factory=dict)
    #: Rule id -> ids of the grants that rule made for the member and did not revoke yet.
    grants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: (rule id, fact) -> id of the grant made for it, kept forever (revoked ones too): an event replayed
    #: after its idempotency claim expired finds its grant here and grants nothing.
    granted: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: Grant id -> its state when a take-back of it was left to an operator (dead, unknown, sending).
    review: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GrantDecision:
    """Grant ``rule``'s items; ``fact`` identifies the business event (see the module docstring)."""

    rule: PatreonRule
    fact: str

    def idempotency_key(self, member_id: str) -> str:
        return f"patreon:{member_id}:{self.fact}:{self.rule.rule_id}"


@dataclass
class Plan:
    """Everything one event asks for; ``producers.patreon.members.handle_event`` carries it out in this order."""

    #: Rule ids whose recorded grants are taken back, and why (the trigger or status).
    revoke: list[str] = field(default_factory=list)
    revoke_reason: str = ""
    grants: list[GrantDecision] = field(default_factory=list)
    new_holds: list[Hold] = field(default_factory=list)
    #: Rule ids whose hold this event used up (granted, or its rule no longer exists).
    released_holds: list[str] = field(default_factory=list)
    drop_all_holds: bool = False
    #: Raise the remembered charge date to this (never lowers it).
    charge_date: str | None = None
    #: Plain fields to remember: ``pledge_start``, ``cents``, ``first_paid``.
    remember: dict[str, str] = field(default_factory=dict)
    #: Grants and holds not asked for because memory says they were granted before (a replay).
    already_granted: int = 0
    #: Why parts of the event were skipped, for the log.
    notes: list[str] = field(default_factory=list)

    @property
    def acts(self) -> bool:
        """True when the plan grants, holds or revokes anything."""
        return bool(self.revoke or self.grants or self.new_holds or self.released_holds or self.drop_all_holds)


def revoke_trigger(status: str | None) -> str | None:
    """The ``revoke_on`` name of a charge status, if that status can revoke."""
    return _REVOKING_STATUSES.get(status or "")


def decide(event: MemberEvent, memory: MemberMemory, rules: Sequence[PatreonRule]) -> Plan:
    """The plan for ``event`` given ``memory`` and the ``[[patreon.rules]]`` (in file order)."""
    plan = Plan()
    status_trigger = revoke_trigger(event.last_charge_status)
    stale_charge = _older(event.last_charge_date, memory.charge_date)
    stale_pledge = _older(event.pledge_start, memory.pledge_start)

    triggers: set[str] = set()
    if event.trigger == DELETE:
        if stale_pledge:
            plan.notes.append("pledge deletion of an older pledge: ignored")
        else:
            triggers.add(DELETE)
            plan.drop_all_holds = bool(memory.holds)
    if status_trigger is not None:
        if stale_charge:
            plan.notes.append(f"{event.last_charge_status} charge older than the last one seen: revokes nothing")
        else:
            triggers.add(status_trigger)
    plan.revoke = [rule.rule_id for rule in rules if triggers.intersection(rule.revoke_on)]
    plan.revoke_reason = ", ".join(sorted(triggers))
    blocked = {rule.rule_id for rule in rules if status_trigger is not None and status_trigger in rule.revoke_on}
    eligible = [rule for rule in rules if rule.rule_id not in blocked]

    if event.trigger == CREATE:
        _pledge_created(event, memory, plan, eligible, stale_pledge)
    elif event.trigger in (UPDATE, PLEDGE_UPDATE):
        _release_holds(event, memory, plan, rules, stale_charge)
        if event.trigger == UPDATE:
            _charge(event, memory, plan, eligible, stale_charge)
        else:
            _pledge_updated(event, memory, plan, eligible, stale_charge)
    return plan


# -- per trigger ------------------------------------------------------------------------------------


def _pledge_created(
    event: MemberEvent, memory: MemberMemory, plan: Plan, rules: Sequence[PatreonRule], stale: bool
) -> None:
    if stale:
        plan.notes.append("pledge older than the newest one seen: ignored")
        return
    # A redelivery, or a create that arrives after later news of its pledge: memory knows newer facts
    # (a changed level, a first charge paid by now) and keeps them; the grants are found again by fact.
    late = _known_pledge(event, memory) or _older(event.last_charge_date, memory.charge_date)
    paid = event.last_charge_status == PAID or (late and memory.first_paid is True)
    fact = f"pledge-{event.pledge_start or 'none'}-{event.last_charge_date or 'none'}"
    for rule in rules:
        if not isinstance(rule, PledgeCreateRule) or not _matches(rule, event, plan):
            continue
        if _granted_before(rule, fact, memory, plan):
            continue
        if rule.require_paid and not paid:
            plan.new_holds.append(Hold(rule.rule_id, fact, event.last_charge_date))
        else:
            plan.grants.append(GrantDecision(rule, fact))
    # The pledge's first charge is accounted for whatever its status: its later Paid is no renewal.
    plan.charge_date = event.last_charge_date
    if event.pledge_start is not None:
        plan.remember["pledge_start"] = event.pledge_start
    if late:
        plan.notes.append("pledge already known: its later level and charge status are kept")
        if paid:
            plan.remember["first_paid"] = "1"
        return
    plan.remember["first_paid"] = "1" if paid else "0"
    _remember_level(event, plan)


def _release_holds(
    event: MemberEvent, memory: MemberMemory, plan: Plan, rules: Sequence[PatreonRule], stale: bool
) -> None:
    if event.last_charge_status != PAID or stale:
        return
    by_id = {rule.rule_id: rule for rule in rules}
    for rule_id, hold in memory.holds.items():
        if _older(event.last_charge_date, hold.charge_date):
            continue
        plan.released_holds.append(rule_id)
        rule = by_id.get(rule_id)
        if rule is None:
            plan.notes.append(f"held grant of rule {rule_id} dropped: the rule is gone from the rewards file")
        elif not _granted_before(rule, hold.fact, memory, plan):
            plan.grants.append(GrantDecision(rule, hold.fact))


def _charge(event: MemberEvent, memory: MemberMemory, plan: Plan, rules: Sequence[PatreonRule], stale: bool) -> None:
    """``members:update``: a Paid charge newer than any accounted for is a renewal."""
    date = event.last_charge_date
    if event.last_charge_status != PAID or date is None:
        return
    if stale:
        plan.notes.append("paid charge older than the last one seen: no renewal")
        return
    if memory.charge_date is not None and date <= memory.charge_date:
        plan.notes.append("charge already accounted for: no renewal")
    elif memory.first_paid is False:
        plan.notes.append("first paid charge of the pledge: no renewal")
    elif memory.first_paid is None and _within_initial_window(event):
        plan.notes.append("charge at the pledge start: the pledge's first charge, no renewal")
    else:
        fact = f"charge-{date}"
        for rule in rules:
            if (
                isinstance(rule, RenewalRule)
                and _matches(rule, event, plan)
                and not _granted_before(rule, fact, memory, plan)
            ):
                plan.grants.append(GrantDecision(rule, fact))
    new_charge = memory.charge_date is None or date > memory.charge_date
    plan.charge_date = date
    plan.remember["first_paid"] = "1"
    if new_charge:  # an accounted charge told again may carry a level older than a pledge change since
        _remember_level(event, plan)


def _pledge_updated(
    event: MemberEvent, memory: MemberMemory, plan: Plan, rules: Sequence[PatreonRule], stale: bool
) -> None:
    if stale:
        plan.notes.append("pledge change with a charge older than the last one seen: ignored")
        return
    level = event.level_cents
    upgrade = memory.cents is not None and level is not None and level > memory.cents
    tiers = "+".join(event.tier_ids or ()) or "none"
    fact = f"update-{tiers}-{level if level is not None else 'none'}-{event.last_charge_date or 'none'}"
    for rule in rules:
        if not isinstance(rule, PledgeUpdateRule) or not _matches(rule, event, plan):
            continue
        if rule.upgrade_only and not upgrade:
            plan.notes.append(f"rule {rule.rule_id}: not an upgrade (level {level}, previously {memory.cents})")
            continue
        if not _granted_before(rule, fact, memory, plan):
            plan.grants.append(GrantDecision(rule, fact))
    if event.last_charge_status == PAID:
        plan.charge_date = event.last_charge_date
        plan.remember["first_paid"] = "1"
    _remember_level(event, plan)


# -- helpers --------------------------------------------------------------------------------------------


def _matches(rule: PatreonRule, event: MemberEvent, plan: Plan) -> bool:
    """The rule's filters: ``tier_id`` among the entitled tiers, ``min_cents`` at most the pledge level."""
    if rule.tier_id is not None and rule.tier_id not in (event.tier_ids or ()):
        plan.notes.append(f"rule {rule.rule_id}: tier {rule.tier_id} not entitled")
        return False
    min_cents = rule.min_cents if isinstance(rule, PledgeCreateRule | RenewalRule) else None
    if min_cents is not None and (event.level_cents or 0) < min_cents:
        plan.notes.append(f"rule {rule.rule_id}: {event.level_cents or 0} cents is below {min_cents}")
        return False
    return True


def _granted_before(rule: PatreonRule, fact: str, memory: MemberMemory, plan: Plan) -> bool:
    """True (and noted) when memory holds the grant ``rule`` made for ``fact``: a replay, however late."""
    grant_id = memory.granted.get((rule.rule_id, fact))
    if grant_id is None:
        return False
    plan.already_granted += 1
    plan.notes.append(f"rule {rule.rule_id}: {fact} granted before (grant {grant_id})")
    return True


def _remember_level(event: MemberEvent, plan: Plan) -> None:
    if event.level_cents is not None:
        plan.remember["cents"] = str(event.level_cents)


def _known_pledge(event: MemberEvent, memory: MemberMemory) -> bool:
    """The event names the pledge memory already holds (its create was seen before)."""
    return event.pledge_start is not None and event.pledge_start == memory.pledge_start


def _older(date: str | None, than: str | None) -> bool:
    """True when both are known and ``date`` is strictly before ``than`` (normalised dates sort as text)."""
    return date is not None and than is not None and date < than


def _within_initial_window(event: MemberEvent) -> bool:
    if event.last_charge_date is None or event.pledge_start is None:
        return False
    gap_s = (_parse(event.last_charge_date) - _parse(event.pledge_start)).total_seconds()
    return 0 <= gap_s <= INITIAL_CHARGE_WINDOW_S


def _parse(normalised: str) -> datetime:
    return datetime.strptime(normalised, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
