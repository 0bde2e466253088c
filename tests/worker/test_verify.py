"""Ambiguous outcomes are judged by reading the profile back (``AMBIGUOUS_POLICY=verify``), never guessed."""

from __future__ import annotations

import pytest
from redis import Redis

from simulator.wetbot import WetbotSimulator
from tests.baselines import baseline_fields, gets, methods, posts
from tests.conftest import API_KEY, GUILD, USER, CapturingTransport, DelivererFactory, ScheduleDriver, SettingsFactory
from worker.client import ItemDelta, WetbotClient
from worker.effects import StepEffects
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger
from worker.verify import Verdict, judge


def grant(ledger: Ledger, key: str, amount: float = 2) -> str:
    new = NewGrant(GUILD, USER, (GrantItem("gem", amount),), source="test", idempotency_key=f"t:{key}")
    return ledger.create(new).grant.id


@pytest.mark.parametrize("fault", ["500_after", "slow_after"])
@pytest.mark.parametrize("known_before", [False, True])
def test_applied_then_an_error_is_delivered_by_read_back_once(
    fault: str,
    known_before: bool,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5))
    if known_before:  # the member already holds gems, from an earlier delivery
        deliverer.deliver(grant(ledger, "earlier", amount=5))
    grant_id = grant(ledger, "x")
    sim.inject(fault, method="POST", delay_s=1.5)
    deliverer.deliver(grant_id)
    driver.run(deliverer)

    done = ledger.get(grant_id)
    assert done is not None and done.state == GrantState.DELIVERED, ledger.history(grant_id)
    assert "verified by read-back: applied" in ledger.history(grant_id)[-1].reason
    assert done.attempts == 1, "never sent twice"
    assert sim.inventory(GUILD, USER) == {"gem": 7.0 if known_before else 2.0}
    # A baseline read before each request, then one read-back (a slow POST is listed only once answered).
    assert gets(sim) == (2 if known_before else 1) + 1
    assert done.result == {"gem": 7.0 if known_before else 2.0}
    assert sentry_events.events == []


@pytest.mark.parametrize("fault", ["500_before", "drop_before"])
def test_not_applied_is_proven_then_sent_again(
    fault: str,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5))
    deliverer.deliver(grant(ledger, "earlier", amount=5))
    grant_id = grant(ledger, "x")
    sim.inject(fault, method="POST")
    deliverer.deliver(grant_id)
    driver.run(deliverer)

    done = ledger.get(grant_id)
    assert done is not None and done.state == GrantState.DELIVERED
    reasons = [t.reason for t in ledger.history(grant_id)]
    assert any("verified by read-back: not applied" in r for r in reasons), reasons
    assert done.attempts == 2 and done.possible_duplicates == 0
    assert sim.inventory(GUILD, USER) == {"gem": 7.0}


def test_a_change_by_someone_else_meanwhile_leaves_it_unknown(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5))
    deliverer.deliver(grant(ledger, "earlier", amount=5))
    grant_id = grant(ledger, "x")
    sim.inject("500_after", method="POST")
    deliverer.deliver(grant_id)
    # Before the read-back, an admin gives the member 1 gem by hand: neither +0 nor +2 is what we read.
    WetbotClient(sim.url, API_KEY, 2).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    driver.run(deliverer)

    done = ledger.get(grant_id)
    assert done is not None and done.state == GrantState.UNKNOWN
    assert "read-back cannot tell" in done.last_error and "gem=5" in done.last_error and "gem=8" in done.last_error
    assert done.attempts == 1
    assert len(sentry_events.events) == 1 and sentry_events.events[0]["tags"]["state"] == "unknown"


def test_other_grants_of_the_user_wait_for_the_read_back(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5))
    first, second = grant(ledger, "a"), grant(ledger, "b", amount=3)
    sim.inject("500_after", method="POST")
    deliverer.deliver(first)  # one merged request carries both grants; its answer is a 500 after applying
    deliverer.deliver(second)  # a grant of the request waits for the request's read-back
    assert posts(sim) == 1
    driver.run(deliverer)
    assert [ledger.get(g).state for g in (first, second)] == [GrantState.DELIVERED] * 2  # type: ignore[union-attr]
    assert sim.inventory(GUILD, USER) == {"gem": 5.0}
    assert posts(sim) == 1, "the merged request was judged as a whole by one read-back, never resent"
    assert methods(sim) == ["GET", "POST", "GET"], "one baseline read for the merged request, one read-back"
    for grant_id in (first, second):
        assert "verified by read-back: applied" in ledger.history(grant_id)[-1].reason


