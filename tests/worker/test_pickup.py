"""Fast pickup (``worker.pickup``): idle consumers are woken by the message writers, the queue stays the truth.

Bounds are generous and relative to the configured poll interval (a wake-up takes a round trip, a poll
takes ``POLL_INTERVAL_S``): nothing here measures latency, ``bench/pickup_latency.py`` does.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import cast

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import BrokerConnectionError, ConnectionClosed
from redis import Redis

from config.settings import Settings
from devtools.chaos.servers import PrivateRedis
from producers.submit import submit_grant
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, RunningWorker, SettingsFactory, wait_for
from worker import pickup
from worker.broker import QUEUE_NAME, build_broker, encoded_message
from worker.connections import REDIS_SOCKET_TIMEOUT_S
from worker.creation import Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import WAKE_TOKENS_MAX, Keys, wake_key
from worker.ledger import Ledger
from worker.pickup import WakingRedisBroker
from worker.schedule import CREATE_INFLIGHT_CAP, Schedule

#: The poll interval while these tests run: long, so that anything found quickly was found by a wake-up.
LONG_POLL_S = 30.0


def new_grant(n: int) -> NewGrant:
    return NewGrant(GUILD, str(400000000000000000 + n), (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{n}")


class Consuming:
    """Iterates one consumer in a thread, as Dramatiq's consumer thread does; keeps what it got and when."""

    def __init__(self, consumer: dramatiq.Consumer) -> None:
        self.consumer = consumer
        self.got: list[tuple[float, dramatiq.MessageProxy]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                message = next(self.consumer)
                if message is not None:
                    self.got.append((time.monotonic(), message))
        except ConnectionClosed as exc:
            self.error = exc

    def grant_ids(self) -> list[str]:
        return [str(message.args[0]) for _, message in self.got]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def long_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickup, "POLL_INTERVAL_S", LONG_POLL_S)


@pytest.fixture
def broker(settings: Settings) -> Iterator[WakingRedisBroker]:
    built = build_broker(settings)
    yield built
    built.client.close()


@pytest.fixture
def consuming(broker: WakingRedisBroker) -> Iterator[list[Consuming]]:
    """Start consumers with ``consumers.append(Consuming(...))``; all are stopped at the end."""
    started: list[Consuming] = []
    yield started
    for running in started:
        running.stop()


def idle(consumer: dramatiq.Consumer) -> dramatiq.Consumer:
    """``consumer`` after its first (empty) fetch: from now on it only waits, and polls every ``POLL_INTERVAL_S``."""
    assert next(consumer) is None
    return consumer


# --- the coupling to Dramatiq's internals -------------------------------------------------------------


