"""``decide``: what a Patreon member event means given what we remember (pure: no Redis)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from config.rewards import PatreonRule, parse_rewards
from producers.patreon.events import MemberEvent, parse_event
from producers.patreon.rules import Hold, MemberMemory, Plan, decide
from producers.patreon.samples import Member, encode
from tests.conftest import GUILD

MARCH = "2024-03-08T08:24:05.000+00:00"
APRIL = "2024-04-08T09:02:11.000+00:00"
MAY = "2024-05-08T09:00:00.000+00:00"


def rules(*specs: dict[str, Any]) -> list[PatreonRule]:
    config = parse_rewards(
        {"guild_id": GUILD, "patreon": {"rules": [{"items": [{"id": "gem", "amount": 1}], **spec} for spec in specs]}}
    )
    return config.patreon.rules


def event(trigger: str, **member: Any) -> MemberEvent:
    return parse_event(trigger, encode(Member(**member).document()))


def keys(plan: Plan, member: str = "m") -> list[str]:
    return [g.idempotency_key(member) for g in plan.grants]


def test_a_new_pledge_grants_each_matching_rule_keyed_on_the_pledge() -> None:
    found = rules(
        {"name": "any", "event": "members:pledge:create"},
        {"name": "silver", "event": "members:pledge:create", "tier_id": "9512103", "min_cents": 500},
        {"name": "gold", "event": "members:pledge:create", "tier_id": "9512023"},
        {"name": "rich", "event": "members:pledge:create", "min_cents": 501},
        {"name": "monthly", "event": "renewal"},
    )
    plan = decide(event("members:pledge:create", charge_date=MARCH), MemberMemory(), found)
    assert keys(plan) == [
        "patreon:m:pledge-20240308T082358Z-20240308T082405Z:any",
        "patreon:m:pledge-20240308T082358Z-20240308T082405Z:silver",
    ]
    assert plan.charge_date == "20240308T082405Z" and plan.remember == {
        "first_paid": "1",
        "pledge_start": "20240308T082358Z",
        "cents": "500",
    }
    assert any("tier 9512023 not entitled" in note for note in plan.notes)


def test_require_paid_holds_a_pending_pledge_until_a_paid_charge() -> None:
    found = rules(
        {"name": "paid", "event": "members:pledge:create", "require_paid": True},
        {"name": "monthly", "event": "renewal"},
    )
    created = decide(event("members:pledge:create", status="Pending", charge_date=MARCH), MemberMemory(), found)
    assert created.grants == [] and created.remember["first_paid"] == "0"
    [hold] = created.new_holds
    memory = MemberMemory(charge_date="20240308T082405Z", first_paid=False, holds={"paid": hold})

    # A Paid charge of an older date (a replay of an earlier pledge) does not release it.
    older = decide(event("members:update", charge_date="2024-02-01T00:00:00Z"), memory, found)
    assert older.grants == [] and older.released_holds == []
    # The first Paid charge releases it with the key the pledge had, and is not a renewal.
    paid = decide(event("members:update", charge_date="2024-03-09T10:00:00Z"), memory, found)
    assert keys(paid) == [f"patreon:m:{hold.fact}:paid"] and paid.released_holds == ["paid"]
    assert paid.remember["first_paid"] == "1"
    # A pledge change that says Paid releases it too.
    assert keys(decide(event("members:pledge:update", charge_date=MARCH), memory, found)) == [
        f"patreon:m:{hold.fact}:paid"
    ]
    # A hold whose rule was removed from the file is dropped, not granted.
    gone = decide(event("members:update", charge_date=MARCH), memory, rules({"event": "renewal", "name": "r"}))
    assert gone.grants == [] and gone.released_holds == ["paid"]


def test_a_renewal_is_a_paid_charge_newer_than_any_accounted_for() -> None:
    found = rules({"name": "monthly", "event": "renewal", "min_cents": 500})
    seen = MemberMemory(charge_date="20240308T082405Z", first_paid=True, cents=500)
    assert keys(decide(event("members:update", charge_date=APRIL), seen, found)) == [
        "patreon:m:charge-20240408T090211Z:monthly"
    ]
    assert decide(event("members:update", charge_date=MARCH), seen, found).grants == []  # the same charge
    assert decide(event("members:update", charge_date="2024-02-08T00:00:00Z"), seen, found).grants == []  # older
    assert decide(event("members:update", charge_date=APRIL, status="Pending"), seen, found).grants == []
    assert decide(event("members:update", charge_date=APRIL, tiers=(("1", 300),)), seen, found).grants == []
    assert decide(event("members:pledge:update", charge_date=APRIL), seen, found).grants == []


def test_the_first_charge_of_a_member_never_seen_is_no_renewal() -> None:
    found = rules({"name": "monthly", "event": "renewal"})
    first = decide(event("members:update", charge_date=MARCH), MemberMemory(), found)
    assert first.grants == [] and first.charge_date == "20240308T082405Z"
    # A member known from before this service ran: a charge a month after the pledge start is a renewal.
    assert len(decide(event("members:update", charge_date=APRIL), MemberMemory(), found).grants) == 1


def test_upgrade_only_compares_with_the_last_known_level() -> None:
    found = rules(
        {"name": "up", "event": "members:pledge:update", "upgrade_only": True},
        {"name": "any", "event": "members:pledge:update"},
    )
    gold = event("members:pledge:update", charge_date=APRIL, tiers=(("9512023", 1000),))
    plan = decide(gold, MemberMemory(cents=500), found)
    assert keys(plan) == [
        "patreon:m:update-9512023-1000-20240408T090211Z:up",
        "patreon:m:update-9512023-1000-20240408T090211Z:any",
    ]
    assert plan.remember["cents"] == "1000" and plan.charge_date == "20240408T090211Z"
    assert [g.rule.rule_id for g in decide(gold, MemberMemory(cents=1000), found).grants] == ["any"]
    assert [g.rule.rule_id for g in decide(gold, MemberMemory(), found).grants] == ["any"]  # level unknown
    stale = decide(gold, MemberMemory(cents=500, charge_date="20240508T000000Z"), found)
    assert stale.grants == [] and "older" in stale.notes[0]


def test_revocation_follows_revoke_on_and_ignores_stale_events() -> None:
    found = rules(
        {"name": "welcome", "event": "members:pledge:create", "revoke_on": ["members:pledge:delete"]},
        {"name": "monthly", "event": "renewal", "revoke_on": ["Declined", "Refunded"]},
        {"name": "keep", "event": "renewal"},
    )
    memory = MemberMemory(
        charge_date="20240408T090211Z", pledge_start="20240308T082358Z", first_paid=True, holds={"x": Hold("x", "f")}
    )
    deleted = decide(event("members:pledge:delete", charge_date=APRIL), memory, found)
    assert deleted.revoke == ["welcome"] and deleted.drop_all_holds and deleted.grants == []
    declined = decide(event("members:update", status="Declined", charge_date=MAY, tiers=()), memory, found)
    assert declined.revoke == ["monthly"] and declined.revoke_reason == "Declined"
    refunded = decide(event("members:update", status="Refunded by Patreon", charge_date=APRIL), memory, found)
    assert refunded.revoke == ["monthly"]
    assert decide(event("members:update", status="Partially Refunded", charge_date=APRIL), memory, found).revoke == []
    stale = decide(event("members:update", status="Declined", charge_date=MARCH), memory, found)
    assert stale.revoke == [] and "older" in stale.notes[0]
    older_pledge = decide(event("members:pledge:delete", pledge_start="2023-01-01T00:00:00Z"), memory, found)
    assert older_pledge.revoke == [] and not older_pledge.drop_all_holds


def test_a_rule_does_not_grant_from_an_event_whose_status_it_revokes_on() -> None:
    found = rules(
        {"name": "w", "event": "members:pledge:create", "revoke_on": ["Fraud"]},
        {"name": "v", "event": "members:pledge:create"},
    )
    plan = decide(event("members:pledge:create", status="Fraud"), MemberMemory(), found)
    assert [g.rule.rule_id for g in plan.grants] == ["v"] and plan.revoke == ["w"]


def test_an_older_pledge_replayed_after_a_newer_one_is_ignored() -> None:
    found = rules({"name": "w", "event": "members:pledge:create"})
    memory = MemberMemory(pledge_start="20250101T000000Z")
    plan = decide(event("members:pledge:create"), memory, found)
    assert plan.grants == [] and plan.remember == {} and not plan.acts
    assert not decide(event("members:create"), MemberMemory(), found).acts


def test_a_fact_granted_before_is_neither_granted_nor_held_again() -> None:
    found = rules(
        {"name": "w", "event": "members:pledge:create"},
        {"name": "p", "event": "members:pledge:create", "require_paid": True},
        {"name": "monthly", "event": "renewal"},
    )
    pledge = "pledge-20240308T082358Z-20240308T082405Z"
    memory = MemberMemory(
        granted={("w", pledge): "g1", ("p", pledge): "g2", ("monthly", "charge-20240408T090211Z"): "g3"}
    )
    replayed = decide(event("members:pledge:create", status="Pending", charge_date=MARCH), memory, found)
    assert replayed.grants == [] and replayed.new_holds == [] and replayed.already_granted == 2
    renewal = replace(memory, charge_date="20240308T082405Z", first_paid=True)
    assert decide(event("members:update", charge_date=APRIL), renewal, found).grants == []
