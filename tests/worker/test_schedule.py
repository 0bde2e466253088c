"""The ledger's schedule: queue messages are hints; the reconciler keeps every grant moving, one copy at a time."""

from __future__ import annotations

import time
from collections.abc import Callable

from redis import Redis

from config.keyring import key_fingerprint
from config.settings import Settings
from producers.submit import submit_grant
from simulator.wetbot import WetbotSimulator
from tests.conftest import API_KEY, GUILD, OTHER_USER, USER, DelivererFactory, RunningWorker, SettingsFactory, wait_for
from tests.schedule_view import due_ids, due_in_s
from worker.broker import QUEUE_NAME
from worker.delivery import MAX_CRASHES
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter
from worker.schedule import Schedule


def new(key: str, user: str = USER) -> NewGrant:
    return NewGrant(GUILD, user, (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{key}")


def make_overdue(redis: Redis, keys: Keys, *grant_ids: str) -> None:
    """As if each grant's message had waited past its claim deadline (or its backoff had ended)."""
    redis.zadd(keys.due(), dict.fromkeys(grant_ids, 0), xx=True)


def fetched_by_a_dead_worker(redis: Redis, keys: Keys, grant_id: str) -> None:
    """As if a worker had fetched the grant's message (Dramatiq: off the queue, into its acks set) and died."""
    namespace = keys.dramatiq_namespace
    message_id = redis.hget(keys.grant(grant_id), "dispatch_msg")
    assert isinstance(message_id, bytes)
    redis.zadd(f"{namespace}:__heartbeats__", {"dead-worker": 1})
    redis.lrem(f"{namespace}:{QUEUE_NAME}", 1, message_id)
    redis.sadd(f"{namespace}:__acks__.dead-worker.{QUEUE_NAME}", message_id)


def test_a_new_grant_is_on_the_schedule_with_its_message(ledger: Ledger, redis: Redis, keys: Keys) -> None:
    grant = submit_grant(ledger, new("a")).grant
    schedule = Schedule(redis, keys)
    due_in = due_in_s(redis, keys, grant.id)
    assert due_in is not None and 15 < due_in <= 20, "looked at again only if its message is not claimed in time"
    assert redis.llen(f"{keys.dramatiq_namespace}:{QUEUE_NAME}") == 1
    assert schedule.dispatch_batch().dispatched == [], "not due yet: no second message"


def test_an_old_message_does_nothing_and_spends_no_slot(
    settings: Settings, make_deliverer: DelivererFactory, ledger: Ledger, redis: Redis, keys: Keys, sim: WetbotSimulator
) -> None:
    grant = submit_grant(ledger, new("a")).grant
    first_token = redis.hget(keys.grant(grant.id), "dispatch")
    assert isinstance(first_token, bytes)
    fetched_by_a_dead_worker(redis, keys, grant.id)
    make_overdue(redis, keys, grant.id)
    [(grant_id, fresh_token)] = Schedule(redis, keys).dispatch_batch().dispatched
    deliverer = make_deliverer(settings)

    deliverer.deliver(grant.id, first_token.decode())  # e.g. Dramatiq redelivering a dead worker's copy
    assert sim.requests() == []
    assert redis.zcard(keys.rate_window(key_fingerprint(API_KEY))) == 0

    deliverer.deliver(grant_id, fresh_token)
    deliverer.deliver(grant_id, fresh_token)  # the same message twice (a resent enqueue): once
    assert ledger.get(grant.id).state == GrantState.DELIVERED
    # The fresh message's baseline read and request, a slot each; the repeated message spent none.
    assert [r.method for r in sim.requests()] == ["GET", "POST"]
    assert redis.zcard(keys.rate_window(key_fingerprint(API_KEY))) == 2
    assert redis.zscore(keys.due(), grant.id) is None, "a delivered grant leaves the schedule"


def test_lost_messages_are_dispatched_again_by_a_running_worker(
    make_settings: SettingsFactory,
    ledger: Ledger,
    redis: Redis,
    keys: Keys,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
) -> None:
    grants = [submit_grant(ledger, new(f"g{n}", user=str(400000000000000000 + n))).grant for n in range(6)]
    # Redis lost the queue (or Dramatiq acked the messages without running them, or dropped its delay queue).
    queue = f"{keys.dramatiq_namespace}:{QUEUE_NAME}"
    redis.delete(queue, f"{queue}.msgs")
    make_overdue(redis, keys, *(g.id for g in grants))
    workers(make_settings())
    took = wait_for(
        lambda: all(ledger.get(g.id).state == GrantState.DELIVERED for g in grants),  # type: ignore[union-attr]
        timeout_s=15,
    )
    assert len(sim.applied()) == 6
    print(f"6 grants with lost messages delivered {took:.1f}s after the worker started")


def test_a_grant_being_sent_is_not_dispatched_again(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    grant = ledger.create(new("a")).grant
    assert ledger.transition(grant.id, GrantState.SENDING, "sending")
    redis.set(keys.lease(GUILD, USER), f"{grant.id}:run", px=5000)
    make_overdue(redis, keys, grant.id)
    schedule = Schedule(redis, keys)
    assert schedule.dispatch_batch().dispatched == []
    due_in = due_in_s(redis, keys, grant.id)
    assert due_in is not None and 4 < due_in <= 6.1, "looked at again when the live run's lease ends"
    # A lease held by another grant of the user does not hold this one back from a message.
    redis.set(keys.lease(GUILD, USER), "other-grant:run", px=5000)
    make_overdue(redis, keys, grant.id)
    assert [gid for gid, _ in schedule.dispatch_batch().dispatched] == [grant.id]


def test_final_and_parked_grants_leave_the_schedule(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    kept, gone = ledger.create(new("a")).grant, ledger.create(new("b", user=OTHER_USER)).grant
    assert ledger.cancel(gone.id, "withdrawn")
    assert redis.zscore(keys.due(), gone.id) is None
    assert redis.zscore(keys.due(), kept.id) is not None


def test_unexpected_failures_are_counted_and_end_dead(
    make_settings: SettingsFactory, make_deliverer: DelivererFactory, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    grant = ledger.create(new("a")).grant
    deliverer = make_deliverer(make_settings())
    redis.hset(keys.grant(grant.id), "crashes", str(MAX_CRASHES - 2))

    def broken(*_args: object) -> None:
        raise ZeroDivisionError("a bug")

    object.__setattr__(deliverer, "_take_slot", broken)
    for _ in range(2):
        try:
            deliverer.deliver(grant.id)
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("the exception must reach Dramatiq (and Sentry)")
        redis.delete(keys.lease(GUILD, USER))
    done = ledger.get(grant.id)
    assert done is not None and done.state == GrantState.DEAD
    assert (
        "ZeroDivisionError: a bug" in done.last_error
        and f"after {MAX_CRASHES} runs" in ledger.history(grant.id)[-1].reason
    )


def test_a_slot_counts_from_when_its_answer_came_back(redis: Redis, keys: Keys) -> None:
    from config.settings import RateLimit

    limiter = SlidingWindowLimiter(redis, keys, RateLimit(limit=1, window_s=1.0))
    slot = limiter.try_acquire("k")
    assert slot.granted
    time.sleep(0.6)  # the request took 0.6 s: WetBot may have counted it at any moment in between
    limiter.settle("k", slot.member)
    waiting = limiter.try_acquire("k")
    assert not waiting.granted and waiting.wait_s > 0.9, "the window runs from the answer, not from the start"


def test_moving_grants_missing_from_the_schedule_are_adopted(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # As left by a version without the schedule (or a key restored by hand): queued, no due entry.
    grants = [ledger.create(new(f"old{n}", user=str(500000000000000000 + n))).grant for n in range(3)]
    redis.delete(keys.due())
    delivered = ledger.create(new("done")).grant
    assert ledger.transition(delivered.id, GrantState.DELIVERED, "by hand")
    schedule = Schedule(redis, keys)
    assert schedule.adopt_unscheduled() == 3
    assert sorted(due_ids(redis, keys)) == sorted(g.id for g in grants)
    assert schedule.adopt_unscheduled() == 0, "safe to run again"


def test_a_verify_hold_of_a_grant_that_no_longer_moves_does_not_block_the_user(
    settings: Settings, make_deliverer: DelivererFactory, ledger: Ledger, redis: Redis, keys: Keys, sim: WetbotSimulator
) -> None:
    grant = ledger.create(new("a")).grant
    redis.set(keys.hold(GUILD, USER), "a-grant-deleted-by-hand")
    make_deliverer(settings).deliver(grant.id)
    assert ledger.get(grant.id).state == GrantState.DELIVERED  # type: ignore[union-attr]
    assert redis.exists(keys.hold(GUILD, USER)) == 0


def test_every_redis_client_has_timeouts_keepalive_health_checks_and_retries(settings: Settings) -> None:
    from worker.broker import build_broker
    from worker.connections import REDIS_SOCKET_TIMEOUT_S, connect_redis, connect_redis_async

    broker = build_broker(settings)
    try:
        clients = [broker.client, connect_redis(settings), connect_redis_async(settings)]
        for client in clients:
            options = client.connection_pool.connection_kwargs
            assert options["socket_timeout"] == REDIS_SOCKET_TIMEOUT_S
            assert options["socket_connect_timeout"] > 0
            assert options["socket_keepalive"] is True and options["socket_keepalive_options"]
            assert options["health_check_interval"] > 0
            assert options["retry"]._retries >= 1  # redis-py keeps the count private
    finally:
        broker.close()
