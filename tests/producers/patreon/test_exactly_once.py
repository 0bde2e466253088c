"""Patreon exactly once under real faults: memory only moves forward, replays never grant again,
take-backs touch only what reached WetBot, and concurrent deliveries for one member act as one order would.

Everything goes through the real app (signed bodies into ``POST /webhooks/patreon``) and a real Redis;
a real worker and the WetBot simulator where delivery matters. "Claims expired" (40 days later) is
simulated by deleting the idempotency and seen keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from producers.patreon import members as patreon_members
from producers.patreon import rules as patreon_rules
from producers.patreon.events import parse_event
from producers.patreon.members import MemberStore, handle_event
from producers.patreon.samples import Member, encode
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, RunningWorker, SettingsFactory, wait_for
from tests.producers.patreon.test_webhook import APRIL, MARCH, MAY, MEMBER, SECRET, deliver, grants
from wetbot_rewards.app import create_app
from worker.grant import Grant, GrantState
from worker.keys import Keys
from worker.ledger import Ledger

RULES = f"""
guild_id = "{GUILD}"

[[patreon.rules]]
name = "welcome"
event = "members:pledge:create"
revoke_on = ["members:pledge:delete"]
items = [{{ id = "patron-crate", amount = 1 }}]

[[patreon.rules]]
name = "monthly"
event = "renewal"
revoke_on = ["Refunded"]
items = [{{ id = "monthly-crate", amount = 2 }}]

[[patreon.rules]]
name = "upgrade"
event = "members:pledge:update"
upgrade_only = true
items = [{{ id = "upgrade-gift", amount = 1 }}]

[[patreon.rules]]
name = "paid"
event = "members:pledge:create"
require_paid = true
items = [{{ id = "paid-crate", amount = 1 }}]
"""

SILVER = (("9512103", 500),)
GOLD = (("9512023", 1000),)
PLATINUM = (("9512999", 1000),)  # another tier at gold's price: a change to it is sideways

Delivery = tuple[str, Member]


@pytest.fixture
def patreon_settings(make_settings: SettingsFactory, rewards_file: Path) -> Settings:
    rewards_file.write_text(RULES, encoding="utf-8")
    return make_settings(patreon_webhook_secret=SECRET)


@pytest.fixture
def client(patreon_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(patreon_settings)) as test_client:
        yield test_client


def send(client: TestClient, trigger: str, member: Member) -> None:
    assert deliver(client, trigger, encode(member.document())).status_code == 200


def send_all(client: TestClient, deliveries: list[Delivery]) -> None:
    for trigger, member in deliveries:
        send(client, trigger, member)


def expire_claims(redis: Any, keys: Keys) -> None:
    """What 40 days do: every idempotency claim and seen marker is gone (member memory must not be)."""
    for pattern in (f"{keys.prefix}:idem:*", f"{keys.prefix}:seen:*"):
        found = list(redis.scan_iter(match=pattern, count=1000))
        if found:
            redis.delete(*found)


def by_rule(ledger: Ledger) -> list[tuple[str, float]]:
    """(rule, amount) of every grant, sorted: one event's grants share a creation time, so time cannot order them."""
    return sorted((g.rule, g.items[0].amount) for g in grants(ledger))


def of_rule(ledger: Ledger, rule: str) -> Grant:
    [grant] = [g for g in grants(ledger) if g.rule == rule and g.items[0].amount > 0]
    return grant


def linked(**fields: Any) -> Member:
    return Member(discord_id=USER, **fields)


# -- memory only moves forward ---------------------------------------------------------------------------


def test_a_pending_pledge_redelivered_after_its_paid_charge_does_not_swallow_the_next_renewal(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys
) -> None:
    pending = ("members:pledge:create", linked(status="Pending", charge_date=MARCH))
    send_all(
        client,
        [
            pending,
            ("members:update", linked(charge_date=MARCH)),  # the first charge is paid: the held grant, no renewal
            ("members:update", linked(charge_date=APRIL)),  # renewal
            pending,  # Patreon redelivers the create late
            ("members:update", linked(charge_date=MAY)),  # renewal: must not be taken for the pledge's first charge
        ],
    )
    assert MemberStore(redis, keys).load(MEMBER).first_paid is True
    monthly = [g.idempotency_key.split(":")[2] for g in grants(ledger) if g.rule == "monthly"]
    assert monthly == ["charge-20240408T090211Z", "charge-20240508T090000Z"]


