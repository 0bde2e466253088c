"""``POST /links``, ``GET /links/{platform}``, ``DELETE /links/{platform}/{external_id}`` (bearer token first:
``GuardedRoute``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from config.domain_fields import DiscordId, PlatformUserId
from producers.api.auth import api_actor
from producers.api.guarded_route import GuardedRoute
from producers.link_actions import LinkRefused, link, unlink
from producers.state import AppState, app_state

router = APIRouter(route_class=GuardedRoute)

Platform = Literal["twitch", "patreon"]


class LinkIn(BaseModel):
    """Body of ``POST /links``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    platform: Platform
    external_id: PlatformUserId = Field(description="the platform's numeric user id, 1-20 digits 0-9")
    discord_user_id: DiscordId = Field(description="Discord id, 17-20 digits 0-9, not starting with 0")


@router.post("/links", status_code=status.HTTP_201_CREATED)
def create_link(body: LinkIn, request: Request, state: Annotated[AppState, Depends(app_state)]) -> dict[str, Any]:
    """Link a platform user to a Discord user and queue every grant parked for them."""
    done = link(
        state.ledger,
        state.links,
        body.platform,
        body.external_id,
        body.discord_user_id,
        audit=state.audit,
        actor=api_actor(request),
    )
    return {**body.model_dump(), "released": list(done.released)}


@router.get("/links/{platform}")
def list_links(platform: Platform, state: Annotated[AppState, Depends(app_state)]) -> dict[str, Any]:
    """Every link of ``platform``, run-time and static."""
    links = state.links.all(platform)
    return {
        "platform": platform,
        "links": [{"external_id": ext, "discord_user_id": d, "origin": o} for ext, (d, o) in sorted(links.items())],
    }


@router.delete("/links/{platform}/{external_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_link(
    platform: Platform,
    external_id: Annotated[PlatformUserId, Path()],
    request: Request,
    state: Annotated[AppState, Depends(app_state)],
) -> Response:
    """Forget a run-time link (static links live in the rewards file)."""
    try:
        unlink(state.links, platform, external_id, audit=state.audit, actor=api_actor(request))
    except LinkRefused:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no run-time link for that user") from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
