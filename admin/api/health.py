"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

from dramatiq.common import dq_name
from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import PlainTextResponse
from redis import RedisError

from admin.api.key_metrics import key_metric_lines
from admin.twitch_health import twitch_metric_lines, twitch_warnings
from producers.api.auth import require_metrics_token
from producers.counters import read_counters
from producers.state import AppState, app_state
from producers.twitch.tokens import read_vault_state
from worker import redis_values as values
from worker.broker import QUEUE_NAME
from worker.grant import GrantState
from worker.redis_checks import replica_shortfall

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(response: Response, state: Annotated[AppState, Depends(app_state)]) -> dict[str, Any]:
    """Ready when Redis answers (503 otherwise): grants can be queued.

    The body also carries ``warnings``: what ``worker.redis_checks`` finds unsafe
    in Redis's persistence and eviction settings (or that it cannot check them),
    with the settings read under ``redis_config``. They never change the status:
    such a Redis still queues grants, and failing readiness on every web process
    would turn a durability risk into an outage. Alert on a non-empty ``warnings``.
    With ``REDIS_WAIT_REPLICAS``, ``warnings`` also says when too few replicas are in
    sync to confirm writes (producers then answer 503: ``worker.redis_checks.replica_shortfall``), and
    when the Twitch connection needs attention (``admin.twitch_health``).
    """
    try:
        state.redis.ping()
        config = state.redis_check.get()
        replicas = replica_shortfall(state.redis, state.settings.wait_replicas)
        vault = read_vault_state(state.redis, state.keys)
    except RedisError as exc:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "unavailable", "redis": type(exc).__name__}
    twitch = twitch_warnings(vault, twitch_configured=state.settings.twitch_client_id is not None)
    warnings = [*config.warnings, *([replicas] if replicas else []), *twitch]
    return {"status": "ok", "redis": "ok", "redis_config": config.to_dict(), "warnings": warnings}


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(require_metrics_token)])
def metrics(state: Annotated[AppState, Depends(app_state)]) -> str:
    """Prometheus text format: grants per state, queue depth, oldest queued grant, the ledger's schedule, keys.

    Behind ``METRICS_TOKEN`` when it is set. Dramatiq's delay queue is a list in
    its Redis broker (its dispatch script pushes delayed message ids with RPUSH), so
    it is counted with ``LLEN`` like the queue itself; this service schedules
    through the ledger and puts nothing there, so a non-zero count means a
    message some other code (or an older version) delayed.
    """
    counts = state.ledger.counts()
    namespace = state.keys.dramatiq_namespace
    pipe = state.redis.pipeline(transaction=False)
    pipe.llen(f"{namespace}:{QUEUE_NAME}")
    pipe.llen(f"{namespace}:{dq_name(QUEUE_NAME)}")
    pipe.zcard(state.keys.due())
    pipe.zrange(state.keys.due(), 0, 0, withscores=True)
    pipe.zrange(state.keys.state_index(GrantState.QUEUED.value), 0, 0, withscores=True)
    pipe.time()
    queue_depth, delayed, scheduled, first_due, oldest, now = pipe.execute()
    now_ms = values.redis_time_of(now).ms
    overdue_s = max(0.0, (now_ms - float(first_due[0][1])) / 1000) if first_due else 0.0
    oldest_age = time.time() - float(oldest[0][1]) if oldest else 0.0
    lines = [
        "# HELP wetbot_rewards_grants Grants in the ledger by state.",
        "# TYPE wetbot_rewards_grants gauge",
        *(f'wetbot_rewards_grants{{state="{s.value}"}} {n}' for s, n in counts.items()),
        "# HELP wetbot_rewards_queue_messages Messages waiting on the grants queue.",
        "# TYPE wetbot_rewards_queue_messages gauge",
        f"wetbot_rewards_queue_messages {queue_depth}",
        "# HELP wetbot_rewards_delayed_messages Messages on Dramatiq's delay queue (the service itself puts none).",
        "# TYPE wetbot_rewards_delayed_messages gauge",
        f"wetbot_rewards_delayed_messages {delayed}",
        "# HELP wetbot_rewards_scheduled Grants on the ledger's schedule (queued, retrying or sending).",
        "# TYPE wetbot_rewards_scheduled gauge",
        f"wetbot_rewards_scheduled {scheduled}",
        "# HELP wetbot_rewards_schedule_lag_seconds How long the earliest scheduled grant is overdue (0 = none).",
        "# TYPE wetbot_rewards_schedule_lag_seconds gauge",
        f"wetbot_rewards_schedule_lag_seconds {overdue_s:.3f}",
        "# HELP wetbot_rewards_oldest_queued_seconds Age of the oldest grant in state queued.",
        "# TYPE wetbot_rewards_oldest_queued_seconds gauge",
        f"wetbot_rewards_oldest_queued_seconds {oldest_age:.3f}",
        "# HELP wetbot_rewards_events_total Events received by the producers, by kind and outcome.",
        "# TYPE wetbot_rewards_events_total counter",
        *(
            f'wetbot_rewards_events_total{{event="{name}"}} {n}'
            for name, n in read_counters(state.redis, state.keys).items()
        ),
        *key_metric_lines(state.redis, state.keys, state.keyring, state.settings.wetbot_rate_limit),
        *twitch_metric_lines(read_vault_state(state.redis, state.keys)),
    ]
    return "\n".join(lines) + "\n"
