"""Dramatiq's Redis broker, tuned so a killed worker's grant runs again within seconds.

Stock settings recover a dead worker's unacked messages only after
``heartbeat_timeout`` (60 s) *and* a maintenance pass that runs on 0.1 % of
broker calls, which takes minutes on a quiet system (research/dramatiq.md §4).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis import Redis

from config.settings import Settings
from worker.keys import Keys

#: The one queue; the one actor ``deliver`` consumes it.
QUEUE_NAME = "grants"
#: The one actor's name.
ACTOR_NAME = "deliver"

#: Milliseconds without a heartbeat after which a worker counts as dead and its
#: unacked messages are requeued. Every broker call of a live worker beats
#: (idle polling ~1.4/s per queue, and the delay-queue consumer keeps polling
#: while all worker threads are busy), so 10 s is ample and keeps recovery short.
HEARTBEAT_TIMEOUT_MS = 10_000
#: Chance (per million broker calls) that a call also runs maintenance, which
#: is what requeues a dead worker's messages, and only for the queue named in
#: that call. An idle consumer polls each queue about once a second, so 50 %
#: finds a dead worker's grants within a couple of seconds after its heartbeat
#: times out. A pass costs two small ZRANGEBYSCOREs when nobody died.
MAINTENANCE_CHANCE = 500_000
#: Milliseconds Dramatiq keeps its own dead-lettered messages (the ledger is the
#: record that matters; these only appear after unexpected exceptions).
DEAD_MESSAGE_TTL_MS = 30 * 24 * 3600 * 1000


def build_broker(settings: Settings, *, redis: Redis | None = None) -> RedisBroker:
    """A Redis broker for the service's Redis, namespaced under the key prefix.

    Initialise Sentry *before* calling this: the Dramatiq integration patches
    ``Broker.__init__``.
    """
    keys = Keys(settings.redis_key_prefix)
    options: dict[str, object] = {
        "namespace": keys.dramatiq_namespace,
        "heartbeat_timeout": HEARTBEAT_TIMEOUT_MS,
        "maintenance_chance": MAINTENANCE_CHANCE,
        "dead_message_ttl": DEAD_MESSAGE_TTL_MS,
    }
    if redis is not None:
        return RedisBroker(client=redis, **options)  # type: ignore[no-untyped-call]
    return RedisBroker(url=settings.redis_url, **options)  # type: ignore[no-untyped-call]


#: Dramatiq retries only for unexpected exceptions (a bug, Redis gone); WetBot
#: trouble never raises (see ``delivery.py``), so these never count waiting.
MAX_UNEXPECTED_RETRIES = 20
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 5 * 60 * 1000
#: Seconds an actor run may take beyond one API call: the longest inline wait
#: for a rate slot plus Redis round trips, with room to spare.
TIME_LIMIT_MARGIN_S = 60


def declare_deliver(
    broker: dramatiq.Broker,
    handler: Callable[[str], None],
    *,
    timeout_s: float,
    max_retries: int = MAX_UNEXPECTED_RETRIES,
) -> dramatiq.Actor[[str], None]:
    """Declare the ``deliver`` actor on ``broker``, running ``handler(grant_id)``.

    Parameters:
      broker: the broker the actor belongs to.
      handler: the work, normally ``Deliverer.deliver``.
      timeout_s: the WetBot call timeout, from which the actor's time limit follows.
      max_retries: retries after unexpected exceptions (tests lower it).
    """

    def deliver(grant_id: str) -> None:
        handler(grant_id)

    decorate = dramatiq.actor(
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        broker=broker,
        max_retries=max_retries,
        min_backoff=MIN_BACKOFF_MS,
        max_backoff=MAX_BACKOFF_MS,
        time_limit=int((timeout_s + TIME_LIMIT_MARGIN_S) * 1000),
    )
    return decorate(deliver)


def encoded_message(grant_id: str) -> tuple[str, str]:
    """``(redis message id, encoded message)`` of ``deliver(grant_id)``, as the Redis broker stores it.

    For ``worker.creation``, which writes the message in the same atomic step
    as the ledger entry.
    """
    redis_message_id = str(uuid.uuid4())
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE_NAME,
        actor_name=ACTOR_NAME,
        args=(grant_id,),
        kwargs={},
        options={"redis_message_id": redis_message_id},
    )
    return redis_message_id, message.encode().decode("utf-8")


def enqueue_grant(broker: dramatiq.Broker, grant_id: str, *, delay_s: float | None = None) -> None:
    """Put one ``deliver(grant_id)`` message on the grants queue, optionally after ``delay_s``.

    Producers use this instead of importing the actor module, so the web
    process never loads worker-only start-up checks.
    """
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(grant_id,), kwargs={}, options={}
    )
    delay_ms = None if delay_s is None or delay_s <= 0 else max(1, int(delay_s * 1000))
    broker.enqueue(message, delay=delay_ms)
