"""A read-back decides only from evidence: a baseline read for the request, a profile in the documented shape.

Members of an economy bot buy, sell and trade between our grants, so the profile recorded with our last
delivery says nothing about the inventory when the next request goes out. These reproduce what an
independent check found (a change made elsewhere shortly before an ambiguous request doubled or lost the
grant; a profile under another field name read as "no entry" and doubled it), and what must hold now:
0 doubled, 0 recorded delivered but not applied; ``unknown`` where nothing can be known.
"""

from __future__ import annotations

import pytest
from redis import Redis

from config.settings import RateLimit
from simulator.wetbot import WetbotSimulator
from tests.baselines import fill_window
from tests.conftest import API_KEY, GUILD, USER, CapturingTransport, DelivererFactory, ScheduleDriver, SettingsFactory
from worker.grant import GrantItem, GrantState, NewGrant
from worker.key_health import read_key_health
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter
from worker.verify import VERIFY_WINDOW_S


def grant(ledger: Ledger, key: str, amount: float = 1, user: str = USER) -> str:
    new = NewGrant(GUILD, user, (GrantItem("gem", amount),), source="test", idempotency_key=f"t:{key}")
    return ledger.create(new).grant.id


def times_applied(sim: WetbotSimulator, amount: float, user: str = USER) -> int:
    return sum(1 for change in sim.applied() if change.user_id == user and change.items == (("gem", amount),))


def methods(sim: WetbotSimulator) -> list[str]:
    return [record.method for record in sim.requests()]


def state(ledger: Ledger, grant_id: str) -> GrantState:
    found = ledger.get(grant_id)
    assert found is not None
    return found.state


def test_spent_elsewhere_then_applied_but_answered_500_is_delivered_once(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """The member spent 1 gem in the bot after our last delivery; our 1-gem grant was applied, answered 500.
    Judged against the recorded profile (5) the read-back (5) looked "not applied": sent twice."""
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.3))
    deliverer.deliver(grant(ledger, "earlier", amount=5))
    sim.adjust(GUILD, USER, "gem", -1)  # a purchase in Discord, 2 s before our request in the check
    grant_id = grant(ledger, "x")
    sim.inject("500_after", method="POST")
    deliverer.deliver(grant_id)
    driver.run(deliverer)

    assert times_applied(sim, 1) == 1, ledger.history(grant_id)
    assert state(ledger, grant_id) == GrantState.DELIVERED
    assert "verified by read-back: applied" in ledger.history(grant_id)[-1].reason
    assert sim.inventory(GUILD, USER) == {"gem": 5.0}


def test_earned_elsewhere_then_refused_with_500_is_sent_again_not_recorded_delivered(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """The member earned 1 gem elsewhere; our 1-gem grant got a 500 before WetBot applied it. Against the
    recorded profile (5) the read-back (6) looked "applied": recorded delivered, never applied."""
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.3))
    deliverer.deliver(grant(ledger, "earlier", amount=5))
    sim.adjust(GUILD, USER, "gem", 1)
    grant_id = grant(ledger, "x")
    sim.inject("500_before", method="POST")
    deliverer.deliver(grant_id)
    driver.run(deliverer)

    assert times_applied(sim, 1) == 1, ledger.history(grant_id)
    assert state(ledger, grant_id) == GrantState.DELIVERED
    assert any("verified by read-back: not applied" in t.reason for t in ledger.history(grant_id))
    assert sim.inventory(GUILD, USER) == {"gem": 7.0}


def test_a_new_member_already_holding_the_amount_is_not_taken_for_applied(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """Never granted to, the member already holds exactly 1 gem: "no entry" + 1 looked like our grant."""
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.3))
    sim.adjust(GUILD, USER, "gem", 1)
    grant_id = grant(ledger, "x")
    sim.inject("500_before", method="POST")
    deliverer.deliver(grant_id)
    driver.run(deliverer)

    assert times_applied(sim, 1) == 1, ledger.history(grant_id)
    assert state(ledger, grant_id) == GrantState.DELIVERED
    assert sim.inventory(GUILD, USER) == {"gem": 2.0}


