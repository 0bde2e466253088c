"""The baseline for ``bench/pickup_latency.py``: a plain actor on a stock ``RedisBroker``, noting when it starts.

Run by the benchmark as ``dramatiq bench.latency_stock_actor --processes 1 --threads T --queues <PICKUP_QUEUE>``
(cwd = the repository root). Nothing here is ours: a stock broker built from a URL, Dramatiq's own
enqueue, its own consumer with its idle backoff (up to the worker timeout, 1 s by default). The actor's
first act is to push ``time.time()`` onto ``<prefix>:started``; the benchmark takes the time right after
its ``enqueue`` returned, and the difference is the stock pickup latency (one host, one clock).

Configured from the environment: ``BENCH_REDIS_URL`` and ``BENCH_PICKUP_PREFIX`` (the broker namespace is
``<prefix>:dramatiq``).
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis import Redis

#: Queue and actor name of the baseline; the benchmark enqueues messages with these.
PICKUP_QUEUE = "stock_pickup"
PICKUP_ACTOR = "stock_pickup"


def started_key(prefix: str) -> str:
    """LIST of the ``time.time()`` at which each actor run started."""
    return f"{prefix}:started"


def broker_namespace(prefix: str) -> str:
    """The Dramatiq namespace of the baseline's broker."""
    return f"{prefix}:dramatiq"


if os.environ.get("BENCH_PICKUP_PREFIX"):
    _prefix = os.environ["BENCH_PICKUP_PREFIX"]
    _redis_url = os.environ["BENCH_REDIS_URL"]
    _redis = Redis.from_url(_redis_url)
    broker = RedisBroker(url=_redis_url, namespace=broker_namespace(_prefix))  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name=PICKUP_ACTOR, queue_name=PICKUP_QUEUE, max_retries=0)
    def stock_pickup(sample: int) -> None:
        """Note the start time of run ``sample``; nothing else."""
        started = time.time()
        _redis.rpush(started_key(_prefix), f"{sample}:{started!r}")
