"""The web app (``uvicorn wetbot_rewards.app:app``): webhooks, grants API, health and metrics, operator console.

Routers are assembled in one list; the Redis clients open and close in the
lifespan. ``app`` is built on first access, so importing this module has no
side effects (tests call ``create_app`` with their own settings).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from admin.api.health import router as health_router
from admin.api.operations import legacy_router as old_admin_router
from admin.api.operations import router as admin_router
from admin.console import router as console_router
from config.errors import ConfigError, report_config_error
from config.settings import Settings, settings_or_exit
from producers.api.grants import router as grants_router
from producers.api.links import router as links_router
from producers.body_deadline import BODY_TIMEOUT_S, BodyDeadline
from producers.errors import install_error_handlers
from producers.patreon.webhook import router as patreon_router
from producers.state import checked_rewards, close_state, open_state
from producers.twitch.webhook import router as twitch_router
from worker.observability import configure_logging, init_sentry

logger = logging.getLogger("wetbot_rewards.web")

#: Webhooks first: FastAPI tries routers in this order, and they carry the load. The operator API's old
#: paths (``old_admin_router``) answer for one release.
ROUTERS = [
    twitch_router,
    patreon_router,
    grants_router,
    admin_router,
    links_router,
    health_router,
    console_router,
    old_admin_router,
]


def create_app(settings: Settings, *, body_timeout_s: float = BODY_TIMEOUT_S) -> FastAPI:
    """Build the app for ``settings``; a request body must arrive within ``body_timeout_s`` (``BodyDeadline``).

    ``/docs``, ``/redoc`` and ``/openapi.json`` exist only with ``API_DOCS=true``.

    Raises:
      ConfigError: the rewards file is invalid (``RewardsFileError``), or a rule's guild has no API key while
        keys are configured (``config.keyring.check_rule_guilds``).
    """
    rewards, keyring = checked_rewards(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.wetbot = open_state(settings, rewards, keyring)
        try:
            yield
        finally:
            await close_state(app.state.wetbot)

    docs = settings.api_docs
    app = FastAPI(
        title="wetbot-rewards",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(BodyDeadline, timeout_s=body_timeout_s)
    return app


def _build_default_app() -> FastAPI:
    settings = settings_or_exit()
    configure_logging(settings)
    init_sentry(settings)
    try:
        return create_app(settings)
    except ConfigError as exc:
        report_config_error(exc)
        raise SystemExit(2) from None


def __getattr__(name: str) -> Any:
    """Build ``app`` lazily for ``uvicorn wetbot_rewards.app:app`` (a bad setting exits with one line)."""
    if name == "app":
        built = _build_default_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