@pytest.mark.parametrize("fault", ["500_after", "500_before"])
def test_ten_members_with_outside_activity_none_doubled_none_lost(
    fault: str,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """The check's 10-of-10 runs: each member spent or earned 1 gem elsewhere before an ambiguous request."""
    sim.set_limit(100, 1.0)
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.3, wetbot_rate_limit=RateLimit(100, 1.0)))
    users = [f"3000000000000000{n:02d}" for n in range(10)]
    ids = []
    for n, user in enumerate(users):
        deliverer.deliver(grant(ledger, f"earlier-{n}", amount=5, user=user))
        sim.adjust(GUILD, user, "gem", -1 if n % 2 else 1)
        ids.append(grant(ledger, f"x-{n}", user=user))
        sim.inject(fault, method="POST", user_id=user)
    for grant_id in ids:
        deliverer.deliver(grant_id)
    driver.run(deliverer)

    for grant_id, user in zip(ids, users, strict=True):
        assert times_applied(sim, 1, user) == 1, ledger.history(grant_id)
        assert state(ledger, grant_id) == GrantState.DELIVERED


def test_without_a_spare_slot_no_baseline_is_read_and_an_ambiguous_outcome_is_held_unknown(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    redis: Redis,
    keys: Keys,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    """A key with a backlog spends its slots on grants: no read before the request, and then no guess."""
    settings = make_settings(wetbot_timeout_s=0.3)
    deliverer = make_deliverer(settings)
    limiter = SlidingWindowLimiter(redis, keys, settings.wetbot_rate_limit)
    client = deliverer.clients.for_guild(GUILD)
    assert client is not None
    assert fill_window(redis, keys, limiter, client.key_id) > 0
    grant_id = grant(ledger, "x")
    sim.inject("500_after", method="POST")
    deliverer.deliver(grant_id)
    driver.run(deliverer)

    assert methods(sim) == ["POST"], "no read before the request, no read-back that could not decide"
    found = ledger.get(grant_id)
    assert found is not None and found.state == GrantState.UNKNOWN
    assert "no baseline was read before the request" in found.last_error
    assert times_applied(sim, 1) == 1


def test_a_quiet_key_reads_the_baseline_right_before_the_request(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
) -> None:
    deliverer = make_deliverer(make_settings())
    grant_id = grant(ledger, "x", amount=3)
    deliverer.deliver(grant_id)
    assert methods(sim) == ["GET", "POST"]
    found = ledger.get(grant_id)
    assert found is not None and found.state == GrantState.DELIVERED
    assert found.baseline == {"gem": None} and found.baseline_at is not None


def test_after_a_429_no_slot_is_spare_for_a_while(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """WetBot's limit can be stricter than ours (a key another tool uses too): after a 429 a read before
    each request would push every request into the next 429, so reads stop for a while."""
    sim.set_limit(1, 1.0)  # the server: 1 a second; the service believes in 10 a second
    deliverer = make_deliverer(make_settings(wetbot_rate_limit=RateLimit(10, 1.0)))
    first, second = grant(ledger, "a"), grant(ledger, "b", user="222222222222222223")
    deliverer.deliver(first)  # GET answered, then the POST is refused with 429
    driver.run(deliverer)
    deliverer.deliver(second)
    driver.run(deliverer)
    assert state(ledger, first) == GrantState.DELIVERED and state(ledger, second) == GrantState.DELIVERED
    assert sim.count_status(429) <= 2, methods(sim)
    assert methods(sim)[-1:] == ["POST"] and methods(sim).count("GET") == 1, "no read after the 429"


def test_a_refused_key_on_the_baseline_read_sends_nothing_more(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    redis: Redis,
    keys: Keys,
) -> None:
    deliverer = make_deliverer(make_settings())
    client = deliverer.clients.for_guild(GUILD)
    assert client is not None
    sim.revoke_key(API_KEY)
    grant_id = grant(ledger, "x")
    deliverer.deliver(grant_id)
    assert methods(sim) == ["GET"] and sim.count_status(401) == 1
    assert state(ledger, grant_id) == GrantState.QUEUED
    assert read_key_health(redis, keys, client.key_id, GUILD).paused


def test_the_retry_policy_reads_no_baseline(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
) -> None:
    deliverer = make_deliverer(make_settings(ambiguous_policy="retry"))
    deliverer.deliver(grant(ledger, "x"))
    assert methods(sim) == ["POST"]


def test_a_baseline_older_than_the_window_decides_nothing(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    redis: Redis,
    keys: Keys,
    driver: ScheduleDriver,
) -> None:
    """A read-back long after the baseline (read-backs that kept failing, a late operator check) cannot tell."""
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.3))
    grant_id = grant(ledger, "x")
    sim.inject("500_before", method="POST")
    deliverer.deliver(grant_id)
    found = ledger.get(grant_id)
    assert found is not None and found.verify_pending and found.baseline_at is not None
    redis.hset(keys.grant(grant_id), "baseline_at", repr(found.baseline_at - VERIFY_WINDOW_S - 5))
    driver.run(deliverer)

    found = ledger.get(grant_id)
    assert found is not None and found.state == GrantState.UNKNOWN
    assert "the baseline was read" in found.last_error and "ago" in found.last_error
    assert methods(sim) == ["GET", "POST"], "no read-back spent on a comparison that means nothing"


