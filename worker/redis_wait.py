"""The worker's first contact with Redis: wait until it answers, saying clearly where it is looking.

Without this the worker booted, Dramatiq logged "ready for action" and the consumer then failed in a loop
while Redis was down. Now ``worker.actors`` waits here before anything else touches Redis: one error line
naming the address (never the password) and what it means, a reminder every ``REMIND_EVERY_S``, one line
when Redis answers. The worker keeps retrying rather than exiting, as it does when Redis goes away later
(a supervisor restart loop would only add noise); SIGTERM stops it while it waits.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from urllib.parse import urlsplit

from redis import Redis, RedisError

from config.settings import Settings

__all__ = ["RETRY_EVERY_S", "redis_address", "stop_on_sigterm", "wait_for_redis"]

logger = logging.getLogger("wetbot_rewards.worker")

#: Seconds between two tries.
RETRY_EVERY_S = 2.0
#: Seconds between two "still cannot reach" lines.
REMIND_EVERY_S = 60.0


def redis_address(settings: Settings) -> str:
    """Where the worker looks for Redis, for log lines: ``host:port/db`` or the sentinels; never a password."""
    parts = urlsplit(settings.redis_url)
    if settings.redis_sentinels:
        sentinels = ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels)
        return f"master {settings.redis_sentinel_master!r} via sentinels {sentinels}"
    if parts.scheme == "unix":
        return f"unix socket {parts.path}"
    db = parts.path.strip("/") or "0"
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def wait_for_redis(
    redis: Redis,
    address: str,
    *,
    retry_every_s: float = RETRY_EVERY_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Block until ``redis`` answers ``PING``; returns the seconds waited (0 when it answered at once)."""
    start = clock()
    reminded = start
    failed = False
    while True:
        try:
            redis.ping()
        except RedisError as exc:
            now = clock()
            if not failed:
                logger.error(
                    "cannot reach Redis at %s (%s): no grant is delivered until it answers; retrying every %g s"
                    " (check REDIS_URL and that Redis runs)",
                    address,
                    type(exc).__name__,
                    retry_every_s,
                )
                failed = True
            elif now - reminded >= REMIND_EVERY_S:
                logger.error("still cannot reach Redis at %s after %.0f s; retrying", address, now - start)
                reminded = now
            sleep(retry_every_s)
            continue
        waited = clock() - start
        if failed:
            logger.warning("Redis at %s answers again after %.0f s; starting", address, waited)
        return waited


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM exits the process (status 0 via ``SystemExit``); the old handler is restored.

    Dramatiq's worker process installs a handler that only flags "stop" for its main loop, which does not
    run yet while ``worker.actors`` is being imported: without this, a worker waiting for Redis could not
    be stopped (``docker compose stop`` would wait for its kill timeout).
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
