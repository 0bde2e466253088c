"""Dramatiq's Redis broker as this service uses it: a queue of hints, never the record.

The ledger owns the schedule (``worker.schedule``): a grant's queue message
only says "look at this grant now", carries the dispatch token that makes
every older copy a no-op, and is written again by the reconciler if it is
lost. So nothing here depends on Dramatiq recovering well from connection
errors (docs/dramatiq.md §8): no delayed messages (the delay queue lives
in worker memory and is dropped on a connection error), no Dramatiq retries
(their re-enqueue fails when Redis does), and a heartbeat timeout long enough
that clock skew between hosts does not declare live workers dead.

The broker is ``worker.pickup.WakingRedisBroker``: stock Dramatiq's, except
that an idle consumer waits on a wake list that every message writer pushes
to, instead of polling with a backoff of up to a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import dramatiq
from redis import Redis

from config.settings import Settings
from worker.connections import connect_redis
from worker.keys import Keys
from worker.pickup import WakingRedisBroker

#: The one queue; the one actor ``deliver`` consumes it.
QUEUE_NAME = "grants"
#: The one actor's name.
ACTOR_NAME = "deliver"

#: Milliseconds without a heartbeat after which Dramatiq counts a worker as dead
#: and requeues its unacked messages. Heartbeats are stamped with each host's
#: own clock, so this must exceed the clock skew between hosts (60 s tolerated)
#: plus the gap between beats. Recovery does not wait for it: a killed worker's
#: grant moves again when its lease ends (``worker.schedule``); the requeued
#: copies Dramatiq finds later carry stale tokens and do nothing.
HEARTBEAT_TIMEOUT_MS = 120_000
#: Chance (per million broker calls) that a call also runs maintenance (requeue
#: of dead workers' messages, dead-letter expiry): only cleaning up now.
MAINTENANCE_CHANCE = 10_000
#: Seconds a written queue message may take to be claimed by a worker before
#: the reconciler writes another (the older one then does nothing). Messages
#: wait at most for a busy thread's API call (rate waits are hand-backs, not sleeps).
DISPATCH_TTL_S = 20.0
#: Milliseconds Dramatiq keeps its own dead-lettered messages (the ledger is the
#: record that matters; these only appear after unexpected exceptions).
DEAD_MESSAGE_TTL_MS = 30 * 24 * 3600 * 1000


def build_broker(settings: Settings, *, redis: Redis | None = None) -> WakingRedisBroker:
    """A Redis broker for the service's Redis, namespaced under the key prefix, woken on enqueue (``worker.pickup``).

    The broker gets a client built like every other (``connect_redis``: timeouts,
    keepalive, health checks, retries): ``RedisBroker(url=...)`` would build one
    with none of them, and a silently cut connection would then hang the
    consumer and its heartbeat forever.
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
    return WakingRedisBroker(client=redis or connect_redis(settings), **options)  # type: ignore[no-untyped-call]


#: Seconds an actor run may take beyond one API call: the inline wait for a rate
#: slot, recording the outcome while Redis is briefly away, and round trips.
TIME_LIMIT_MARGIN_S = 120


def declare_deliver(
    broker: dramatiq.Broker, handler: Callable[[str, str], None], *, timeout_s: float
) -> dramatiq.Actor[[str, str], None]:
    """Declare the ``deliver`` actor on ``broker``, running ``handler(grant_id, token)``.

    No Dramatiq retries: an unexpected exception leaves the grant on the
    ledger's schedule, which runs it again (``worker.schedule``), and
    ``Deliverer`` counts such failures itself.

    Parameters:
      broker: the broker the actor belongs to.
      handler: the work, normally ``Deliverer.deliver``.
      timeout_s: the WetBot call timeout, from which the actor's time limit follows.
    """

    def deliver(grant_id: str, token: str = "") -> None:
        handler(grant_id, token)

    decorate = dramatiq.actor(
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        broker=broker,
        max_retries=0,
        time_limit=int((timeout_s + TIME_LIMIT_MARGIN_S) * 1000),
    )
    return decorate(deliver)


def encoded_message(grant_id: str, token: str) -> tuple[str, str]:
    """``(redis message id, encoded message)`` of ``deliver(grant_id, token)``, as the Redis broker stores it.

    For the scripts that write the message in the same atomic step as the
    ledger change (``worker.creation``, ``worker.schedule``).
    """
    redis_message_id = str(uuid.uuid4())
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE_NAME,
        actor_name=ACTOR_NAME,
        args=(grant_id, token),
        kwargs={},
        options={"redis_message_id": redis_message_id},
    )
    return redis_message_id, message.encode().decode("utf-8")
