"""Redis clients with the service's defences, for every process: broker, worker state, web, CLI.

Every client has the same defences (docs/dramatiq.md §8): connect and
command timeouts, TCP keepalive, a health check before reusing an idle
connection, and a few retries with backoff on connection errors and timeouts.
A failover or a silently cut connection then costs seconds, not a hung
consumer. Retries may resend a script whose first run went through; every
script is safe to run twice.

**One server** (``REDIS_URL``, ``redis://`` or ``rediss://`` with redis-py's
TLS query options such as ``ssl_cert_reqs``/``ssl_ca_certs``): a ``READONLY``
answer is retried too, on a new connection. A managed service that fails over
by moving its DNS name leaves old connections on the demoted primary, which
refuses writes with ``READONLY``; nothing ran (a replica rejects a script's
first write), so a reconnect and resend is safe.

**Sentinel** (``REDIS_SENTINELS``): the client is ``Sentinel(...).master_for(...)``,
made to follow a failover at once (``FollowingSentinel``, ``FollowingSentinelPool``).
redis-py's own pool asks the sentinels for the master's address only when it
opens a connection, and reads it from ``SENTINEL MASTERS``, which names the old
primary until the whole failover is over (every other replica reconfigured). A
``SENTINEL FAILOVER`` (or a partition) leaves the old primary taking writes
for about ten seconds, all dropped once the sentinel turns it into a replica;
a busy web process or console reuses its few open connections, so every
operator action went there, and a replica not yet moved to the new primary
even confirmed them (``WAIT``) before it moved and dropped them too. Ours asks
``SENTINEL GET-MASTER-ADDR-BY-NAME`` (the promoted replica as soon as one is
chosen), and asks again when it hands out a connection and has not asked for
``MASTER_RECHECK_S``, or when told to (``follow_failover``: before an operator
action, after a write fell short of its replicas). A master that moved closes
the idle connections to the old one; the ones in use are closed when they come
back. redis-py's ``SentinelManagedConnection`` turns a demoted master's
``READONLY`` into a ``ConnectionError`` and disconnects, so the same retries
reconnect to the new master. What a connection writes in the second before its
pool looks again is what replica confirmation (``worker.replication``) is for.

``REDIS_URL`` then gives only the database, username, password and TLS options
(its host and port are not used); the sentinels get the same timeouts and TLS,
``REDIS_SENTINEL_PASSWORD``, and no retries of their own (redis-py asks the
next sentinel, and the master connection's retries ask all of them again).
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any, cast

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from config.settings import Settings

__all__ = [
    "KEEPALIVE_OPTIONS",
    "MASTER_RECHECK_S",
    "AsyncFollowingSentinel",
    "AsyncFollowingSentinelPool",
    "FollowingSentinel",
    "FollowingSentinelPool",
    "REDIS_CONNECT_TIMEOUT_S",
    "REDIS_HEALTH_CHECK_S",
    "REDIS_RETRIES",
    "REDIS_SOCKET_TIMEOUT_S",
    "connect_redis",
    "connect_redis_async",
    "follow_failover",
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
#: Seconds a Sentinel-managed pool hands out connections to the master it knows before asking the sentinels again.
MASTER_RECHECK_S = 1.0
#: What a command is retried on (on a new connection).
RETRY_ON = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
#: Parts of ``REDIS_URL`` that name the server; in Sentinel mode the sentinels do.
_SERVER_PARTS = ("host", "port", "path", "connection_class")


def _socket_options() -> dict[str, Any]:
    return {
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
        "socket_keepalive_options": {getattr(socket, name): value for name, value in KEEPALIVE_OPTIONS.items()},
    }


def _client_options() -> dict[str, Any]:
    return {
        **_socket_options(),
        "health_check_interval": REDIS_HEALTH_CHECK_S,
        "retry_on_error": list(RETRY_ON),
    }


def _url_options(settings: Settings) -> dict[str, Any]:
    """``REDIS_URL``'s db, credentials and query options without the server's address; ``ssl`` for ``rediss://``.

    The URL's query options win over ours, as in ``Redis.from_url``.
    """
    parsed: dict[str, Any] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    options = {name: value for name, value in parsed.items() if name not in _SERVER_PARTS}
    if settings.redis_url.startswith("rediss://"):
        options["ssl"] = True
    return options


def _sentinel_options(settings: Settings, url_options: dict[str, Any]) -> dict[str, Any]:
    """How to reach the sentinels: our socket options, ``REDIS_URL``'s TLS options, the sentinels' password."""
    options: dict[str, Any] = {**_socket_options(), "retry": Retry(NoBackoff(), 0)}
    options.update({name: value for name, value in url_options.items() if name.startswith("ssl")})
    if settings.redis_sentinel_password is not None:
        options["password"] = settings.redis_sentinel_password.get_secret_value()
    return options


class _MasterCheck:
    """When a pool last asked the sentinels for the master (monotonic seconds); ``due`` says it is time again."""

    def __init__(self) -> None:
        self.at = -float("inf")

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.at < MASTER_RECHECK_S:
            return False
        self.at = now  # several threads may ask at once: harmless, and none waits for another
        return True

    def expire(self) -> None:
        self.at = -float("inf")


def _named(reply: Any) -> tuple[str, int] | None:
    """``SENTINEL GET-MASTER-ADDR-BY-NAME``'s answer as an address (the sentinels answer bytes)."""
    if not reply:
        return None
    host, port = reply
    return (host.decode() if isinstance(host, bytes) else str(host)), int(port)