def test_a_pledge_redelivered_after_an_upgrade_keeps_the_level_so_a_sideways_change_is_no_upgrade(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys
) -> None:
    create = ("members:pledge:create", linked(charge_date=MARCH, tiers=SILVER))
    send_all(
        client,
        [
            create,
            ("members:pledge:update", linked(charge_date=APRIL, tiers=GOLD)),  # upgrade 500 -> 1000
            create,  # redelivered late
            ("members:pledge:update", linked(charge_date=APRIL, tiers=PLATINUM)),  # 1000 -> 1000: sideways
        ],
    )
    assert MemberStore(redis, keys).load(MEMBER).cents == 1000
    assert [rule for rule, _ in by_rule(ledger)] == ["paid", "upgrade", "welcome"]


def test_an_accounted_charge_told_again_keeps_the_level_a_later_pledge_change_set(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys
) -> None:
    charge = ("members:update", linked(charge_date=MARCH, tiers=SILVER))
    send_all(
        client,
        [
            ("members:pledge:create", linked(charge_date=MARCH, tiers=SILVER)),
            charge,
            ("members:pledge:update", linked(charge_date=MARCH, tiers=GOLD)),  # upgrade, charged next cycle
            charge,  # redelivered
            ("members:pledge:update", linked(charge_date=MARCH, tiers=PLATINUM)),  # sideways
        ],
    )
    assert MemberStore(redis, keys).load(MEMBER).cents == 1000
    assert [rule for rule, _ in by_rule(ledger)] == ["paid", "upgrade", "welcome"]


# -- replays of old signed bodies, however late --------------------------------------------------------------


def test_member_memory_never_expires(client: TestClient, redis: Any, keys: Keys) -> None:
    send(client, "members:pledge:create", linked(charge_date=MARCH))
    key = MemberStore(redis, keys).key(MEMBER)
    assert redis.exists(key) and redis.ttl(key) == -1


def test_every_old_body_replayed_after_the_claims_expired_grants_nothing(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys
) -> None:
    life: list[Delivery] = [
        ("members:pledge:create", linked(status="Pending", charge_date=MARCH, tiers=SILVER)),  # "paid" held
        ("members:update", linked(charge_date=MARCH, tiers=SILVER)),  # paid: the held grant
        ("members:update", linked(charge_date=APRIL, tiers=SILVER)),  # renewal
        ("members:pledge:update", linked(charge_date=APRIL, tiers=GOLD)),  # upgrade
        ("members:pledge:update", linked(charge_date=APRIL, tiers=SILVER)),  # downgrade (same charge)
    ]
    send_all(client, life)
    before = by_rule(ledger)
    assert before == [("monthly", 2.0), ("paid", 1.0), ("upgrade", 1.0), ("welcome", 1.0)]
    expire_claims(redis, keys)
    send_all(client, life)  # a paused webhook resumed after 40 days
    assert by_rule(ledger) == before


