"""Ledger retention: old delivered/cancelled grants go, everything dedupe or an operator needs stays."""

from __future__ import annotations

import time

from redis import Redis

from config.settings import Settings
from tests.conftest import GUILD, USER
from worker.broker import build_broker
from worker.creation import Mode, Planned
from worker.effects import Park, StepEffects
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.retention import SECONDS_PER_DAY, GrantTrimmer, LedgerRetention, TrimReport
from worker.runtime import add_worker_middleware
from worker.scripts import load_script

RETENTION_DAYS = 90
RETENTION_S = RETENTION_DAYS * SECONDS_PER_DAY
#: Entered its state this long ago: past retention, and its 40-day claim long expired.
OLD_S = RETENTION_S + 3600


def make_grant(ledger: Ledger, key: str, *, park: bool = False) -> str:
    new = NewGrant(
        GUILD, USER, (GrantItem("gem", 5),), source="test", idempotency_key=key, platform="twitch", external_id="1337"
    )
    return ledger.create_many([Planned(new, Mode.PARK if park else Mode.SCHEDULE)]).results[0].grant.id


def deliver(ledger: Ledger, grant_id: str) -> None:
    """The transitions ``worker.delivery`` makes for a grant WetBot applied."""
    assert ledger.transition(grant_id, GrantState.SENDING, "sending", add_attempt=True)
    assert ledger.transition(grant_id, GrantState.DELIVERED, "WetBot answered 200", last_error="", result={"gem": 5})


def entered_ago(redis: Redis, keys: Keys, grant_id: str, age_s: float, *, claim_expired: bool = True) -> None:
    """Arrange that the grant entered its current state ``age_s`` seconds ago (and its claim expired with time)."""
    state = redis.hget(keys.grant(grant_id), "state")
    assert isinstance(state, bytes)
    at = time.time() - age_s
    redis.zadd(keys.state_index(state.decode()), {grant_id: at}, xx=True)
    redis.zadd(keys.all_grants(), {grant_id: at}, xx=True)
    redis.hset(keys.grant(grant_id), mapping={"created_at": repr(at), "updated_at": repr(at)})
    if claim_expired:
        key = redis.hget(keys.grant(grant_id), "idempotency_key")
        assert isinstance(key, bytes)
        redis.delete(keys.idempotency(key.decode()))


def gone(redis: Redis, keys: Keys, grant_id: str) -> bool:
    """Nothing of the grant is left: record, history, index entries, parked-set membership."""
    left = redis.exists(keys.grant(grant_id), keys.history(grant_id))
    indexed = [redis.zscore(keys.state_index(s.value), grant_id) for s in GrantState]
    indexed.append(redis.zscore(keys.all_grants(), grant_id))
    return (
        left == 0 and indexed == [None] * len(indexed) and not redis.sismember(keys.parked("twitch", "1337"), grant_id)
    )


def intact(ledger: Ledger, grant_id: str, state: GrantState) -> bool:
    grant = ledger.get(grant_id)
    return (
        grant is not None
        and grant.state == state
        and grant_id in [g.id for g in ledger.list_grants(state, limit=10_000)]
        and bool(ledger.history(grant_id))
    )