DRIFTS = ["items", "itemId", "amount_string", "no_inventory", "not_object"]


@pytest.mark.parametrize("shape", DRIFTS)
def test_a_profile_in_another_shape_never_reads_as_no_entry(
    shape: str,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    """The check's 10 of 10 applied twice: a new member, the profile's inventory under another name, a 500
    after applying; "no entry" read back matched the "no entry" baseline and the grant was sent again."""
    sim.set_limit(100, 1.0)
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.3, wetbot_rate_limit=RateLimit(100, 1.0)))
    sim.set_profile_shape(shape)
    users = [f"4000000000000000{n:02d}" for n in range(3)]
    ids = [grant(ledger, f"x-{n}", user=user) for n, user in enumerate(users)]
    for user in users:
        sim.inject("500_after", method="POST", user_id=user)
    for grant_id in ids:
        deliverer.deliver(grant_id)
    driver.run(deliverer)

    for grant_id, user in zip(ids, users, strict=True):
        assert times_applied(sim, 1, user) == 1, ledger.history(grant_id)
        assert state(ledger, grant_id) == GrantState.UNKNOWN
    shape_events = [e for e in sentry_events.events if e.get("tags", {}).get("kind") == "profile_shape"]
    assert len(shape_events) == 1, "one report per problem, not one per grant"


@pytest.mark.parametrize("shape", DRIFTS)
def test_a_read_back_in_another_shape_cannot_tell(
    shape: str,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """The baseline was read in the documented shape; the profile read back is not: cannot tell."""
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.3))
    grant_id = grant(ledger, "x")
    sim.inject("500_after", method="POST")
    deliverer.deliver(grant_id)
    sim.set_profile_shape(shape)
    driver.run(deliverer)

    assert times_applied(sim, 1) == 1
    found = ledger.get(grant_id)
    assert found is not None and found.state == GrantState.UNKNOWN, ledger.history(grant_id)


def test_a_delivered_answer_in_another_shape_is_still_delivered(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    sentry_events: CapturingTransport,
) -> None:
    """WetBot's 2xx envelope says it applied the request; only the resulting amounts are unreadable."""
    deliverer = make_deliverer(make_settings(ambiguous_policy="retry"))
    sim.set_profile_shape("itemId")
    grant_id = grant(ledger, "x")
    deliverer.deliver(grant_id)
    found = ledger.get(grant_id)
    assert found is not None and found.state == GrantState.DELIVERED and found.result is None
    assert any(e.get("tags", {}).get("kind") == "profile_shape" for e in sentry_events.events)
