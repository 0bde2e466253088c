"""Builds the worker's parts from settings: ledger, schedule, limiter, WetBot client, deliverer, middleware.

Redis clients come from ``worker.connections``.
"""

from __future__ import annotations

from collections.abc import Callable

import dramatiq
from redis import Redis

from config.settings import DEFAULT_LEDGER_RETENTION_DAYS, Settings
from worker.client import WetbotClient
from worker.delivery import Deliverer
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter
from worker.replication import ReplicaAcks
from worker.retention import LedgerRetention
from worker.schedule import Reconciler, Schedule


def build_deliverer(settings: Settings, redis: Redis, *, sleep: Callable[[float], None] | None = None) -> Deliverer:
    """The deliverer for the configured API key. Raises ``ValueError`` when no key is set."""
    if settings.wetbot_api_key is None:
        raise ValueError("WETBOT_API_KEY is not set")
    keys = Keys(settings.redis_key_prefix)
    client = WetbotClient(settings.wetbot_api_url, settings.wetbot_api_key.get_secret_value(), settings.wetbot_timeout)
    extra = {} if sleep is None else {"sleep": sleep}
    return Deliverer(
        settings=settings,
        redis=redis,
        keys=keys,
        ledger=Ledger(redis, keys, acks=ReplicaAcks.from_settings(settings)),
        limiter=SlidingWindowLimiter(redis, keys, settings.wetbot_rate_limit),
        client=client,
        schedule=Schedule(redis, keys),
        **extra,
    )


def add_worker_middleware(
    broker: dramatiq.Broker, redis: Redis, keys: Keys, *, retention_days: int = DEFAULT_LEDGER_RETENTION_DAYS
) -> None:
    """The worker's own middleware: the reconciler (due grants become messages) and ledger retention."""
    broker.add_middleware(Reconciler(Schedule(redis, keys)))
    broker.add_middleware(LedgerRetention(redis, keys, retention_days=retention_days))
