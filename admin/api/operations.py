"""The operator API, all under ``/admin`` and the bearer ``ADMIN_TOKEN``: list and fix grants, list and
re-process inbox events.

``GET /admin/grants`` (filters and search, paged by ``cursor``), ``POST /admin/grants/{id}/cancel``,
``/replay``, ``/resolve``, ``POST /admin/grants/replay`` (every dead grant the filters match),
``GET /admin/events`` (paged by ``cursor``), ``POST /admin/events/{id}/reprocess``. Each action is the
function the console and the CLI call (``admin.grant_actions``, ``admin.reprocess``): one guarded atomic
step, written to the audit log. The same routes at their old paths (without ``/admin``) keep answering
for one release, marked deprecated (``DeprecatedAdminRoute``), as do the old query names ``after``,
``before_ms`` and ``guild``. A refused action (the grant is not in a state it applies to, or
changed since the ``version`` the caller saw) answers 409 with what the grant is now, so a retried
call never acts twice. An action too few Redis replicas confirmed answers 503 "could not be confirmed"
(``producers.unconfirmed``, via ``producers.errors``) and claims nothing: repeat it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from admin import grant_actions
from admin.reprocess import NothingToReprocess, ReprocessRefused, reprocess
from config.domain import InvalidInput, cursor_ms
from config.domain_fields import Digits
from producers.api.auth import api_actor as actor
from producers.api.guarded_route import AdminRoute
from producers.inbox import Outcome
from producers.state import AppState, app_state
from producers.unconfirmed import ActionUnconfirmed
from worker.grant import Grant, GrantState
from worker.grant_search import MAX_PAGE, GrantQuery, find_grants

__all__ = ["PREFIX", "DeprecatedAdminRoute", "legacy_router", "router"]

logger = logging.getLogger("wetbot_rewards.admin_api")

#: Where the operator API lives.
PREFIX = "/admin"

router = APIRouter(prefix=PREFIX, route_class=AdminRoute)

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
    guild_id: Annotated[str, Query(max_length=32)] = "",
    q: Annotated[str, Query(max_length=200, description="Discord id, Twitch login/id, Patreon id/name, key")] = "",
    limit: Annotated[Digits, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str, Query(max_length=120, description="the `next` cursor of the previous page")] = "",
    guild: Annotated[str, Query(max_length=32, deprecated=True, description="old name of guild_id")] = "",
    after: Annotated[str, Query(max_length=120, deprecated=True, description="old name of cursor")] = "",
) -> dict[str, Any]:
    """Grants newest first (with a state filter: newest into that state first), filtered and searched."""
    guild_id, cursor = renamed("guild", guild, "guild_id", guild_id), renamed("after", after, "cursor", cursor)
    try:
        query = GrantQuery(state=grant_state, source=source, guild_id=guild_id, text=q)
        page = find_grants(state.redis, state.keys, query, cursor=cursor or None, limit=limit)
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


class BulkReplayIn(BaseModel):
    """Which dead grants to replay: the filters of ``GET /admin/grants`` (``state`` is always ``dead``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    #: Left out: no filter. Given, never "" (an unset variable in a script), which would match every dead grant.
    source: str | None = Field(default=None, min_length=1, max_length=40)
    guild_id: str | None = Field(default=None, min_length=1, max_length=32)
    q: str | None = Field(default=None, min_length=1, max_length=200)
    up_to: float | None = Field(
        default=None, description="only grants dead at or before this epoch time (the moment you counted them)"
    )


@router.post("/grants/replay")
def bulk_replay(body: BulkReplayIn, request: Request, state: State) -> dict[str, Any]:
    """Queue again every dead grant the filters match (the console's "replay all", the CLI's
    ``grants replay --all``): each in its own guarded step, one audit entry for the run."""
    up_to = time.time() if body.up_to is None else body.up_to
    if not math.isfinite(up_to) or up_to > time.time() + 5:
        raise RequestValidationError([{"loc": ("body", "up_to"), "msg": "not a past time", "type": "value_error"}])
    try:
        query = GrantQuery(
            state=GrantState.DEAD, source=body.source or "", guild_id=body.guild_id or "", text=body.q or ""
        )
    except InvalidInput as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    done = grant_actions.bulk_replay(state.ledger, query, up_to=up_to, audit=state.audit, actor=actor(request))
    return {"replayed": list(done.replayed), "skipped": done.skipped}


@router.get("/events")
def list_events(
    state: State,
    outcome: Outcome | None = None,
    source: Literal["twitch", "patreon"] | None = None,
    limit: Annotated[Digits, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str, Query(max_length=15, description="the `next` cursor of the previous page")] = "",
    before_ms: Annotated[str, Query(max_length=15, deprecated=True, description="old name of cursor")] = "",
) -> dict[str, Any]:
    """Inbox events newest first, without their bodies (``wetbot-rewards events show`` has them)."""
    try:
        before = cursor_ms(renamed("before_ms", before_ms, "cursor", cursor), field="cursor")
    except InvalidInput as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{exc}; start from the first page") from None
    events = state.inbox.recent(outcome=outcome, source=source, limit=limit, before_ms=before)
    last = int(events[-1].received_at * 1000) if len(events) == limit else None
    # ``next_before_ms`` is the old name of ``next``, kept for one release.
    return {
        "events": [event.summary() for event in events],
        "next": None if last is None else str(last),
        "next_before_ms": last,
    }


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


def renamed(old: str, old_value: str, new: str, new_value: str) -> str:
    """A query parameter given by its new name or its old one (logged as deprecated); 400 when both differ."""
    if not old_value:
        return new_value
    if new_value and new_value != old_value:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{old} is the old name of {new}: give {new} only")
    logger.warning("operator API: query parameter %s is deprecated, use %s", old, new)
    return old_value


class DeprecatedAdminRoute(AdminRoute):
    """An operator route at its old path (without ``/admin``), kept for one release: it answers as the new
    one does, plus a ``Deprecation`` header and a ``Link`` to its successor, and logs a warning."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        successor = PREFIX + self.path

        async def deprecated(request: Request) -> Response:
            logger.warning("operator API: %s %s is deprecated, use %s", request.method, self.path, successor)
            marks = {"Deprecation": "true", "Link": f'<{PREFIX}{request.url.path}>; rel="successor-version"'}
            try:
                response = await handler(request)
            except HTTPException as exc:  # a refusal is marked too (the error handlers keep its headers)
                raise HTTPException(exc.status_code, exc.detail, headers={**(exc.headers or {}), **marks}) from exc
            response.headers.update(marks)
            return response

        return deprecated


#: The operator routes at their old paths, for one release (``DeprecatedAdminRoute``).
legacy_router = APIRouter(route_class=DeprecatedAdminRoute, include_in_schema=False)
for _route in list(router.routes):
    if isinstance(_route, APIRoute) and _route.path != f"{PREFIX}/grants/replay":  # the bulk replay is new
        legacy_router.add_api_route(
            _route.path.removeprefix(PREFIX),
            _route.endpoint,
            methods=sorted(_route.methods or ()),
            response_class=_route.response_class,
        )