class FollowingSentinel(Sentinel):
    """redis-py's ``Sentinel`` whose master, during a failover, is the replica being promoted.

    redis-py reads the master from ``SENTINEL MASTERS``, which names the old primary until the whole
    failover is over (every other replica reconfigured, seconds later): until then new connections went
    to the old primary, and a replica not yet moved confirmed their writes, to drop them when it moved.
    ``SENTINEL GET-MASTER-ADDR-BY-NAME`` names the promoted replica as soon as it is chosen; the same
    sentinel (the one that passed redis-py's sanity checks) is asked.
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        address: tuple[str, int] = super().discover_master(service_name)  # type: ignore[no-untyped-call]
        try:
            named = _named(self.sentinels[0].sentinel_get_master_addr_by_name(service_name))  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError):
            return address
        return named or address


class AsyncFollowingSentinel(AsyncSentinel):
    """``FollowingSentinel`` for asyncio clients."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        address: tuple[str, int] = await super().discover_master(service_name)
        try:
            named = _named(await self.sentinels[0].sentinel_get_master_addr_by_name(service_name))  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError):
            return address
        return named or address


class FollowingSentinelPool(SentinelConnectionPool):
    """A Sentinel pool that asks the sentinels for the master every ``MASTER_RECHECK_S`` it is used (see above).

    When the sentinels do not answer, the pool keeps the connections it has (a sentinel outage must not
    stop a service whose primary is fine); a new connection asks them anyway.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.master_check = _MasterCheck()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.master_check.due():
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                self.get_master_address()  # type: ignore[no-untyped-call]  # closes idle connections if it moved
        return super().get_connection(*args, **kwargs)


class AsyncFollowingSentinelPool(AsyncSentinelConnectionPool):
    """``FollowingSentinelPool`` for asyncio clients."""

    def __init__(self, service_name: str, sentinel_manager: AsyncSentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.master_check = _MasterCheck()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.master_check.due():
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await self.get_master_address()  # type: ignore[no-untyped-call]
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]


def follow_failover(client: Redis | AsyncRedis) -> None:
    """Make ``client``'s next command ask the sentinels for the master first (a no-op without Sentinel).

    Called when a write fell short of its replicas: the likeliest cause under Sentinel is a primary that was
    just replaced, and the operator's or the source's retry should not land on it again.
    """
    check = getattr(client.connection_pool, "master_check", None)
    if isinstance(check, _MasterCheck):
        check.expire()


def connect_redis(settings: Settings) -> Redis:
    """A Redis client for ``REDIS_URL`` (or the master ``REDIS_SENTINELS`` name), with timeouts, keepalive,
    health checks and retries (bytes replies)."""
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_RETRIES)
    if not settings.redis_sentinels:
        return Redis.from_url(settings.redis_url, retry=retry, **_client_options())
    url_options = _url_options(settings)
    sentinel = FollowingSentinel(  # type: ignore[no-untyped-call]
        list(settings.redis_sentinels), sentinel_kwargs=_sentinel_options(settings, url_options)
    )
    client = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master,
        connection_pool_class=FollowingSentinelPool,
        retry=retry,
        **(_client_options() | url_options),
    )
    return cast(Redis, client)


def connect_redis_async(settings: Settings) -> AsyncRedis:
    """``connect_redis`` for asyncio code."""
    retry = AsyncRetry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_RETRIES)
    if not settings.redis_sentinels:
        return AsyncRedis.from_url(settings.redis_url, retry=retry, **_client_options())
    url_options = _url_options(settings)
    sentinel_options = _sentinel_options(settings, url_options) | {"retry": AsyncRetry(NoBackoff(), 0)}
    sentinel = AsyncFollowingSentinel(list(settings.redis_sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=AsyncFollowingSentinelPool,
        retry=retry,
        **(_client_options() | url_options),
    )
    return cast(AsyncRedis, client)
