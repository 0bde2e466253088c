"""The operator API (bearer ``ADMIN_TOKEN``): list and fix grants, list and re-process inbox events.

``GET /grants`` (filters and search, paged by cursor), ``POST /grants/{id}/cancel``, ``/replay``,
``/resolve``, ``GET /events``, ``POST /events/{id}/reprocess``. Each action is the function the
console and the CLI call (``admin.grant_actions``, ``admin.reprocess``): one guarded atomic
step, written to the audit log. A refused action (the grant is not in a state it applies to, or
changed since the ``version`` the caller saw) answers 409 with what the grant is now, so a retried
call never acts twice. An action too few Redis replicas confirmed answers 503 "could not be confirmed"
(``producers.unconfirmed``, via ``producers.errors``) and claims nothing: repeat it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from admin import grant_actions
from admin.reprocess import NothingToReprocess, ReprocessRefused, reprocess
from config.domain import InvalidInput
from config.domain_fields import Digits
from producers.api.auth import api_actor as actor
from producers.api.guarded_route import AdminRoute
from producers.inbox import Outcome
from producers.state import AppState, app_state
from producers.unconfirmed import ActionUnconfirmed
from worker.grant import Grant, GrantState
from worker.grant_search import MAX_PAGE, GrantQuery, find_grants

router = APIRouter(route_class=AdminRoute)

GrantId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
EventId = Annotated[str, Path(pattern=r"^[0-9a-f]{24}$")]
State = Annotated[AppState, Depends(app_state)]


class ActionIn(BaseModel):
    """Common to every grant action: ``version``, the number of history entries the caller saw (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int | None = Field(default=None, ge=0, description="refuse if the grant's history has changed since")


class CancelIn(ActionIn):
    reason: str = Field(min_length=1, max_length=500, description="why (kept in the history and the audit log)")


class ResolveIn(ActionIn):
    decision: Literal["delivered", "resend", "verify"]
    note: str = Field(default="", max_length=500)


def grant_view(state: AppState, grants: list[Grant]) -> list[dict[str, Any]]:
    """Grants as the API shows them, each with its ``version`` and, while it waits, its ``eta``."""
    with state.redis.pipeline(transaction=False) as pipe:
        for grant in grants:
            pipe.llen(state.keys.history(grant.id))
        versions = pipe.execute()
    etas = state.eta.for_grants(grants)
    out = []
    for grant, version in zip(grants, versions, strict=True):
        eta = etas.get(grant.id)
        out.append({**grant.to_dict(), "version": int(version), "eta": None if eta is None else eta.to_dict()})
    return out


@router.get("/grants")
def list_grants(
    state: State,
    grant_state: Annotated[GrantState | None, Query(alias="state")] = None,
    source: Annotated[str, Query(max_length=40)] = "",
    guild: Annotated[str, Query(max_length=32)] = "",
    q: Annotated[str, Query(max_length=200, description="Discord id, Twitch login/id, Patreon id/name, key")] = "",
    limit: Annotated[Digits, Query(ge=1, le=MAX_PAGE)] = 50,
    after: Annotated[str, Query(max_length=120, description="the `next` cursor of the previous page")] = "",
) -> dict[str, Any]:
    """Grants newest first (with a state filter: newest into that state first), filtered and searched."""
    try:
        query = GrantQuery(state=grant_state, source=source, guild_id=guild, text=q)
        page = find_grants(state.redis, state.keys, query, cursor=after or None, limit=limit)
    except InvalidInput as exc:  # BadCursor too
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return {"grants": grant_view(state, page.grants), "next": page.next_cursor, "total": page.total}


def _act(state: AppState, run: Callable[[], grant_actions.ActionDone]) -> JSONResponse:
    try:
        result = run()
    except grant_actions.GrantMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, exc.message) from None
    except grant_actions.ActionInvalid as exc:
        raise RequestValidationError([{"loc": ("body",), "msg": exc.message, "type": "value_error"}]) from None
    except grant_actions.ActionRefused as exc:
        now = None if exc.grant is None else grant_view(state, [exc.grant])[0]
        return JSONResponse({"error": exc.message, "grant": now}, status_code=status.HTTP_409_CONFLICT)
    body = {"done": result.done, "message": result.message, "moved": list(result.moved)}
    return JSONResponse({**body, "grant": grant_view(state, [result.grant])[0]})


@router.post("/grants/{grant_id}/cancel")
def cancel_grant(grant_id: GrantId, body: CancelIn, request: Request, state: State) -> JSONResponse:
    """Cancel a queued, parked or retrying grant: it is never sent. Cancelling it again answers ``done: false``."""
    version = -1 if body.version is None else body.version
    return _act(
        state,
        lambda: grant_actions.cancel(
            state.ledger, grant_id, body.reason, version=version, audit=state.audit, actor=actor(request)
        ),
    )


@router.post("/grants/{grant_id}/replay")
def replay_grant(grant_id: GrantId, request: Request, state: State, body: ActionIn | None = None) -> JSONResponse:
    """Queue a dead grant again (its failures start over); 409 when it is not dead."""
    version = -1 if body is None or body.version is None else body.version
    return _act(
        state,
        lambda: grant_actions.replay(state.ledger, grant_id, version=version, audit=state.audit, actor=actor(request)),
    )


@router.post("/grants/{grant_id}/resolve")
def resolve_grant(grant_id: GrantId, body: ResolveIn, request: Request, state: State) -> JSONResponse:
    """Decide an ``unknown`` grant: ``delivered``, ``resend`` or ``verify`` (a read-back); 409 when not unknown."""
    version = -1 if body.version is None else body.version
    decision = grant_actions.Decision(body.decision)
    return _act(
        state,
        lambda: grant_actions.resolve(
            state.ledger, grant_id, decision, note=body.note, version=version, audit=state.audit, actor=actor(request)
        ),
    )


@router.get("/events")
def list_events(
    state: State,
    outcome: Outcome | None = None,
    source: Literal["twitch", "patreon"] | None = None,
    limit: Annotated[Digits, Query(ge=1, le=MAX_PAGE)] = 50,
    before_ms: Annotated[Digits | None, Query(ge=0, description="received before (epoch ms): the next page")] = None,
) -> dict[str, Any]:
    """Inbox events newest first, without their bodies (``wetbot-rewards events show`` has them)."""
    events = state.inbox.recent(outcome=outcome, source=source, limit=limit, before_ms=before_ms)
    last = int(events[-1].received_at * 1000) if len(events) == limit else None
    return {"events": [event.summary() for event in events], "next_before_ms": last}


@router.post("/events/{event_id}/reprocess")
async def reprocess_event(event_id: EventId, request: Request, state: State) -> JSONResponse:
    """Handle a stored ``unusable`` or ``ignored`` event again (the same idempotency keys: never twice)."""
    who = actor(request)
    try:
        outcome = await reprocess(state, event_id)
    except ReprocessRefused as exc:
        state.audit.record(who, "reprocess", event_id, "refused", str(exc))
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except NothingToReprocess as exc:
        state.audit.record(who, "reprocess", event_id, "refused", str(exc))
        return JSONResponse({"error": str(exc), "event": exc.event.summary()}, status_code=status.HTTP_409_CONFLICT)
    except ActionUnconfirmed as exc:  # 503 (producers.errors), after the audit
        state.audit.record(who, "reprocess", event_id, "not confirmed", exc.message)
        raise
    state.audit.record(who, "reprocess", event_id, "done", outcome.outcome.value)
    return JSONResponse({"event_id": event_id, **outcome.detail()})
