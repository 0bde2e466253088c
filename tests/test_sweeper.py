"""A producer that dies between ledger and queue loses nothing: the worker's sweeper enqueues the grant."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis

from config.settings import Settings
from tests.conftest import GUILD, USER, RunningWorker, wait_for
from tests.wetbot_sim import WetbotSimulator
from worker.keys import Keys
from worker.ledger import GrantItem, GrantState, Ledger, NewGrant
from worker.sweeper import OutboxSweeper


def grant(key: str) -> NewGrant:
    return NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key=f"test:{key}")


def test_sweep_enqueues_only_stale_unqueued_grants(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    enqueued: list[str] = []
    sweeper = OutboxSweeper(redis, keys, enqueued.append)
    orphan = ledger.create(grant("orphan")).grant  # "crashed" before enqueue: marker stays
    done = ledger.create(grant("done")).grant
    ledger.mark_enqueued(done.id)
    moved_on = ledger.create(grant("moved-on")).grant
    ledger.transition(moved_on.id, GrantState.DELIVERED, "test")

    assert sweeper.sweep_once(older_than_s=30) == 0, "fresh markers belong to producers still at work"
    redis.delete(f"{keys.prefix}:sweeper:lock")
    assert sweeper.sweep_once(older_than_s=0) == 1
    assert enqueued == [orphan.id]
    assert redis.zcard(keys.outbox()) == 0


def test_duplicate_submission_enqueues_a_grant_whose_producer_died(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    first = ledger.create(grant("retry-me"))
    assert first.needs_enqueue
    again = ledger.create(grant("retry-me"))
    assert not again.created and again.needs_enqueue, "the source's retry must finish the enqueue"
    ledger.mark_enqueued(first.grant.id)
    assert not ledger.create(grant("retry-me")).needs_enqueue


def test_an_orphaned_grant_is_delivered_by_a_running_worker(
    settings: Settings, ledger: Ledger, sim: WetbotSimulator, workers: Callable[..., RunningWorker], redis: Redis,
    keys: Keys,
) -> None:  # fmt: skip
    orphan = ledger.create(grant("orphan")).grant
    # Age the marker as if the producer died a minute ago.
    redis.zadd(keys.outbox(), {orphan.id: 1.0})
    workers(settings)
    wait_for(lambda: ledger.get(orphan.id).state == GrantState.DELIVERED, timeout_s=15)  # type: ignore[union-attr]
    assert len(sim.applied()) == 1
