"""Bearer-token checks: ``GRANTS_API_TOKEN`` for the grants and links API, ``ADMIN_TOKEN`` for the operator
API, ``METRICS_TOKEN`` for ``/metrics``."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from pydantic import SecretStr

from producers.state import AppState, app_state


def require_token(request: Request, state: AppState) -> None:
    """403-free, constant-time bearer check: 503 when no token is configured, 401 when wrong or missing.

    Called by ``producers.api.guarded_route.GuardedRoute`` before the body is read.
    """
    configured = state.settings.grants_api_token
    if configured is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "GRANTS_API_TOKEN is not set on this server")
    _check_bearer(request, configured)


def require_admin_token(request: Request, state: AppState) -> None:
    """The operator API's check (``admin.api.operations``): ``ADMIN_TOKEN``, else ``GRANTS_API_TOKEN``."""
    configured = state.settings.console_token
    if configured is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "ADMIN_TOKEN is not set on this server")
    _check_bearer(request, configured)


def api_actor(request: Request) -> str:
    """The audit log's name for an API caller: its address (one token serves every caller)."""
    client = request.client.host if request.client else "unknown"
    return f"api:{client}"


def require_metrics_token(request: Request, state: Annotated[AppState, Depends(app_state)]) -> None:
    """A dependency: with ``METRICS_TOKEN`` set, ``/metrics`` needs it as a bearer token (401 otherwise)."""
    if state.settings.metrics_token is not None:
        _check_bearer(request, state.settings.metrics_token)


def _check_bearer(request: Request, configured: SecretStr) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = configured.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
