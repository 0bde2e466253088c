"""The generic producer: ``POST /grants`` and ``GET /grants/{id}``, both behind the bearer token (``GuardedRoute``).

Bodies are checked strictly: numbers must be JSON numbers (``true`` and ``"5"``
are refused, not coerced) and ids and reasons printable text
(``producers.printable``), so nothing a caller sends can later drive an
operator's terminal or hide in a log line.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from config.domain import amount
from config.domain_fields import DiscordId, IdempotencyKey, ItemId, pydantic_check
from producers.api.guarded_route import GuardedRoute
from producers.printable import check_printable
from producers.state import AppState, app_state
from producers.submit import submit_grant
from worker.grant import Grant, GrantItem, NewGrant

#: Items per grant; WetBot documents no maximum, so stay modest.
MAX_ITEMS = 50

Snowflake = Annotated[DiscordId, Field(description="Discord id, 17-20 digits 0-9, not starting with 0")]


class ItemIn(BaseModel):
    """One item to give (or take, when negative)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    item_id: ItemId
    amount: Annotated[float, AfterValidator(pydantic_check(amount))]


class GrantIn(BaseModel):
    """Body of ``POST /grants``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    guild_id: Snowflake | None = None
    user_id: Snowflake
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS)
    idempotency_key: IdempotencyKey | None = None
    reason: str | None = Field(default=None, max_length=500)

    @field_validator("reason")
    @classmethod
    def _printable_reason(cls, value: str | None) -> str | None:
        return None if value is None else check_printable(value, text=True)

    @field_validator("items")
    @classmethod
    def _unique_items(cls, items: list[ItemIn]) -> list[ItemIn]:
        seen: set[str] = set()
        for item in items:
            if item.item_id in seen:
                raise ValueError(f"item_id {item.item_id!r} appears twice; give it once with the total amount")
            seen.add(item.item_id)
        return items


router = APIRouter(route_class=GuardedRoute)


@router.post("/grants", status_code=status.HTTP_202_ACCEPTED)
def create_grant(body: GrantIn, response: Response, state: Annotated[AppState, Depends(app_state)]) -> dict[str, Any]:
    """Queue a grant. 202 when new; 200 with the existing grant when the idempotency key was seen."""
    guild_id = body.guild_id or state.rewards.guild_id
    if guild_id is None:
        raise RequestValidationError(
            [{"loc": ("body", "guild_id"), "msg": "required (the rewards file sets no guild_id)", "type": "missing"}]
        )
    if not state.keyring.empty and not state.keyring.covers(guild_id):
        raise RequestValidationError(
            [{"loc": ("body", "guild_id"), "msg": state.keyring.missing_key_problem(guild_id), "type": "value_error"}]
        )
    items = tuple(GrantItem(item.item_id, item.amount) for item in body.items)
    new = NewGrant(
        guild_id=guild_id,
        user_id=body.user_id,
        items=items,
        source="api",
        idempotency_key=f"api:{body.idempotency_key or uuid.uuid4().hex}",
        source_ref=body.idempotency_key or "",
        reason=body.reason or "",
    )
    result = submit_grant(state.ledger, new)
    grant = result.grant
    if not result.created:
        if (grant.guild_id, grant.user_id, grant.items) != (new.guild_id, new.user_id, new.items):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"idempotency_key was already used for a different grant ({grant.id})",
            )
        response.status_code = status.HTTP_200_OK
    return _view(grant)


@router.get("/grants/{grant_id}")
def get_grant(
    grant_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")], state: Annotated[AppState, Depends(app_state)]
) -> dict[str, Any]:
    """The grant with its transitions and, while it waits, when it is expected to go out (``eta``)."""
    grant = state.ledger.get(grant_id)
    if grant is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such grant")
    view = _view(grant)
    eta = state.eta.for_grants([grant]).get(grant.id)
    view["eta"] = None if eta is None else eta.to_dict()
    view["history"] = [
        {"at": t.at, "from": t.from_state or None, "to": t.to_state, "reason": t.reason}
        for t in state.ledger.history(grant_id)
    ]
    return view


def _view(grant: Grant) -> dict[str, Any]:
    return grant.to_dict()
