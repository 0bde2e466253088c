"""Replica confirmation (``worker.replication``): ``WAIT`` after a create and after the step into sending.

The shared test Redis has no replicas, so asking it for one confirmation shows the refusal paths; a
primary-and-replica pair of the test's own shows the confirmed ones.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from config.settings import Settings
from devtools.chaos.sentinel import SentinelGroup
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, SettingsFactory
from worker.delivery import Deliverer
from worker.effects import StepEffects
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.replication import NotReplicated, ReplicaAcks, confirm_fence, confirm_read, run_confirmed
from worker.scripts import load_script
from worker.timings import DEFAULT_TIMINGS

#: One replica, and a short wait: the shared Redis has none, so this is always refused (quickly).
ONE_FAST = ReplicaAcks(replicas=1, timeout_ms=50)

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def new(key: str) -> NewGrant:
    return NewGrant(GUILD, USER, (GrantItem("gem", 2),), source="test", idempotency_key=f"test:{key}")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary with one replica in sync (and a sentinel, unused here)."""
    group = SentinelGroup(tmp_path)
    with group:
        yield group


def test_no_replicas_wanted_means_no_wait(redis: Redis, keys: Keys) -> None:
    script = redis.register_script("return redis.call('INCR', KEYS[1])")
    assert run_confirmed(redis, script, ReplicaAcks(), keys=[keys.prefix + ":n"]) == 1


def test_a_write_no_replica_confirms_raises_and_stays_on_the_primary(redis: Redis, keys: Keys) -> None:
    script = redis.register_script("return redis.call('INCR', KEYS[1])")
    with pytest.raises(NotReplicated, match="0 of 1 Redis replicas confirmed the write within 50 ms") as caught:
        run_confirmed(redis, script, ONE_FAST, keys=[keys.prefix + ":n"])
    assert caught.value.reply == 1
    assert redis.get(keys.prefix + ":n") == b"1"


def test_a_create_no_replica_confirms_raises_and_a_retry_finds_the_grant(redis: Redis, keys: Keys) -> None:
    ledger = Ledger(redis, keys, acks=ONE_FAST)
    with pytest.raises(NotReplicated):
        ledger.create(new("a"))
    with pytest.raises(NotReplicated):  # the source's retry: the same grant, confirmed or refused again
        ledger.create(new("a"))
    assert len(Ledger(redis, keys).list_grants()) == 1


def test_a_transition_that_moved_nothing_needs_no_confirmation(redis: Redis, keys: Keys) -> None:
    grant = Ledger(redis, keys).create(new("a")).grant
    ledger = Ledger(redis, keys, acks=ONE_FAST)
    assert ledger.transition(grant.id, GrantState.SENDING, "x", expect=[GrantState.DEAD], confirm=True) is False
    with pytest.raises(NotReplicated):
        ledger.transition(grant.id, GrantState.SENDING, "x", expect=[GrantState.QUEUED], confirm=True)
    # Without ``confirm`` a transition never waits.
    assert ledger.transition(grant.id, GrantState.RETRYING, "y", expect=[GrantState.SENDING]) is True


def test_a_resent_outcome_step_waits_for_the_replicas_again(redis: Redis, keys: Keys) -> None:
    """An outcome step guarded by its request's token, run again (``_persist`` after a ``NotReplicated``),
    finds its earlier run recorded (code 2) and confirms that run's write through the barrier."""
    plain = Ledger(redis, keys)
    grant = plain.create(new("outcome")).grant
    assert plain.transition(grant.id, GrantState.SENDING, "sent", effects=StepEffects(begin="run-1"))
    confirming = Ledger(redis, keys, acks=ONE_FAST)
    step = StepEffects(attempt="run-1")
    for _ in range(2):
        with pytest.raises(NotReplicated):
            confirming.transition(grant.id, GrantState.DELIVERED, "WetBot answered 200", effects=step, confirm=True)
    assert plain.get(grant.id).state == GrantState.DELIVERED  # type: ignore[union-attr]
    assert plain.transition(grant.id, GrantState.DELIVERED, "WetBot answered 200", effects=step)  # recorded once
    assert [t.to_state for t in plain.history(grant.id)].count("delivered") == 1