def test_a_grant_queued_during_a_read_back_waits_for_it(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5))
    first = grant(ledger, "a")
    sim.inject("500_after", method="POST")
    deliverer.deliver(first)
    second = grant(ledger, "b", amount=3)
    deliverer.deliver(second)  # its user waits for the first grant's read-back
    assert posts(sim) == 1
    driver.run(deliverer)
    assert [ledger.get(g).state for g in (first, second)] == [GrantState.DELIVERED] * 2  # type: ignore[union-attr]
    assert sim.inventory(GUILD, USER) == {"gem": 5.0}
    assert posts(sim) == 2, "each grant sent once"


def test_hold_never_resends_a_5xx(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    deliverer = make_deliverer(make_settings(ambiguous_policy="hold"))
    grant_id = grant(ledger, "x")
    sim.inject("500_after", method="POST")
    deliverer.deliver(grant_id)
    driver.run(deliverer)
    assert ledger.get(grant_id).state == GrantState.UNKNOWN  # type: ignore[union-attr]
    assert posts(sim) == 1 and len(sim.applied()) == 1


@pytest.mark.parametrize(
    ("baseline", "now", "verdict"),
    [
        # No baseline was read for the request: nothing can be decided, whatever is read back.
        (None, {"gem": None}, Verdict.UNDECIDED),
        (None, {"gem": 2.0}, Verdict.UNDECIDED),
        (None, {"gem": 5.0}, Verdict.UNDECIDED),
        # A baseline that read no entry for the item: still none is not applied, the granted amount is applied.
        ({"gem": None}, {"gem": None}, Verdict.NOT_APPLIED),
        ({"gem": None}, {"gem": 2.0}, Verdict.APPLIED),
        ({"gem": None}, {"gem": 5.0}, Verdict.UNDECIDED),
        # A baseline or a read-back that does not cover the item decides nothing.
        ({}, {"gem": 2.0}, Verdict.UNDECIDED),
        ({"gem": None}, {}, Verdict.UNDECIDED),
        ({"gem": 5.0}, {"gem": 7.0}, Verdict.APPLIED),
        ({"gem": 5.0}, {"gem": 5.0}, Verdict.NOT_APPLIED),
        ({"gem": 5.0}, {"gem": 6.0}, Verdict.UNDECIDED),
        ({"gem": 0.0}, {"gem": None}, Verdict.UNDECIDED),
    ],
)
def test_judge(baseline: dict[str, float | None] | None, now: dict[str, float | None], verdict: Verdict) -> None:
    assert judge((GrantItem("gem", 2.0),), baseline, now) == verdict


def test_judge_needs_every_item_to_agree() -> None:
    items = (GrantItem("gem", 2.0), GrantItem("potion", 1.0))
    assert judge(items, {"gem": 1.0, "potion": 0.0}, {"gem": 3.0, "potion": 1.0}) == Verdict.APPLIED
    assert judge(items, {"gem": 1.0, "potion": 0.0}, {"gem": 3.0, "potion": 0.0}) == Verdict.UNDECIDED


def test_a_read_back_cut_short_is_read_again_even_under_hold(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    redis: Redis,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    grant_id = grant(ledger, "x")
    # An operator asked for a read-back (resolve --verify) of a request sent with a baseline (no gem entry),
    # and the worker died during the GET.
    fields = {"verify": "1", **baseline_fields(redis, ledger, GUILD, USER, {"gem": None})}
    assert ledger.transition(
        grant_id, GrantState.SENDING, "reading the profile back", add_attempt=True, effects=StepEffects(fields=fields)
    )
    deliverer = make_deliverer(make_settings(ambiguous_policy="hold"))
    deliverer.deliver(grant_id)
    driver.run(deliverer)
    done = ledger.get(grant_id)
    assert done is not None and done.state == GrantState.DELIVERED, ledger.history(grant_id)
    assert "worker stopped while reading the profile back" in ledger.history(grant_id)[2].reason
    # The read-back (not applied), then the resend's baseline read and the resend.
    assert methods(sim) == ["GET", "GET", "POST"]