def test_trims_delivered_and_cancelled_grants_past_retention(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given three delivered grants and one cancelled while parked, all past retention
    delivered = [make_grant(ledger, f"k{n}") for n in range(3)]
    for grant_id in delivered:
        deliver(ledger, grant_id)
    cancelled = make_grant(ledger, "parked", park=True)
    assert ledger.cancel(cancelled, "pledge deleted")
    assert redis.sismember(keys.parked("twitch", "1337"), cancelled)
    for grant_id in [*delivered, cancelled]:
        entered_ago(redis, keys, grant_id, OLD_S)
    # When retention runs
    report = GrantTrimmer(redis, keys, retention_s=RETENTION_S).trim()
    # Then every one of them is gone, with its history and index entries
    assert report == TrimReport(examined=4, trimmed=4, kept=0)
    assert all(gone(redis, keys, grant_id) for grant_id in [*delivered, cancelled])
    assert ledger.counts()[GrantState.DELIVERED] == 0


def test_keeps_grants_younger_than_retention(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given a grant delivered a minute short of retention, and one only just delivered (claims expired by hand)
    almost = make_grant(ledger, "almost")
    fresh = make_grant(ledger, "fresh")
    for grant_id in (almost, fresh):
        deliver(ledger, grant_id)
    entered_ago(redis, keys, almost, RETENTION_S - 60)
    entered_ago(redis, keys, fresh, 0)
    # When retention runs
    report = GrantTrimmer(redis, keys, retention_s=RETENTION_S).trim()
    # Then both stay
    assert report.trimmed == 0
    assert intact(ledger, almost, GrantState.DELIVERED) and intact(ledger, fresh, GrantState.DELIVERED)


def test_age_counts_from_entering_the_final_state(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given a grant created long ago (parked for months, say) but delivered recently
    grant_id = make_grant(ledger, "late")
    deliver(ledger, grant_id)
    old = time.time() - OLD_S
    redis.zadd(keys.all_grants(), {grant_id: old}, xx=True)
    redis.hset(keys.grant(grant_id), "created_at", repr(old))
    # When retention runs
    GrantTrimmer(redis, keys, retention_s=RETENTION_S).trim()
    # Then it stays: only the time in "delivered" counts
    assert intact(ledger, grant_id, GrantState.DELIVERED)


def test_a_live_claim_keeps_its_grant_so_dedupe_still_holds(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given an old delivered grant whose idempotency claim still lives (clocks apart, or a claim made late)
    grant_id = make_grant(ledger, "order-1")
    deliver(ledger, grant_id)
    entered_ago(redis, keys, grant_id, OLD_S, claim_expired=False)
    # When retention runs
    report = GrantTrimmer(redis, keys, retention_s=RETENTION_S).trim()
    # Then the grant is kept, and the same key again finds it instead of failing or granting twice
    assert report == TrimReport(examined=1, trimmed=0, kept=1)
    again = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 5),), source="test", idempotency_key="order-1"))
    assert again.created is False and again.grant.id == grant_id


