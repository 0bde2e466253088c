"""Redis clients with the service's defences, for every process: broker, worker state, web, CLI.

Every client has the same defences (research/dramatiq.md §8): connect and
command timeouts, TCP keepalive, a health check before reusing an idle
connection, and a few retries with backoff on connection errors and timeouts.
A failover or a silently cut connection then costs seconds, not a hung
consumer. Retries may resend a script whose first run went through; every
script is safe to run twice.
"""

from __future__ import annotations

import socket
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from config.settings import Settings

__all__ = [
    "KEEPALIVE_OPTIONS",
    "REDIS_CONNECT_TIMEOUT_S",
    "REDIS_HEALTH_CHECK_S",
    "REDIS_RETRIES",
    "REDIS_SOCKET_TIMEOUT_S",
    "connect_redis",
    "connect_redis_async",
]

#: Seconds to wait for Redis to accept a connection / answer a command. Short,
#: so a web request facing a dead Redis answers 503 quickly instead of hanging.
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_SOCKET_TIMEOUT_S = 5.0
#: Seconds a pooled connection may sit idle before it is PINGed before use.
REDIS_HEALTH_CHECK_S = 10
#: Retries of a command after a connection error or timeout (backoff 0.1 s doubling, capped at 1 s).
REDIS_RETRIES = 3
#: TCP keepalive: first probe after 10 s idle, then every 5 s, dead after 3 unanswered.
KEEPALIVE_OPTIONS = {
    option: value
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, option)
}


def _client_options() -> dict[str, Any]:
    return {
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
        "socket_keepalive_options": {getattr(socket, name): value for name, value in KEEPALIVE_OPTIONS.items()},
        "health_check_interval": REDIS_HEALTH_CHECK_S,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def connect_redis(settings: Settings) -> Redis:
    """A Redis client for ``REDIS_URL`` with timeouts, keepalive, health checks and retries (bytes replies)."""
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_RETRIES)
    return Redis.from_url(settings.redis_url, retry=retry, **_client_options())


def connect_redis_async(settings: Settings) -> AsyncRedis:
    """``connect_redis`` for asyncio code."""
    retry = AsyncRetry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_RETRIES)
    return AsyncRedis.from_url(settings.redis_url, retry=retry, **_client_options())