def test_the_stock_consumer_with_timeout_0_misses_without_sleeping(
    broker: WakingRedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``_WakingConsumer`` relies on: stock ``__next__`` with timeout 0 returns None after an empty fetch
    having slept 0 ms, and with its prefetch full it returns None without fetching."""
    slept: list[float] = []
    monkeypatch.setattr("dramatiq.brokers.redis.time.sleep", slept.append)
    stock = _RedisConsumer(broker, QUEUE_NAME, 1, 0)  # type: ignore[no-untyped-call]
    assert [next(stock) for _ in range(40)] == [None] * 40  # 40 misses: past compute_backoff's max exponent
    assert slept == [0.0] * 40

    message_id, body = encoded_message("g1", "t1")
    queue = f"{broker.namespace}:{QUEUE_NAME}"
    broker.client.hset(f"{queue}.msgs", message_id, body)
    broker.client.rpush(queue, message_id)
    stock.queued_message_ids.add("already-prefetched")
    assert stock.outstanding_message_count >= stock.prefetch
    assert next(stock) is None
    assert broker.client.llen(queue) == 1, "a full consumer does not fetch"
    stock.queued_message_ids.clear()
    proxy = next(stock)
    assert proxy is not None and list(proxy.args) == ["g1", "t1"]
    assert stock.message_cache == [] and stock.timeout == 0


def test_the_worker_consumes_through_the_waking_consumer(settings: Settings) -> None:
    """Dramatiq's consumer thread gets its consumer from ``consumer_class`` with the worker timeout, and treats
    ``ConnectionClosed`` as a connection error (log, restart delay, new consumer)."""
    assert isinstance(RedisBroker.__dict__["consumer_class"], property)
    assert issubclass(ConnectionClosed, BrokerConnectionError)
    broker = build_broker(settings)
    broker.declare_queue(QUEUE_NAME)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=300)
    worker.start()
    try:
        wait_for(lambda: all(thread.consumer is not None for thread in worker.consumers.values()), timeout_s=5)
        consumers = {name: thread.consumer for name, thread in worker.consumers.items()}
        assert set(consumers) == {QUEUE_NAME, f"{QUEUE_NAME}.DQ"}
        for consumer in consumers.values():
            assert isinstance(consumer, pickup._WakingConsumer)
            assert consumer.wait_s == pytest.approx(0.3)
        assert not consumers[QUEUE_NAME].delay_queue and consumers[f"{QUEUE_NAME}.DQ"].delay_queue  # type: ignore[union-attr]
    finally:
        worker.stop()
        broker.client.close()


def test_the_wait_stays_below_the_socket_timeout(broker: WakingRedisBroker) -> None:
    assert pickup.MAX_WAIT_S < REDIS_SOCKET_TIMEOUT_S
    assert cast(pickup._WakingConsumer, broker.consume(QUEUE_NAME, timeout=60_000)).wait_s == pickup.MAX_WAIT_S
    assert cast(pickup._WakingConsumer, broker.consume(QUEUE_NAME, timeout=0)).wait_s == pickup.MIN_WAIT_S


# --- writers push tokens --------------------------------------------------------------------------------------


def test_every_message_writer_pushes_a_capped_number_of_tokens(
    broker: WakingRedisBroker, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    wake = wake_key(keys.dramatiq_namespace, QUEUE_NAME)
    submit_grant(ledger, new_grant(1))
    assert redis.llen(wake) == 1
    # As many messages as a producer writes itself for one guild (the rest would be the reconciler's), more than
    # the tokens kept.
    planned = [pickup_planned(n) for n in range(2, 1 + CREATE_INFLIGHT_CAP)]
    assert len(planned) > WAKE_TOKENS_MAX
    ledger.create_many(planned)
    assert redis.llen(wake) == WAKE_TOKENS_MAX

    redis.delete(wake)
    grant = ledger.create(new_grant(100)).grant  # scheduled, no message yet
    assert redis.llen(wake) == 0
    assert [grant_id for grant_id, _token in Schedule(redis, keys).dispatch_batch().dispatched] == [grant.id]
    assert redis.llen(wake) == 1

    redis.delete(wake)
    broker.enqueue(
        dramatiq.Message(queue_name=QUEUE_NAME, actor_name="deliver", args=("g", "t"), kwargs={}, options={})
    )
    assert redis.llen(wake) == 1
    broker.enqueue(
        dramatiq.Message(queue_name=QUEUE_NAME, actor_name="deliver", args=("g", "t"), kwargs={}, options={}),
        delay=60_000,
    )
    assert redis.llen(wake) == 1, "the delay queue polls: no token for it"
    assert redis.llen(wake_key(keys.dramatiq_namespace, f"{QUEUE_NAME}.DQ")) == 0


def pickup_planned(n: int) -> Planned:
    return Planned(new_grant(n), Mode.ENQUEUE)


def test_messages_a_stopping_worker_puts_back_wake_the_others(
    broker: WakingRedisBroker, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    wake = wake_key(keys.dramatiq_namespace, QUEUE_NAME)
    ledger.create_many([pickup_planned(n) for n in range(3)])
    redis.delete(wake)
    consumer = broker.consume(QUEUE_NAME, prefetch=3, timeout=100)
    prefetched = [next(consumer) for _ in range(3)]
    assert all(message is not None for message in prefetched)
    consumer.requeue(message for message in prefetched if message is not None)  # a generator, as Dramatiq passes
    assert redis.llen(f"{keys.dramatiq_namespace}:{QUEUE_NAME}") == 3
    assert redis.llen(wake) == 3


# --- consumers wake, and poll when a token is lost ------------------------------------------------------------


@pytest.mark.usefixtures("long_poll")
def test_an_idle_consumer_is_woken_by_a_new_grant(
    broker: WakingRedisBroker, ledger: Ledger, consuming: list[Consuming]
) -> None:
    running = Consuming(idle(broker.consume(QUEUE_NAME, prefetch=4, timeout=2000)))
    consuming.append(running)
    time.sleep(0.5)  # waiting on the wake list now
    grant = submit_grant(ledger, new_grant(1)).grant
    written = time.monotonic()
    wait_for(lambda: len(running.got) == 1, timeout_s=LONG_POLL_S / 3)
    assert running.grant_ids() == [grant.id]
    assert running.got[0][0] - written < LONG_POLL_S / 3


def test_a_lost_token_only_delays_a_message_until_the_poll(
    broker: WakingRedisBroker, consuming: list[Consuming], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message whose token never arrives (taken by a consumer that died, trimmed, lost with Redis) is found
    by the next poll."""
    monkeypatch.setattr(pickup, "POLL_INTERVAL_S", 1.0)
    running = Consuming(idle(broker.consume(QUEUE_NAME, prefetch=4, timeout=200)))
    consuming.append(running)
    write_without_token(broker, "g-lost")
    wait_for(lambda: len(running.got) == 1, timeout_s=10)
    assert running.grant_ids() == ["g-lost"]


def write_without_token(broker: RedisBroker, grant_id: str) -> None:
    message_id, body = encoded_message(grant_id, "token")
    queue = f"{broker.namespace}:{QUEUE_NAME}"
    broker.client.hset(f"{queue}.msgs", message_id, body)
    broker.client.rpush(queue, message_id)


@pytest.mark.usefixtures("long_poll")
def test_several_consumers_lose_no_message_and_take_each_once(
    settings: Settings, ledger: Ledger, redis: Redis, keys: Keys, consuming: list[Consuming]
) -> None:
    """Two processes' consumers, one batch of messages with fewer tokens than messages: every message is fetched
    once, and quickly (the woken consumer fetches again after a message, until the queue is empty)."""
    brokers = [build_broker(settings), build_broker(settings)]
    try:
        runs = [Consuming(idle(b.consume(QUEUE_NAME, prefetch=3, timeout=500))) for b in brokers]
        consuming.extend(runs)
        time.sleep(0.3)
        ids = [r.grant.id for r in ledger.create_many([pickup_planned(n) for n in range(CREATE_INFLIGHT_CAP)]).results]
        assert int(redis.llen(wake_key(keys.dramatiq_namespace, QUEUE_NAME))) <= WAKE_TOKENS_MAX < len(ids)  # type: ignore[arg-type]

        def ack_all() -> int:
            for run in runs:
                for _, message in run.got:
                    if message.message_id in run.consumer.queued_message_ids:  # type: ignore[attr-defined]
                        run.consumer.ack(message)
            return sum(len(run.got) for run in runs)

        wait_for(lambda: ack_all() >= len(ids), timeout_s=LONG_POLL_S / 3)
        got = runs[0].grant_ids() + runs[1].grant_ids()
        assert sorted(got) == sorted(ids)
    finally:
        for run in consuming:
            run.stop()
        for b in brokers:
            b.client.close()


def test_a_full_consumer_leaves_the_tokens_to_others(
    broker: WakingRedisBroker, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    consumer = idle(broker.consume(QUEUE_NAME, prefetch=1, timeout=100))
    submit_grant(ledger, new_grant(1))
    first = next(consumer)
    while first is None:
        first = next(consumer)
    submit_grant(ledger, new_grant(2))  # its token is for a consumer that can fetch
    wake = wake_key(keys.dramatiq_namespace, QUEUE_NAME)
    assert redis.llen(wake) == 1
    assert [next(consumer) for _ in range(3)] == [None] * 3  # prefetch full: no fetch, no token taken
    assert redis.llen(wake) == 1
    consumer.ack(first)
    second = next(consumer)
    assert second is not None, "a slot freed: it fetches at once"


# --- connection errors ----------------------------------------------------------------------------------------


needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


@needs_redis_server
@pytest.mark.slow
def test_a_waiting_consumer_reports_a_lost_connection_as_dramatiq_does(
    private_redis: PrivateRedis, make_settings: SettingsFactory
) -> None:
    """Redis dies under a consumer blocked on the wake list: ``ConnectionClosed`` (the consumer thread then logs,
    waits its restart delay and builds a new consumer), never another exception; a new consumer is woken again."""
    settings = make_settings(redis_url=private_redis.url, redis_key_prefix="wbr")
    broker = build_broker(settings)
    running = Consuming(idle(broker.consume(QUEUE_NAME, prefetch=4, timeout=1000)))
    time.sleep(0.3)
    private_redis.kill()
    wait_for(lambda: running.error is not None, timeout_s=15)
    assert isinstance(running.error, ConnectionClosed)
    running.stop()

    private_redis.start()
    again = Consuming(idle(broker.consume(QUEUE_NAME, prefetch=4, timeout=1000)))
    try:
        time.sleep(0.3)
        grant = submit_grant(Ledger(broker.client, Keys("wbr")), new_grant(1)).grant
        wait_for(lambda: len(again.got) == 1, timeout_s=LONG_POLL_S / 3)
        assert again.grant_ids() == [grant.id]
    finally:
        again.stop()
        broker.client.close()


@needs_redis_server
@pytest.mark.slow
@pytest.mark.usefixtures("long_poll")
def test_a_worker_keeps_being_woken_after_a_redis_restart(
    private_redis: PrivateRedis,
    make_settings: SettingsFactory,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(redis_url=private_redis.url, redis_key_prefix="wbr")
    redis = Redis.from_url(private_redis.url)
    ledger = Ledger(redis, Keys("wbr"))
    workers(settings)
    first = submit_grant(ledger, new_grant(1)).grant.id
    wait_for(lambda: delivered(ledger, first), timeout_s=LONG_POLL_S / 3)

    caplog.set_level(logging.WARNING, logger="dramatiq")
    private_redis.kill()
    time.sleep(2.0)
    private_redis.start()
    time.sleep(5.0)  # the consumer threads' restart delay (3 s): idle on the new server's wake list again
    errors = [r for r in caplog.records if "connection error" in r.getMessage()]
    assert 1 <= len(errors) <= 6, "each consumer logs and waits its restart delay: no hot loop"

    second = submit_grant(ledger, new_grant(2)).grant.id
    started = time.monotonic()
    wait_for(lambda: delivered(ledger, second), timeout_s=LONG_POLL_S)
    assert time.monotonic() - started < LONG_POLL_S / 3, "woken, not found by a poll or the reconciler (20 s)"
    assert len(sim.applied()) == 2
    redis.close()


def delivered(ledger: Ledger, grant_id: str) -> bool:
    grant = ledger.get(grant_id)
    return grant is not None and grant.state == GrantState.DELIVERED