def test_a_confirmed_read_waits_for_the_replicas(redis: Redis, keys: Keys) -> None:
    barrier = keys.replication_barrier()
    key = keys.prefix + ":read"
    redis.set(key, "v")
    assert confirm_read(redis, ReplicaAcks(), barrier, lambda pipe: pipe.get(key)) == [b"v"]
    assert redis.get(barrier) is None  # nothing wanted: no barrier written
    with pytest.raises(NotReplicated, match="0 of 1 Redis replicas"):
        confirm_read(redis, ONE_FAST, barrier, lambda pipe: pipe.get(key))
    assert redis.get(barrier) == b"1"


def test_a_worker_does_not_send_what_no_replica_confirmed(
    make_settings: SettingsFactory,
    make_deliverer: Callable[[Settings], Deliverer],
    ledger: Ledger,
    redis: Redis,
    keys: Keys,
    sim: WetbotSimulator,
) -> None:
    settings = make_settings(redis_wait_replicas=1, redis_wait_timeout_s=0.05)
    grant = ledger.create(new("a")).grant
    make_deliverer(settings).deliver(grant.id)
    after = ledger.get(grant.id)
    assert after is not None and after.state == GrantState.QUEUED
    assert after.failures == 0  # not a failure: nothing was sent
    assert [r.method for r in sim.requests()] == ["GET"], "only the baseline read before the step; nothing sent"
    assert "not sent: 0 of 1 Redis replicas confirmed" in ledger.history(grant.id)[-1].reason
    due = redis.zscore(keys.due(), grant.id)
    seconds, micros = redis.time()  # type: ignore[misc]
    assert due is not None and 0 < due - (seconds * 1000 + micros // 1000) <= DEFAULT_TIMINGS.unconfirmed_retry_s * 1000

    # Once the replicas confirm (here: none wanted), the same grant is sent, once.
    make_deliverer(make_settings()).deliver(grant.id)
    assert ledger.get(grant.id).state == GrantState.DELIVERED  # type: ignore[union-attr]
    assert sim.inventory(GUILD, USER) == {"gem": 2}


def test_a_fence_fails_when_the_write_is_not_on_this_primary(redis: Redis, keys: Keys) -> None:
    key = keys.prefix + ":fenced"
    with pytest.raises(NotReplicated, match="not on the current Redis primary"):
        confirm_fence(redis, ONE_FAST, key, "written", uuid.uuid4().hex)
    token = uuid.uuid4().hex
    redis.hset(key, "written", token)
    with pytest.raises(NotReplicated, match="0 of 1 Redis replicas"):
        confirm_fence(redis, ONE_FAST, key, "written", token)
    confirm_fence(redis, ReplicaAcks(), key, "written", "anything")  # nothing wanted, nothing checked


@pytest.mark.slow
@needs_redis_server
def test_a_replica_in_sync_confirms_and_a_stopped_one_does_not(pair: SentinelGroup) -> None:
    primary = pair.nodes[0].client()
    try:
        acks = ReplicaAcks(replicas=1, timeout_ms=1000)
        script = primary.register_script("return redis.call('INCR', KEYS[1])")
        assert run_confirmed(primary, script, acks, keys=["n"]) == 1
        primary.hset("member", "written", "t1")
        confirm_fence(primary, acks, "member", "written", "t1")
        replica = pair.nodes[1].client()
        try:
            assert replica.get("n") == b"1"
        finally:
            replica.close()

        pair.nodes[1].stop()
        with pytest.raises(NotReplicated):
            run_confirmed(primary, script, ReplicaAcks(replicas=1, timeout_ms=100), keys=["n"])
        # The fence script is as safe to run twice as every other script.
        assert load_script(primary, "fence")(keys=["member"], args=["written", "t1"]) == 1
    finally:
        primary.close()
