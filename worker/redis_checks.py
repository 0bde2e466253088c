"""Does the Redis keep what the service writes? Persistence and eviction, read with ``CONFIG GET``.

Redis is the only place grants, idempotency claims and delivery state live:

* **No persistence** (``appendonly no`` and ``save ""``): a restart loses every
  grant a webhook was told is queued, and every claim, so a source's retry
  then grants again. Snapshots alone (``save`` set, AOF off) lose the writes
  since the last snapshot in a crash — a ``delivered`` mark lost is a grant
  sent twice — so that is reported too, more mildly.
* **Eviction** (``maxmemory`` > 0 with a ``maxmemory-policy`` other than
  ``noeviction``): when memory runs out Redis deletes keys instead of refusing
  writes. ``volatile-*`` policies are no better here: leases, rate windows and
  idempotency claims all carry TTLs, so they would go first, and a lost claim or
  lease is a double grant. With ``noeviction`` a full Redis refuses writes:
  producers answer 503 and sources retry, nothing is lost.

Managed services often refuse ``CONFIG`` (ElastiCache, some Redis Cloud plans):
the check then says it cannot tell and what to verify by hand. Only the
worker's start-up (``warn_at_start``) and ``GET /readyz`` (``CachedRedisCheck``)
run it; neither ever fails because of what it finds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis, RedisError, ResponseError

from worker import redis_values
from worker.observability import capture

logger = logging.getLogger("wetbot_rewards.redis_checks")

#: The settings read, in this order.
CHECKED_PARAMETERS = ("appendonly", "save", "maxmemory", "maxmemory-policy")
#: Seconds ``GET /readyz`` reuses one check, so a probe every few seconds costs no CONFIG call.
CACHE_S = 60.0

_BY_HAND = (
    "check by hand that the Redis persists writes (append-only file, or the provider's equivalent)"
    " and has maxmemory-policy noeviction"
)


@dataclass(frozen=True)
class RedisConfigReport:
    """What ``CONFIG GET`` said (``None`` where it could not be read) and the problems found, one line each."""

    checked: bool
    settings: dict[str, str | None] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view for ``GET /readyz``."""
        return {"checked": self.checked, **self.settings}


def check_redis_config(redis: Redis) -> RedisConfigReport:
    """Read persistence and eviction settings and describe what is unsafe.

    Raises:
      RedisError: Redis did not answer (any error but a refused ``CONFIG``).
    """
    values: dict[str, str | None] = {}
    try:
        for name in CHECKED_PARAMETERS:
            reply = redis_values.text_map(redis.config_get(name))
            values[name] = reply.get(name)
    except ResponseError as exc:  # unknown / renamed command, NOPERM from an ACL
        return RedisConfigReport(
            checked=False,
            warnings=(
                f"Redis refused CONFIG GET ({_first_line(exc)}), so persistence and eviction cannot be "
                f"checked: {_BY_HAND}",
            ),
        )
    return RedisConfigReport(checked=True, settings=values, warnings=tuple(_problems(values)))


def _problems(values: dict[str, str | None]) -> list[str]:
    problems: list[str] = []
    appendonly, save = values["appendonly"], values["save"]
    if appendonly is None or save is None:
        problems.append(f"Redis did not report appendonly/save, so persistence cannot be checked: {_BY_HAND}")
    elif appendonly == "no" and not save.strip():
        problems.append(
            "Redis has no persistence (appendonly no, save ''): a restart loses queued grants and idempotency"
            " claims, so repeated events grant again; set appendonly yes"
        )
    elif appendonly == "no":
        problems.append(
            f"Redis persists only by snapshots (appendonly no, save '{save}'): a crash loses the writes since"
            " the last one, and a lost 'delivered' mark sends a grant twice; set appendonly yes"
        )
    maxmemory, policy = values["maxmemory"], values["maxmemory-policy"]
    if maxmemory is None or policy is None:
        problems.append(f"Redis did not report maxmemory/maxmemory-policy, so eviction cannot be checked: {_BY_HAND}")
    elif _int(maxmemory) != 0 and policy != "noeviction":
        problems.append(
            f"Redis may evict keys (maxmemory {maxmemory}, maxmemory-policy {policy}): when full it deletes leases,"
            " rate windows and idempotency claims (they carry TTLs) or grants, which can send a grant twice;"
            " set maxmemory-policy noeviction"
        )
    return problems


def warn_at_start(redis: Redis, *, report: Callable[..., None] = capture) -> RedisConfigReport | None:
    """Check once at worker start: one log line per problem, and one Sentry event if any. Never raises.

    Returns the report, or None when Redis did not answer (logged; the worker's
    own connection handling takes it from there).
    """
    try:
        result = check_redis_config(redis)
    except RedisError as exc:
        logger.warning("cannot check Redis persistence and eviction now: Redis unavailable (%s)", exc)
        return None
    for line in result.warnings:
        (logger.error if result.checked else logger.warning)("%s", line)
    # A refused CONFIG is how managed services are, not a fault: the log line says what to check, and
    # Sentry would get the same event on every start with nothing to fix.
    if result.checked and result.warnings:
        report(
            "Redis configuration puts grants at risk: " + " | ".join(result.warnings),
            level="error",
            tags={"kind": "redis_config", "state": "unsafe"},
        )
    return result


class CachedRedisCheck:
    """``check_redis_config`` at most once per ``ttl_s`` seconds (thread-safe); a failed check is not cached."""

    def __init__(self, redis: Redis, *, ttl_s: float = CACHE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, RedisConfigReport] | None = None

    def get(self) -> RedisConfigReport:
        """The current report.

        Raises:
          RedisError: Redis did not answer.
        """
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self._ttl_s:
                self._cached = (now, check_redis_config(self._redis))
            return self._cached[1]


def replica_shortfall(redis: Redis, wanted: int) -> str | None:
    """A warning when fewer than ``wanted`` replicas are in sync with the master (``REDIS_WAIT_REPLICAS``).

    Writes then cannot be confirmed (``worker.replication``): producers answer 503 and workers send
    nothing until enough replicas are back, so ``GET /readyz`` says why. None when enough are.

    Raises:
      RedisError: Redis did not answer.
    """
    if wanted <= 0:
        return None
    info = cast(dict[str, Any], redis.info("replication"))
    online = sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )
    if online >= wanted:
        return None
    return (
        f"{online} of the {wanted} Redis replicas REDIS_WAIT_REPLICAS asks for are in sync: producers answer 503"
        " and workers send nothing until enough replicas are back"
    )


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:  # e.g. "100mb" from an odd proxy: treat as a limit
        return -1


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