def test_non_final_dead_and_unknown_grants_are_never_trimmed(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given an ancient grant in every state but delivered and cancelled, claims expired
    kept = {}
    for state in GrantState:
        if state in (GrantState.DELIVERED, GrantState.CANCELLED):
            continue
        grant_id = make_grant(ledger, f"s-{state.value}", park=state == GrantState.PARKED)
        if state != GrantState.PARKED:
            assert ledger.transition(grant_id, state, f"arranged {state.value}")
        entered_ago(redis, keys, grant_id, 10 * OLD_S)
        kept[grant_id] = state
    # When retention runs
    report = GrantTrimmer(redis, keys, retention_s=RETENTION_S).trim()
    # Then none is touched (the script never even looks at their indexes)
    assert report == TrimReport()
    assert all(intact(ledger, grant_id, state) for grant_id, state in kept.items())


def test_batches_step_over_kept_grants(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given, oldest first, three old grants whose claims live and then three whose claims expired
    claimed = [make_grant(ledger, f"c{n}") for n in range(3)]
    expired = [make_grant(ledger, f"e{n}") for n in range(3)]
    for n, grant_id in enumerate([*claimed, *expired]):
        deliver(ledger, grant_id)
        entered_ago(redis, keys, grant_id, OLD_S + 600 - n, claim_expired=grant_id in expired)
    # When retention runs in batches of two (the first batch only finds kept grants)
    report = GrantTrimmer(redis, keys, retention_s=RETENTION_S, batch_size=2, pause_s=0).trim()
    # Then it still gets past them to the trimmable ones
    assert (report.trimmed, report.kept) == (3, 3)
    assert all(gone(redis, keys, grant_id) for grant_id in expired)
    assert all(intact(ledger, grant_id, GrantState.DELIVERED) for grant_id in claimed)


def test_the_script_run_twice_trims_nothing_more(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given two old delivered grants, one young one, and an old one being sent
    old = [make_grant(ledger, f"old{n}") for n in range(2)]
    young = make_grant(ledger, "young")
    for grant_id in [*old, young]:
        deliver(ledger, grant_id)
        entered_ago(redis, keys, grant_id, 0 if grant_id == young else OLD_S)
    sending = make_grant(ledger, "sending")
    assert ledger.transition(sending, GrantState.SENDING, "sending")
    entered_ago(redis, keys, sending, OLD_S)
    script = load_script(redis, "trim_grants")
    args: list[str | int] = [keys.prefix, "delivered", repr(time.time() - RETENTION_S), 0, 100]
    # When the same call reaches Redis twice (redis-py resends an EVALSHA whose answer was lost)
    first = script(args=args)
    second = script(args=args)
    # Then the second finds nothing to do and changes nothing
    assert [int(n) for n in first] == [2, 2, 0]
    assert [int(n) for n in second] == [0, 0, 0]
    assert all(gone(redis, keys, grant_id) for grant_id in old)
    assert intact(ledger, young, GrantState.DELIVERED) and intact(ledger, sending, GrantState.SENDING)


def test_index_entries_of_a_grant_deleted_by_hand_are_cleaned_up(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    grant_id = make_grant(ledger, "by-hand")
    deliver(ledger, grant_id)
    entered_ago(redis, keys, grant_id, OLD_S)
    redis.delete(keys.grant(grant_id), keys.history(grant_id))
    report = GrantTrimmer(redis, keys, retention_s=RETENTION_S).trim()
    assert report == TrimReport(examined=1, trimmed=0, kept=0)
    assert gone(redis, keys, grant_id)


def test_one_process_runs_per_interval(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given two workers' retention middleware and one old delivered grant
    grant_id = make_grant(ledger, "k")
    deliver(ledger, grant_id)
    entered_ago(redis, keys, grant_id, OLD_S)
    first = LedgerRetention(redis, keys, retention_s=RETENTION_S)
    second = LedgerRetention(redis, keys, retention_s=RETENTION_S)
    # When both try to run
    # Then the first does the work and the second skips (the lock lives one interval)
    assert first.run_once() == TrimReport(examined=1, trimmed=1, kept=0)
    assert second.run_once() is None
    assert first.run_once() is None
    assert int(redis.pttl(f"{keys.prefix}:retention:lock")) > 0  # type: ignore[arg-type]


def test_the_worker_runs_retention_with_the_configured_days(
    redis: Redis, keys: Keys, ledger: Ledger, settings: Settings
) -> None:
    # Given a grant delivered 100 days ago and a worker configured for 120 days
    grant_id = make_grant(ledger, "k")
    deliver(ledger, grant_id)
    entered_ago(redis, keys, grant_id, 100 * SECONDS_PER_DAY)
    broker = build_broker(settings)
    add_worker_middleware(broker, redis, keys, retention_s=120 * SECONDS_PER_DAY)
    (retention,) = [m for m in broker.middleware if isinstance(m, LedgerRetention)]
    # When its retention runs
    report = retention.run_once()
    broker.close()
    # Then the grant is not old enough
    assert report == TrimReport()
    assert intact(ledger, grant_id, GrantState.DELIVERED)


def test_a_claim_made_to_last_keeps_its_grant_for_good(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given an old delivered grant whose claim was made without a TTL (a follow rewarded once per viewer)
    new = NewGrant(
        GUILD, USER, (GrantItem("kit", 1),), source="twitch", idempotency_key="twitch:follow-1-2:f", keep_claim=True
    )
    grant_id = ledger.create_many([Planned(new, Mode.SCHEDULE)]).results[0].grant.id
    assert redis.ttl(keys.idempotency("twitch:follow-1-2:f")) == -1
    deliver(ledger, grant_id)
    entered_ago(redis, keys, grant_id, OLD_S * 10, claim_expired=False)
    # When retention runs, the grant stays, and the same follow again finds it
    assert GrantTrimmer(redis, keys, retention_s=RETENTION_S).trim() == TrimReport(examined=1, trimmed=0, kept=1)
    again = ledger.create_many([Planned(new, Mode.SCHEDULE)]).results[0]
    assert again.created is False and again.grant.id == grant_id


def test_a_grant_cancelled_while_it_waited_for_a_key_leaves_that_set_when_trimmed(
    redis: Redis, keys: Keys, ledger: Ledger
) -> None:
    grant_id = make_grant(ledger, "keyless")
    park = Park(keys.parked_for_key(GUILD), keys.key_parked_guilds(), GUILD)
    assert ledger.transition(grant_id, GrantState.PARKED, "no API key for the guild", effects=StepEffects(park=park))
    assert ledger.cancel(grant_id, "the guild left")
    entered_ago(redis, keys, grant_id, OLD_S)
    assert GrantTrimmer(redis, keys, retention_s=RETENTION_S).trim().trimmed == 1
    assert not redis.sismember(keys.parked_for_key(GUILD), grant_id)
