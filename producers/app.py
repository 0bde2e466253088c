"""The web app (``uvicorn producers.app:app``): grants API, health and metrics.

Routers are assembled in one list; the Redis clients open and close in the
lifespan. ``app`` is built on first access, so importing this module has no
side effects (tests call ``create_app`` with their own settings).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dramatiq
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import RedisError

from config.errors import ConfigError
from config.keyring import check_rule_guilds
from config.rewards import load_rewards
from config.settings import Settings, settings_or_exit
from producers.api.grants import router as grants_router
from producers.api.health import router as health_router
from producers.api.links import router as links_router
from producers.creation_batcher import CreationBatcher
from producers.links import LinkStore
from producers.patreon.webhook import router as patreon_router
from producers.state import AppState
from producers.twitch.webhook import router as twitch_router
from worker.connections import connect_redis, connect_redis_async
from worker.eta import EtaEstimator
from worker.keys import Keys
from worker.ledger import Ledger
from worker.observability import configure_logging, init_sentry
from worker.redis_checks import CachedRedisCheck
from worker.replication import ReplicaAcks

logger = logging.getLogger("wetbot_rewards.web")

#: Webhooks first: FastAPI tries routers in this order, and they carry the load.
ROUTERS = [twitch_router, patreon_router, grants_router, links_router, health_router]


def create_app(settings: Settings) -> FastAPI:
    """Build the app for ``settings``.

    Raises:
      ConfigError: the rewards file is invalid (``RewardsFileError``), or a rule's guild has no API key while
        keys are configured (``config.keyring.check_rule_guilds``).
    """
    rewards = load_rewards(settings.rewards_file, missing_ok=settings.demo_mode)
    keyring = settings.keyring(rewards.guild_id)
    check_rule_guilds(keyring, rewards.rule_guilds(), source=str(settings.rewards_file))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect_redis(settings)
        aredis = connect_redis_async(settings)
        keys = Keys(settings.redis_key_prefix)
        acks = ReplicaAcks.from_settings(settings)
        app.state.wetbot = AppState(
            settings=settings,
            redis=redis,
            aredis=aredis,
            creator=CreationBatcher(aredis, keys, acks=acks),
            keys=keys,
            ledger=Ledger(redis, keys, acks=acks),
            rewards=rewards,
            keyring=keyring,
            eta=EtaEstimator.build(redis, settings, keyring),
            links=LinkStore.for_rewards(redis, keys, rewards),
            redis_check=CachedRedisCheck(redis),
        )
        try:
            yield
        finally:
            redis.close()
            await aredis.aclose()

    app = FastAPI(title="wetbot-rewards", lifespan=lifespan)
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(RedisError, _storage_unavailable)
    app.add_exception_handler(dramatiq.errors.BrokerError, _storage_unavailable)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return app


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Redis is down: nothing was promised, so the caller must retry (with the same idempotency key)."""
    logger.error("%s %s: storage unavailable: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse(
        {"detail": "storage unavailable; nothing was queued, retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 whose ``error`` line names the first bad field, e.g. ``items[0].amount: ...``."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    summary = f"{_field_path(list(first['loc']))}: {first['msg']}"
    return JSONResponse({"error": summary, "detail": errors}, status_code=422)


def _field_path(loc: list[Any]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path")] or ["body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _build_default_app() -> FastAPI:
    settings = settings_or_exit()
    configure_logging(settings)
    init_sentry(settings)
    try:
        return create_app(settings)
    except ConfigError as exc:
        print(f"wetbot-rewards: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def __getattr__(name: str) -> Any:
    """Build ``app`` lazily for ``uvicorn producers.app:app`` (a bad setting exits with one line)."""
    if name == "app":
        built = _build_default_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