def test_a_pledge_replayed_after_its_take_back_and_the_claims_expiry_grants_nothing(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys
) -> None:
    create = ("members:pledge:create", linked(charge_date=MARCH))
    send_all(client, [create, ("members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))])
    before = [(g.id, g.state) for g in grants(ledger)]
    expire_claims(redis, keys)
    send_all(client, [create, ("members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))])
    assert [(g.id, g.state) for g in grants(ledger)] == before


# -- take-backs: only what reached WetBot ------------------------------------------------------------------


def test_a_take_back_of_a_delivered_grant_is_a_negative_grant(
    client: TestClient,
    patreon_settings: Settings,
    ledger: Ledger,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
) -> None:
    workers(patreon_settings)
    send(client, "members:pledge:create", linked(charge_date=MARCH))
    wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED)) == 2, timeout_s=15)
    send(client, "members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))
    wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED)) == 3, timeout_s=15)
    assert by_rule(ledger) == [("paid", 1.0), ("welcome", -1.0), ("welcome", 1.0)]
    assert sim.inventory(GUILD, USER) == {"patron-crate": 0.0, "paid-crate": 1.0}


@pytest.mark.parametrize("state", [GrantState.QUEUED, GrantState.RETRYING])
def test_a_take_back_of_a_grant_not_sent_yet_cancels_it(
    client: TestClient,
    patreon_settings: Settings,
    ledger: Ledger,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
    redis: Any,
    keys: Keys,
    state: GrantState,
) -> None:
    send(client, "members:pledge:create", linked(charge_date=MARCH))
    welcome = of_rule(ledger, "welcome")
    if state is not GrantState.QUEUED:
        assert ledger.transition(welcome.id, state, "test: a failed attempt", expect=[GrantState.QUEUED])
    send(client, "members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))
    assert ledger.get(welcome.id).state == GrantState.CANCELLED  # type: ignore[union-attr]
    assert by_rule(ledger) == [("paid", 1.0), ("welcome", 1.0)]  # no negative grant
    assert "members:pledge:delete" in ledger.history(welcome.id)[-1].reason
    workers(patreon_settings)
    wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED)) == 1, timeout_s=15)
    assert sim.inventory(GUILD, USER) == {"paid-crate": 1.0}
    assert MemberStore(redis, keys).load(MEMBER).grants == {"paid": (of_rule(ledger, "paid").id,)}


def test_a_take_back_of_a_parked_grant_cancels_it(client: TestClient, ledger: Ledger) -> None:
    send(client, "members:pledge:create", Member(charge_date=MARCH))  # no Discord account: parked
    send(client, "members:pledge:delete", Member(charge_date=MARCH, will_pay_cents=0))
    assert sorted((g.rule, g.state) for g in grants(ledger)) == [
        ("paid", GrantState.PARKED),
        ("welcome", GrantState.CANCELLED),
    ]
    # Linking later releases only what is still parked.
    send(client, "members:update", linked(charge_date=MARCH))
    assert sorted((g.rule, g.state) for g in grants(ledger)) == [
        ("paid", GrantState.QUEUED),
        ("welcome", GrantState.CANCELLED),
    ]


