"""The baseline for ``bench/limiter.py``: the rate-limited actor most people write with stock Dramatiq.

Run by the benchmark as ``dramatiq bench.limiter_stock_actor --processes 1 --threads T --queues <STOCK_QUEUE>``
(cwd = the repository root). Everything is stock Dramatiq:

* ``WindowRateLimiter(RedisBackend(...), key, limit=N, window=W)`` around the HTTP call, with
  ``acquire()`` raising ``RateLimitExceeded`` when no slot is free;
* the ``Retries`` middleware turning every exception into a delayed retry (exponential backoff from
  ``min_backoff``, dead letter after ``max_retries``);
* HTTP errors, 429 included, raised with ``raise_for_status()`` so they are retried the same way.

Configured from the environment (the benchmark sets all of these):

``BENCH_REDIS_URL``
    Redis for the broker, the limiter and the counters (the benchmark uses DB 15).
``BENCH_STOCK_PREFIX``
    Key prefix: the broker namespace is ``<prefix>:dramatiq``, the limiter key ``<prefix>:limiter``
    and the counters ``<prefix>:count:<name>``.
``BENCH_API_URL``, ``BENCH_API_KEY``, ``BENCH_GUILD``
    The WetBot (simulator) base URL, the key sent in ``Authorization`` and the guild to grant in.
``BENCH_LIMIT``, ``BENCH_WINDOW_S``
    The limiter's N and W. ``WindowRateLimiter`` only takes whole seconds, so W is rounded up.
``BENCH_MIN_BACKOFF_MS``, ``BENCH_MAX_RETRIES``
    The actor's ``Retries`` options (see BENCHMARKS.md for why these values).

The counters let the benchmark report what Dramatiq did: ``attempts`` (actor runs),
``rate_limited`` (``RateLimitExceeded`` raised), ``http_error`` (``raise_for_status`` raised, 429 or
other), ``other_error`` and ``delivered`` (200 answered). Every raised exception is one retry spent.
"""

from __future__ import annotations

import math
import os

import dramatiq
import requests
from dramatiq.brokers.redis import RedisBroker
from dramatiq.rate_limits import RateLimitExceeded, WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend
from redis import Redis

#: Queue and actor name of the baseline; the benchmark enqueues messages with these.
STOCK_QUEUE = "stock_grants"
STOCK_ACTOR = "stock_deliver"
#: Item granted by every benchmark request.
BENCH_ITEM = "bench-item"
#: Counter names kept under ``<prefix>:count:``.
COUNTERS = ("attempts", "rate_limited", "http_error", "other_error", "delivered")


def counter_key(prefix: str, name: str) -> str:
    """The Redis key of one counter."""
    return f"{prefix}:count:{name}"


def broker_namespace(prefix: str) -> str:
    """The Dramatiq namespace of the baseline's broker."""
    return f"{prefix}:dramatiq"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"bench.limiter_stock_actor: {name} is not set (this module is started by bench/limiter.py)")
    return value


if os.environ.get("BENCH_STOCK_PREFIX"):
    _prefix = _env("BENCH_STOCK_PREFIX")
    _redis_url = _env("BENCH_REDIS_URL")
    _api_url = _env("BENCH_API_URL").rstrip("/")
    _api_key = _env("BENCH_API_KEY")
    _guild = _env("BENCH_GUILD")
    _limit = int(_env("BENCH_LIMIT"))
    _window = math.ceil(float(_env("BENCH_WINDOW_S")))
    _timeout_s = float(os.environ.get("BENCH_HTTP_TIMEOUT_S", "5"))

    _redis = Redis.from_url(_redis_url)
    broker = RedisBroker(url=_redis_url, namespace=broker_namespace(_prefix))  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)

    #: The pattern from the Dramatiq docs ("Rate Limiting"): one shared window limiter per API key.
    limiter = WindowRateLimiter(  # type: ignore[no-untyped-call]
        RedisBackend(client=_redis), f"{_prefix}:limiter", limit=_limit, window=_window
    )

    def _count(name: str) -> None:
        _redis.incr(counter_key(_prefix, name))

    @dramatiq.actor(
        actor_name=STOCK_ACTOR,
        queue_name=STOCK_QUEUE,
        max_retries=int(_env("BENCH_MAX_RETRIES")),
        min_backoff=int(_env("BENCH_MIN_BACKOFF_MS")),
    )
    def stock_deliver(user_id: str) -> None:
        """Grant one ``BENCH_ITEM`` to ``user_id``; any exception is retried by Dramatiq."""
        _count("attempts")
        try:
            with limiter.acquire():
                response = requests.post(
                    f"{_api_url}/guilds/{_guild}/users/{user_id}/inventory",
                    json={"items": [{"itemID": BENCH_ITEM, "amount": 1}]},
                    headers={"Authorization": _api_key},
                    timeout=_timeout_s,
                )
                response.raise_for_status()
        except RateLimitExceeded:
            _count("rate_limited")
            raise
        except requests.HTTPError:
            _count("http_error")
            raise
        except Exception:
            _count("other_error")
            raise
        _count("delivered")
