"""Coalescing: a slot carries every grant pending for one (guild, member); each grant keeps its own record."""

from __future__ import annotations

import json
import uuid

import pytest
from redis import Redis

from simulator.wetbot import WetbotSimulator
from tests.baselines import baseline_fields, methods
from tests.conftest import (
    GUILD,
    OTHER_USER,
    USER,
    CapturingTransport,
    DelivererFactory,
    ScheduleDriver,
    SettingsFactory,
)
from worker.coalesce import merge
from worker.effects import StepEffects
from worker.grant import Grant, GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger


def add(ledger: Ledger, key: str, *items: tuple[str, float], user: str = USER) -> str:
    new = NewGrant(GUILD, user, tuple(GrantItem(i, a) for i, a in items), source="test", idempotency_key=f"t:{key}")
    return ledger.create(new).grant.id


def posts(sim: WetbotSimulator) -> list[tuple[tuple[str, float], ...]]:
    return [change.items for change in sim.applied()]


def test_a_backlog_goes_out_as_one_request_per_member(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    ids = [add(ledger, f"u{n}", ("gem", 1), ("potion", n)) for n in (1, 2, 3)]
    ids += [add(ledger, f"o{n}", ("gem", 10), user=OTHER_USER) for n in (1, 2)]
    driver.run(make_deliverer(make_settings()))
    assert methods(sim).count("POST") == 2, "five grants for two members: two requests"
    assert methods(sim) == ["GET", "POST"] * 2, "one baseline read for each member's merged request"
    assert sim.inventory(GUILD, USER) == {"gem": 3, "potion": 6}
    assert sim.inventory(GUILD, OTHER_USER) == {"gem": 20}
    for grant_id in ids:
        grant = ledger.get(grant_id)
        assert grant is not None and grant.state == GrantState.DELIVERED and grant.attempts == 1
        assert [t.to_state for t in ledger.history(grant_id)] == ["queued", "sending", "delivered"]
    first = ledger.get(ids[0])
    assert first is not None and first.result == {"gem": 3, "potion": 6}, "each grant records its items' amounts"
    assert "one request for 3 grants" in ledger.history(ids[0])[1].reason
    assert ledger.get(ids[3]).result == {"gem": 20}  # type: ignore[union-attr]
    # The merged grants' own messages found them delivered and finished without a call.
    assert driver.ran(ids[1]) + driver.ran(ids[2]) <= 2


def test_coalescing_off_sends_one_request_per_grant(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    for n in range(3):
        add(ledger, f"g{n}", ("gem", 1))
    driver.run(make_deliverer(make_settings(wetbot_coalesce=False)))
    assert posts(sim) == [(("gem", 1.0),)] * 3


def test_sums_stay_within_wetbots_range_and_the_item_cap(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    keys: Keys,
) -> None:
    lead = add(ledger, "big-1", ("gem", 6e8))
    add(ledger, "big-2", ("gem", 6e8))  # 1.2e9 would be out of range: next request
    add(ledger, "wide", ("a", 1), ("b", 1))  # with gem that is 3 items: over the cap of 2
    add(ledger, "fits", ("gem", -1e8))  # 6e8 - 1e8 fits
    # big-1 leads: grants due in the same millisecond go in id order (random ids), and "wide" leading
    # would send (a, b) first.
    ledger.redis.zadd(keys.due(), {lead: 0})
    driver.run(make_deliverer(make_settings(wetbot_max_items_per_request=2)))
    sent = posts(sim)
    assert sent[0] == (("gem", 5e8),)
    assert sorted(sent[1:]) == sorted([(("gem", 6e8),), (("a", 1.0), ("b", 1.0))])
    assert all(abs(amount) <= 1e9 for request in sent for _, amount in request)
    assert all(len(request) <= 2 for request in sent)
    assert sim.inventory(GUILD, USER) == {"gem": 1.1e9, "a": 1, "b": 1}


def test_merge_never_sums_to_zero_or_out_of_range() -> None:
    def grant(amount: float, at: float) -> Grant:
        return _grant(f"g{at}", (GrantItem("gem", amount),), at)

    lead = _grant("lead", (GrantItem("gem", 5),), 0)
    merged = merge(lead, [grant(-5, 1), grant(1e9, 2), grant(2, 3)], max_items=50)
    assert merged.ids == ["lead", "g3"] and merged.items == (GrantItem("gem", 7),)


def test_a_refused_merged_request_is_split_so_one_bad_grant_cannot_sink_the_others(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    sim.set_items(GUILD, ["gem", "potion"])
    good = [add(ledger, "a", ("gem", 1)), add(ledger, "b", ("potion", 2))]
    bad = add(ledger, "c", ("nope", 1))
    driver.run(make_deliverer(make_settings()))
    statuses = [r.status for r in sim.requests() if r.method == "POST"]
    assert statuses[0] == 404 and sorted(statuses[1:]) == [200, 200, 404], "one merged request, then each alone"
    assert [ledger.get(g).state for g in good] == [GrantState.DELIVERED] * 2  # type: ignore[union-attr]
    dead = ledger.get(bad)
    assert dead is not None and dead.state == GrantState.DEAD and "nope" in dead.last_error
    assert sim.inventory(GUILD, USER) == {"gem": 1, "potion": 2}
    for grant_id in (*good, bad):
        grant = ledger.get(grant_id)
        assert grant is not None and grant.failures == 0, "the split is not a failure of anyone"
        assert "each goes out alone" in ledger.history(grant_id)[2].reason
    assert [e["tags"]["grant_id"] for e in sentry_events.events] == [bad], "Sentry hears of the bad one only"


@pytest.mark.parametrize(
    ("fault", "final", "applied"), [("500_after", GrantState.DELIVERED, 1), ("500_before", GrantState.DELIVERED, 1)]
)
def test_an_ambiguous_merged_request_is_judged_as_a_whole(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    fault: str,
    final: GrantState,
    applied: int,
) -> None:
    ids = [add(ledger, f"g{n}", ("gem", n)) for n in (1, 2, 3)]
    sim.inject(fault, method="POST")
    driver.run(make_deliverer(make_settings(wetbot_timeout_s=0.3)))
    assert [ledger.get(g).state for g in ids] == [final] * 3  # type: ignore[union-attr]
    assert sim.inventory(GUILD, USER) == {"gem": 6}, "applied exactly once"
    assert len([c for c in sim.applied() if c.kind == "inventory"]) == applied
    # One baseline read for the merged request, one read-back judged it (then, if not applied, one resend
    # with its own baseline read).
    resend = ["GET", "POST"] if fault == "500_before" else []
    assert methods(sim) == ["GET", "POST", "GET", *resend], "one read-back judged the merged request"
    verdict = "applied" if fault == "500_after" else "not applied"
    for grant_id in ids:
        assert any(f"verified by read-back: {verdict}" in t.reason for t in ledger.history(grant_id))


def test_hold_holds_every_grant_of_an_ambiguous_merged_request(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    ids = [add(ledger, f"g{n}", ("gem", n)) for n in (1, 2)]
    sim.inject("500_after", method="POST")
    driver.run(make_deliverer(make_settings(ambiguous_policy="hold")))
    assert [ledger.get(g).state for g in ids] == [GrantState.UNKNOWN] * 2  # type: ignore[union-attr]
    assert sorted(e["tags"]["grant_id"] for e in sentry_events.events) == sorted(ids)
    assert len(sim.applied()) == 1


def test_a_merged_request_whose_worker_died_is_judged_as_a_whole(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    redis: Redis,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    ids = [add(ledger, f"g{n}", ("gem", n)) for n in (1, 2)]
    # A worker read the member's baseline (no gem entry), started one request for both (same run token), then
    # died before its answer was recorded.
    token = uuid.uuid4().hex
    fields = {
        **baseline_fields(redis, ledger, GUILD, USER, {"gem": None}),
        "sent_items": '[["gem", 3]]',
        "request_ids": json.dumps(ids),
    }
    moved = ledger.transition_many(
        ids,
        GrantState.SENDING,
        "sending to WetBot",
        add_attempt=True,
        effects=StepEffects(begin=token, fields=fields),
    )
    assert moved == ids
    driver.run(make_deliverer(make_settings(wetbot_timeout_s=0.3)))
    # Nothing had reached WetBot: one read-back judged the request as a whole ("not applied": no gem at all),
    # and one merged request sent both again.
    for grant_id in ids:
        grant = ledger.get(grant_id)
        assert grant is not None and grant.state == GrantState.DELIVERED
        reasons = [t.reason for t in ledger.history(grant_id)]
        assert any("verified by read-back: not applied" in r for r in reasons)
    assert posts(sim) == [(("gem", 3.0),)]
    assert methods(sim) == ["GET", "GET", "POST"], "one read-back, then the resend's baseline read and the resend"


def _grant(grant_id: str, items: tuple[GrantItem, ...], created_at: float) -> Grant:
    return Grant(
        id=grant_id,
        state=GrantState.QUEUED,
        guild_id=GUILD,
        user_id=USER,
        items=items,
        source="test",
        source_ref="",
        rule="",
        reason="",
        idempotency_key=grant_id,
        attempts=0,
        failures=0,
        last_error="",
        created_at=created_at,
        updated_at=created_at,
    )