def test_a_take_back_of_a_dead_grant_sends_nothing_and_is_left_to_an_operator(
    client: TestClient,
    patreon_settings: Settings,
    ledger: Ledger,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
    redis: Any,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="wetbot_rewards.patreon")
    workers(patreon_settings)
    sim.set_items(GUILD, ["paid-crate"])  # "patron-crate" unknown for now: the welcome grant ends dead
    send(client, "members:pledge:create", linked(charge_date=MARCH))
    wait_for(lambda: len(ledger.list_grants(GrantState.DEAD)) == 1, timeout_s=15)
    sim.set_items(GUILD, None)  # fixed: any item again
    send(client, "members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))
    welcome = of_rule(ledger, "welcome")
    assert by_rule(ledger) == [("paid", 1.0), ("welcome", 1.0)]  # no negative grant
    assert ledger.get(welcome.id).state == GrantState.DEAD  # type: ignore[union-attr]
    assert f"grant {welcome.id} is dead" in caplog.text and "left to an operator" in caplog.text
    assert MemberStore(redis, keys).load(MEMBER).review == {welcome.id: "dead"}
    assert sim.inventory(GUILD, USER).get("patron-crate", 0.0) == 0.0  # never -1


@pytest.mark.parametrize("state", [GrantState.SENDING, GrantState.UNKNOWN])
def test_a_take_back_of_a_grant_whose_fate_is_open_sends_nothing_and_is_left_to_an_operator(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys, caplog: pytest.LogCaptureFixture, state: GrantState
) -> None:
    caplog.set_level("INFO", logger="wetbot_rewards.patreon")
    send(client, "members:pledge:create", linked(charge_date=MARCH))
    welcome = of_rule(ledger, "welcome")
    assert ledger.transition(welcome.id, GrantState.SENDING, "test: a worker sends it", expect=[GrantState.QUEUED])
    if state is GrantState.UNKNOWN:
        assert ledger.transition(welcome.id, state, "test: read timeout", expect=[GrantState.SENDING])
    send(client, "members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))
    assert by_rule(ledger) == [("paid", 1.0), ("welcome", 1.0)]  # no negative grant, nothing cancelled
    assert ledger.get(welcome.id).state == state  # type: ignore[union-attr]
    assert f"grant {welcome.id} is {state.value}" in caplog.text and "left to an operator" in caplog.text
    memory = MemberStore(redis, keys).load(MEMBER)
    assert memory.review == {welcome.id: state.value} and "welcome" not in memory.grants
    # Redelivered: nothing new, still one note.
    send(client, "members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))
    assert len(grants(ledger)) == 2 and MemberStore(redis, keys).load(MEMBER).review == {welcome.id: state.value}


def test_a_grant_a_worker_takes_while_it_is_being_cancelled_is_left_to_an_operator(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(client, "members:pledge:create", linked(charge_date=MARCH))
    welcome = of_rule(ledger, "welcome")
    app_ledger = client.app.state.wetbot.ledger  # type: ignore[attr-defined]
    real_cancel = app_ledger.cancel

    def worker_first(grant_id: str, reason: str, **options: Any) -> bool:
        ledger.transition(grant_id, GrantState.SENDING, "test: a worker took it", expect=[GrantState.QUEUED])
        return bool(real_cancel(grant_id, reason, **options))

    monkeypatch.setattr(app_ledger, "cancel", worker_first)
    send(client, "members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))
    assert by_rule(ledger) == [("paid", 1.0), ("welcome", 1.0)]
    assert ledger.get(welcome.id).state == GrantState.SENDING  # type: ignore[union-attr]
    assert MemberStore(redis, keys).load(MEMBER).review == {welcome.id: "sending"}


# -- two deliveries for one member at the same time ----------------------------------------------------------


def _interleave(monkeypatch: pytest.MonkeyPatch, other: Callable[[], object]) -> None:
    """Run ``other`` (another web process's delivery) right after the first delivery read the member's memory."""
    real = patreon_rules.decide
    pending = [other]

    def deciding(*args: Any) -> Any:
        plan = real(*args)
        if pending:
            pending.pop()()
        return plan

    monkeypatch.setattr(patreon_members, "decide", deciding)


def test_a_renewal_racing_an_upgrade_is_decided_as_if_it_came_second(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(client, "members:pledge:create", linked(charge_date=MARCH, tiers=SILVER))
    state = client.app.state.wetbot  # type: ignore[attr-defined]
    upgrade = parse_event("members:pledge:update", encode(linked(charge_date=APRIL, tiers=GOLD).document()))
    _interleave(monkeypatch, lambda: handle_event(state, upgrade))
    # The upgrade's charge, also announced as members:update, lands while the upgrade is handled.
    send(client, "members:update", linked(charge_date=APRIL, tiers=GOLD))
    assert [rule for rule, _ in by_rule(ledger)] == ["paid", "upgrade", "welcome"]  # no renewal: one charge
    memory = MemberStore(redis, keys).load(MEMBER)
    recorded = {grant_id for ids in memory.grants.values() for grant_id in ids}
    assert recorded == {g.id for g in grants(ledger)}  # every grant is known, so revocable


def test_the_same_pledge_delivered_twice_at_once_grants_once(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = client.app.state.wetbot  # type: ignore[attr-defined]
    create = linked(charge_date=MARCH)
    event = parse_event("members:pledge:create", encode(create.document()))
    _interleave(monkeypatch, lambda: handle_event(state, event))
    send(client, "members:pledge:create", create)
    assert by_rule(ledger) == [("paid", 1.0), ("welcome", 1.0)]
    memory = MemberStore(redis, keys).load(MEMBER)
    assert {grant_id for ids in memory.grants.values() for grant_id in ids} == {g.id for g in grants(ledger)}
