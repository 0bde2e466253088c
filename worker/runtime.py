"""Builds the worker's parts from settings: Redis client, ledger, limiter, WetBot client, deliverer."""

from __future__ import annotations

from collections.abc import Callable

import dramatiq
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from config.settings import DEFAULT_LEDGER_RETENTION_DAYS, Settings
from worker.broker import enqueue_grant
from worker.client import WetbotClient
from worker.dead_letters import DeadLetterRecorder
from worker.delivery import Deliverer, Requeue
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter
from worker.retention import LedgerRetention
from worker.sweeper import OutboxSweeper

#: Seconds to wait for Redis to accept a connection / answer a command. Short,
#: so a web request facing a dead Redis answers 503 quickly instead of hanging.
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_SOCKET_TIMEOUT_S = 5.0


def connect_redis(settings: Settings) -> Redis:
    """A Redis client for ``REDIS_URL`` with short timeouts (commands return bytes)."""
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )


def connect_redis_async(settings: Settings) -> AsyncRedis:
    """``connect_redis`` for asyncio code."""
    return AsyncRedis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )


def build_deliverer(
    settings: Settings, redis: Redis, requeue: Requeue, *, sleep: Callable[[float], None] | None = None
) -> Deliverer:
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
        ledger=Ledger(redis, keys),
        limiter=SlidingWindowLimiter(redis, keys, settings.wetbot_rate_limit),
        client=client,
        requeue=requeue,
        **extra,
    )


def add_worker_middleware(
    broker: dramatiq.Broker, redis: Redis, keys: Keys, *, retention_days: int = DEFAULT_LEDGER_RETENTION_DAYS
) -> None:
    """The worker's own middleware: the outbox sweeper, the dead-letter recorder and ledger retention."""
    broker.add_middleware(OutboxSweeper(redis, keys, lambda grant_id: enqueue_grant(broker, grant_id)))
    broker.add_middleware(DeadLetterRecorder(Ledger(redis, keys)))
    broker.add_middleware(LedgerRetention(redis, keys, retention_days=retention_days))
