"""The deliver step against the real simulator over HTTP and a real Redis (Deliverer driven directly)."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from config.keyring import key_fingerprint
from config.settings import Settings
from simulator.wetbot import WetbotSimulator
from tests.baselines import baseline_fields, methods
from tests.conftest import (
    API_KEY,
    GUILD,
    OTHER_USER,
    USER,
    CapturingTransport,
    DelivererFactory,
    ScheduleDriver,
    SettingsFactory,
)
from tests.schedule_view import due_in_s
from worker.effects import StepEffects
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.profile import Inventory, parse_inventory


def new_grant(key: str, *, user: str = USER, items: tuple[tuple[str, float], ...] = (("gem", 5),)) -> NewGrant:
    return NewGrant(
        guild_id=GUILD,
        user_id=user,
        items=tuple(GrantItem(i, a) for i, a in items),
        source="test",
        idempotency_key=f"test:{key}",
    )


def test_delivered_grant_records_profile_and_resulting_amounts(
    settings: Settings, make_deliverer: DelivererFactory, ledger: Ledger, sim: WetbotSimulator
) -> None:
    first = ledger.create(new_grant("a", items=(("gem", 5), ("potion", 2)))).grant
    second = ledger.create(new_grant("b", items=(("gem", 1.5),))).grant
    deliverer = make_deliverer(settings)

    deliverer.deliver(first.id)  # one request carries both (coalescing); each grant records its items' amounts
    deliverer.deliver(second.id)  # already delivered: finishes without a call

    assert [change.items for change in sim.applied()] == [(("gem", 6.5), ("potion", 2.0))]
    done = ledger.get(second.id)
    assert done is not None and done.state == GrantState.DELIVERED
    assert done.result == {"gem": 6.5}
    assert ledger.get(first.id).result == {"gem": 6.5, "potion": 2.0}  # type: ignore[union-attr]
    snapshot = ledger.get_profile(GUILD, USER)
    assert snapshot is not None and snapshot.profile is not None and abs(snapshot.at - time.time()) < 5
    assert parse_inventory(snapshot.profile) == Inventory({"gem": 6.5, "potion": 2})
    assert sim.inventory(GUILD, USER) == {"gem": 6.5, "potion": 2}
    assert [t.to_state for t in ledger.history(first.id)] == ["queued", "sending", "delivered"]
    assert done.attempts == 1 and done.failures == 0


def test_same_idempotency_key_creates_one_grant(ledger: Ledger) -> None:
    first = ledger.create(new_grant("same"))
    again = ledger.create(new_grant("same", items=(("other", 1),)))
    assert first.created and not again.created
    assert again.grant.id == first.grant.id
    assert len(ledger.list_grants()) == 1


def test_a_delivered_grant_is_never_sent_again(
    settings: Settings, make_deliverer: DelivererFactory, ledger: Ledger, sim: WetbotSimulator
) -> None:
    grant = ledger.create(new_grant("once")).grant
    deliverer = make_deliverer(settings)
    for _ in range(3):
        deliverer.deliver(grant.id)
    assert len(sim.applied()) == 1
    # One baseline read and one POST; the later runs send nothing and read nothing.
    assert methods(sim) == ["GET", "POST"]


def test_500_before_applying_is_retried_and_delivered_once(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    grants = [ledger.create(new_grant(f"g{i}", user=u)).grant for i, u in enumerate((USER, OTHER_USER))]
    sim.inject("500_before", count=2, method="POST")
    deliverer = make_deliverer(make_settings())
    for grant in grants:
        deliverer.deliver(grant.id)
    driver.run(deliverer)

    for grant in grants:
        done = ledger.get(grant.id)
        assert done is not None and done.state == GrantState.DELIVERED
        assert done.failures == 1 and done.attempts == 2
        assert "HTTP 500" in (ledger.history(grant.id)[2].reason)
    assert sorted(c.user_id for c in sim.applied()) == sorted([USER, OTHER_USER])


def test_retries_run_out_and_the_grant_ends_dead(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    grant = ledger.create(new_grant("flaky")).grant
    # 408: the server says it gave up before handling the request, so nothing was applied.
    sim.inject("status", count=10, status=408, message="down for maintenance")
    deliverer = make_deliverer(make_settings(wetbot_max_attempts=3))
    deliverer.deliver(grant.id)
    driver.run(deliverer)

    done = ledger.get(grant.id)
    assert done is not None and done.state == GrantState.DEAD
    assert done.failures == 3 and done.attempts == 3
    assert "down for maintenance" in done.last_error
    assert sim.applied() == []
    assert len(sentry_events.events) == 1


def test_unknown_item_ends_dead_with_server_message_and_one_clean_sentry_event(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    sim.set_items(GUILD, ["gem"])
    grant = ledger.create(new_grant("bad-item", items=(("no-such-item", 1),))).grant
    settings = make_settings()
    deliverer = make_deliverer(settings)
    deliverer.deliver(grant.id)
    driver.run(deliverer)
    deliverer.deliver(grant.id)  # a stray duplicate message must not report again

    done = ledger.get(grant.id)
    assert done is not None and done.state == GrantState.DEAD
    assert "Item not found: no-such-item" in done.last_error
    assert "HTTP 404" in done.last_error
    assert done.attempts == 1, "a refused grant is not retried"
    events = sentry_events.events
    assert len(events) == 1
    assert "Item not found" in str(events[0].get("message") or events[0].get("logentry"))
    assert events[0]["tags"]["state"] == "dead"
    raw = sentry_events.raw()
    for secret in settings.secrets():
        assert secret not in raw


@pytest.mark.parametrize("fault", ["drop_before", "slow_after"])
def test_ambiguous_outcome_with_policy_retry_sends_again(
    fault: str,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    grant = ledger.create(new_grant(fault)).grant
    sim.inject(fault, delay_s=1.5)
    deliverer = make_deliverer(make_settings(ambiguous_policy="retry", wetbot_timeout_s=0.5))
    deliverer.deliver(grant.id)
    driver.run(deliverer)

    done = ledger.get(grant.id)
    assert done is not None and done.state == GrantState.DELIVERED
    assert done.failures == 1 and done.attempts == 2
    assert "may have been applied" in ledger.history(grant.id)[2].reason
    assert done.possible_duplicates == 1, "the resend is recorded as a possible duplicate"
    # drop_before applied nothing, so the resend applies once; slow_after had
    # applied already, so "retry" applies it twice: the documented price of the policy.
    assert len(sim.applied()) == (1 if fault == "drop_before" else 2)
    assert sentry_events.events == []


@pytest.mark.parametrize("fault", ["drop_before", "slow_after"])
def test_ambiguous_outcome_with_policy_hold_ends_unknown(
    fault: str,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
) -> None:
    grant = ledger.create(new_grant(fault)).grant
    sim.inject(fault, delay_s=1.5, method="POST")
    deliverer = make_deliverer(make_settings(ambiguous_policy="hold", wetbot_timeout_s=0.5))
    deliverer.deliver(grant.id)
    driver.run(deliverer)

    done = ledger.get(grant.id)
    assert done is not None and done.state == GrantState.UNKNOWN
    assert done.attempts == 1
    assert "held for an operator" in done.last_error
    assert driver.ran(grant.id) == 0, "held grants are not sent again"
    assert len(sim.applied()) == (0 if fault == "drop_before" else 1)
    assert len(sentry_events.events) == 1
    assert sentry_events.events[0]["tags"]["state"] == "unknown"


def test_401_pauses_the_key_keeps_grants_and_resumes(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    keys: Keys,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    sentry_events: CapturingTransport,
    redis: object,
) -> None:
    grants = [ledger.create(new_grant(f"p{i}", user=u)).grant for i, u in enumerate((USER, OTHER_USER))]
    sim.revoke_key(API_KEY)
    deliverer = make_deliverer(make_settings(wetbot_auth_pause_s=0.3, wetbot_max_attempts=1))
    for grant in grants:
        deliverer.deliver(grant.id)

    # The first call (the baseline read) was refused; the key is paused and nothing else was tried.
    assert sim.count_status(401) == 1 and len(sim.requests()) == 1, methods(sim)
    for grant in grants:
        waiting = ledger.get(grant.id)
        assert waiting is not None and waiting.state == GrantState.QUEUED
        assert waiting.failures == 0
    assert len(sentry_events.events) == 1 and sentry_events.events[0]["level"] == "warning"

    # Still refused at the probe: paused again, still no dead grant, still one alert.
    time.sleep(0.4)
    for grant_id, token in driver.schedule.dispatch_batch().dispatched:
        deliverer.deliver(grant_id, token)
    assert sim.count_status(401) == 2
    assert all(g.state == GrantState.QUEUED for g in ledger.list_grants())
    assert len(sentry_events.events) == 1

    sim.restore_key(API_KEY)
    driver.run(deliverer)
    assert [g.state for g in ledger.list_grants()] == [GrantState.DELIVERED, GrantState.DELIVERED]
    assert len(sim.applied()) == 2
    assert not ledger.list_grants(GrantState.DEAD)


def test_server_429_blocks_the_key_without_spending_a_retry(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    # The server is stricter than our configured limit: 1 per 1 s against our 10 per 1 s.
    sim.set_limit(1, 1.0)
    sim.retry_after = True
    grants = [ledger.create(new_grant(f"r{i}", user=u)).grant for i, u in enumerate((USER, OTHER_USER))]
    deliverer = make_deliverer(make_settings(wetbot_rate_limit="10/1s", wetbot_max_attempts=1))
    for grant in grants:
        deliverer.deliver(grant.id)
    driver.run(deliverer)

    # The first grant's baseline read spends the server's one slot, so its POST is refused too; after
    # that 429 no slot counts as spare (``THROTTLED_WINDOWS``) and nothing more is read.
    assert sim.count_status(429) == 2
    assert [r.method for r in sim.requests()].count("GET") == 1
    assert all(g.state == GrantState.DELIVERED and g.failures == 0 for g in ledger.list_grants())
    assert sim.max_in_window(1.0, statuses=[200]) == 1


def test_a_grant_leased_by_another_worker_is_not_sent_twice(
    settings: Settings,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    keys: Keys,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    redis: object,
) -> None:
    grant = ledger.create(new_grant("leased")).grant
    from redis import Redis

    assert isinstance(redis, Redis)
    redis.set(keys.lease(GUILD, USER), "another-grant:run", px=400)
    deliverer = make_deliverer(settings)
    deliverer.deliver(grant.id)
    assert sim.requests() == []
    assert redis.zcard(keys.rate_window(key_fingerprint(API_KEY))) == 0, (
        "a grant that waits for the lease spends no slot"
    )
    due_in = due_in_s(driver.redis, driver.keys, grant.id)
    assert due_in is not None and 0 < due_in <= 0.5, "due when the other run's lease (0.4 s) ends"
    driver.run(deliverer)
    assert len(sim.applied()) == 1


@pytest.mark.parametrize(
    ("policy", "final", "calls"),
    [
        ("retry", GrantState.DELIVERED, ["POST"]),
        ("hold", GrantState.UNKNOWN, []),
        # the read-back, then the resend's baseline read and the resend
        ("verify", GrantState.DELIVERED, ["GET", "GET", "POST"]),
    ],
)
def test_a_grant_left_sending_by_a_dead_worker_follows_the_policy(
    policy: str,
    final: GrantState,
    calls: list[str],
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    redis: Redis,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    grant = ledger.create(new_grant("abandoned")).grant
    # The dead worker had read the baseline (no gem entry) before its request, as a worker does (not under retry).
    fields = {} if policy == "retry" else baseline_fields(redis, ledger, GUILD, USER, {"gem": None})
    assert ledger.transition(
        grant.id, GrantState.SENDING, "sending", add_attempt=True, effects=StepEffects(fields=fields)
    )
    deliverer = make_deliverer(make_settings(ambiguous_policy=policy))
    deliverer.deliver(grant.id)
    driver.run(deliverer)
    done = ledger.get(grant.id)
    assert done is not None and done.state == final
    assert "worker stopped while sending" in ledger.history(grant.id)[2].reason
    # The dead worker's request never reached WetBot here: "retry" and "verify" send it once.
    assert len(sim.applied()) == (0 if policy == "hold" else 1)
    assert methods(sim) == calls


def test_a_403_for_another_guild_does_not_hold_up_this_guild(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    foreign = NewGrant("999999999999999999", USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:foreign")
    stranger = ledger.create(foreign).grant
    local = ledger.create(new_grant("local")).grant
    # The second guild's key is one WetBot knows for another guild: 403 (not this key's guild) for it only.
    sim.add_key("test-misplaced-key-3b8e", "555555555555555555")
    deliverer = make_deliverer(
        make_settings(wetbot_auth_pause_s=30, wetbot_api_keys="999999999999999999=test-misplaced-key-3b8e")
    )
    deliverer.deliver(stranger.id)
    deliverer.deliver(local.id)
    # One refused call (the stranger's baseline read) pauses that key: its POST is not sent after it.
    assert sim.count_status(403) == 1, methods(sim)
    assert ledger.get(local.id).state == GrantState.DELIVERED  # type: ignore[union-attr]
    held = ledger.get(stranger.id)
    assert held is not None and held.state == GrantState.QUEUED and "HTTP 403" in held.last_error
    due_in = due_in_s(driver.redis, driver.keys, stranger.id)
    assert due_in is not None and 29.0 < due_in <= 30.0
