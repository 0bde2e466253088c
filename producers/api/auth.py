"""Bearer-token check for ``POST /grants`` and the admin routes (``GRANTS_API_TOKEN``)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from producers.state import AppState, app_state


def require_token(request: Request, state: Annotated[AppState, Depends(app_state)]) -> None:
    """403-free, constant-time bearer check: 503 when no token is configured, 401 when wrong or missing."""
    configured = state.settings.grants_api_token
    if configured is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "GRANTS_API_TOKEN is not set on this server")
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = configured.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
