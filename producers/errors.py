"""Every error answer of the web app in one shape: ``{"error": "<one line>", "detail": [{loc, msg, type}, ...]}``.

``error`` is the summary a person reads (``items[0].amount: ...``, ``missing or
wrong bearer token``); ``detail`` lists every problem for a program, the same
keys whether it came from validation, an ``HTTPException`` (401, 404, 413,
webhook refusals...), Redis being away (503), an operator's action the Redis
replicas did not confirm (503, ``producers.unconfirmed``) or a bug (500). A client that hangs
up mid-body is not an error of ours: it is logged at info level and never
reaches Sentry (``_client_gone``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import dramatiq
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from config.domain import InvalidInput
from producers.unconfirmed import ActionUnconfirmed

__all__ = ["error_response", "install_error_handlers"]

logger = logging.getLogger("wetbot_rewards.web")

#: Media types ``POST /grants`` and ``/links`` parse (and ``+json`` ones).
JSON_HINT = "send Content-Type: application/json"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error answer of ``app`` the one shape."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ActionUnconfirmed, _unconfirmed)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(RedisError, _storage_unavailable)
    app.add_exception_handler(dramatiq.errors.BrokerError, _storage_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _internal_error)


def error_response(
    status: int,
    summary: str,
    detail: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """``{"error": summary, "detail": detail}``; ``detail`` defaults to the summary as one problem."""
    if detail is None:
        detail = [{"loc": [], "msg": summary, "type": _status_type(status)}]
    return JSONResponse({"error": summary, "detail": detail}, status_code=status, headers=headers)


def _status_type(status: int) -> str:
    """``401`` → ``unauthorized``, ``413`` → ``content_too_large``: the status phrase as a machine-readable type."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Redis is down: nothing was promised, so the caller must retry (with the same idempotency key)."""
    logger.error("%s %s: storage unavailable: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(503, "storage unavailable; nothing was queued, retry later", headers={"Retry-After": "5"})


async def _unconfirmed(request: Request, exc: Exception) -> JSONResponse:
    """An operator's action too few replicas confirmed: 503, nothing claimed done, the message says to repeat it."""
    assert isinstance(exc, ActionUnconfirmed)
    logger.warning("%s %s: not confirmed by the Redis replicas: %s", request.method, request.url.path, exc.what)
    return error_response(503, exc.message, headers={"Retry-After": "5"})


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client closed the connection before its body arrived: nothing to answer, nothing to report."""
    logger.info("%s %s: client disconnected before the body arrived", request.method, request.url.path)
    return Response(status_code=400)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the same shape, no internals (the exception still reaches the logs and Sentry)."""
    return error_response(500, "internal error; nothing is known to be queued, retry later with the same key")


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    """A value that breaks its rule (``config.domain``), found past FastAPI's own validation: 422 naming the field."""
    assert isinstance(exc, InvalidInput)
    loc = [exc.field] if exc.field else []
    return error_response(422, str(exc), [{"loc": loc, "msg": exc.problem, "type": "value_error"}])


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 whose ``error`` line names the first bad field, e.g. ``items[0].amount: ...``.

    A JSON syntax error says where it is (``body is not valid JSON: Expecting ','
    delimiter at line 1 column 12``).
    """
    assert isinstance(exc, RequestValidationError)
    errors = [_problem(e, exc.body) for e in exc.errors()]
    if not errors:
        return error_response(422, "invalid request")
    first = errors[0]
    summary = first["msg"] if first["type"] == "json_invalid" else f"{_field_path(first['loc'])}: {first['msg']}"
    return error_response(422, summary, errors)


def _problem(error: Any, body: Any) -> dict[str, Any]:
    kind = str(error.get("type", ""))
    if kind == "json_invalid":
        return {"loc": ["body"], "msg": _json_syntax(error, body), "type": kind}
    return {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": kind}


def _json_syntax(error: Any, body: Any) -> str:
    """``body is not valid JSON: <what> at line L column C`` from FastAPI's ``json_invalid`` error."""
    what = str((error.get("ctx") or {}).get("error", "syntax error"))
    loc = list(error.get("loc", ()))
    pos = loc[-1] if loc and isinstance(loc[-1], int) else None
    if pos is None:
        return f"body is not valid JSON: {what}"
    if not isinstance(body, str):
        return f"body is not valid JSON: {what} at character {pos + 1}"
    line = body.count("\n", 0, pos) + 1
    column = pos - body.rfind("\n", 0, pos)
    return f"body is not valid JSON: {what} at line {line} column {column}"


def _field_path(loc: list[Any]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path")] or ["body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
