"""The Twitch simulator's ``/_sim/...`` control endpoints: the in-process control methods over HTTP, for
processes that do not hold the :class:`simulator.twitch.TwitchSimulator` object (demo mode, chaos runs).

Plain JSON in and out; GETs read, POSTs change. The list is in the docstring of ``simulator.twitch``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from simulator._http import Reply, Request

if TYPE_CHECKING:
    from simulator.twitch_core import TwitchCore

GETS = frozenset({"health", "requests", "device/pending", "rewards", "redemptions", "refunds", "subscriptions"})
POSTS = frozenset(
    {
        "reset",
        "faults",
        "device/approve",
        "device/deny",
        "tokens/expire",
        "tokens/revoke_all",
        "tokens/issue",
        "tokens/lifetime",
        "authorize",
        "clock/advance",
        "rate_limit",
        "redeem",
        "rewards/create",
        "rewards/delete",
        "rewards/rename",
        "subscriptions/status",
        "sessions/end",
    }
)


def control(sim: TwitchCore, request: Request) -> Reply:
    endpoint = request.path.removeprefix("/_sim").strip("/")
    if endpoint not in GETS | POSTS:
        return Reply(404, {"error": f"unknown control endpoint {request.path}"})
    if request.method != ("GET" if endpoint in GETS else "POST"):
        return Reply(405, {"error": "method not allowed"})
    try:
        args = request.json_body() if request.body else {}
        if not isinstance(args, dict):
            raise TypeError("body must be a JSON object")
        named = {str(k): v for k, v in args.items()}
        return _read(sim, endpoint) if endpoint in GETS else _change(sim, endpoint, named)
    except (ValueError, TypeError, KeyError) as exc:
        return Reply(400, {"error": f"{type(exc).__name__}: {exc}"})


def _read(sim: TwitchCore, endpoint: str) -> Reply:
    if endpoint == "health":
        return Reply(200, {"ok": True, "auth_url": sim.auth_url, "api_url": sim.api_url})
    if endpoint == "requests":
        return Reply(200, {"requests": [asdict(record) for record in sim.requests()]})
    if endpoint == "device/pending":
        return Reply(200, {"user_codes": sim.pending_user_codes()})
    if endpoint == "rewards":
        return Reply(200, {"rewards": sim.rewards()})
    if endpoint == "redemptions":
        return Reply(200, {"redemptions": sim.redemptions()})
    if endpoint == "refunds":
        return Reply(200, {"refunds": sim.refunds()})
    return Reply(200, {"subscriptions": sim.subscriptions()})


def _change(sim: TwitchCore, endpoint: str, args: dict[str, object]) -> Reply:
    answer: dict[str, object] = {"ok": True}
    if endpoint in ("device/approve", "device/deny"):
        code = _optional_str(args.get("user_code"))
        login = _optional_str(args.get("login"))
        answer["user_code"] = sim.deny(code) if endpoint == "device/deny" else sim.approve(code, login)
    elif endpoint == "faults":
        sim.inject(
            str(args["kind"]),
            path=_optional_str(args.get("path")),
            method=_optional_str(args.get("method")),
            count=int(_float(args.get("count", 1))),
            status=int(_float(args.get("status", 503))),
            message=str(args.get("message", "Service Unavailable")),
            delay_s=_float(args.get("delay_s", 5.0)),
        )
    elif endpoint == "reset":
        sim.reset()
    elif endpoint == "tokens/expire":
        sim.expire_access_tokens()
    elif endpoint == "tokens/revoke_all":
        sim.revoke_all()
    elif endpoint == "tokens/issue":
        scopes = args.get("scopes", [])
        if not isinstance(scopes, list):
            raise TypeError("scopes must be a list")
        answer["tokens"] = sim.issue_user_token(_optional_str(args.get("login")), [str(s) for s in scopes])
    elif endpoint == "tokens/lifetime":
        sim.set_access_token_lifetime(_float(args["seconds"]))
    elif endpoint == "authorize":
        sim.set_authorize(str(args["mode"]))
    elif endpoint == "clock/advance":
        sim.advance_clock(_float(args["seconds"]))
    elif endpoint == "rate_limit":
        sim.set_rate_limit(int(_float(args["limit"])), _float(args.get("window_s", 60.0)))
    else:
        answer |= _change_channel(sim, endpoint, args)
    return Reply(200, answer)


def _change_channel(sim: TwitchCore, endpoint: str, args: dict[str, object]) -> dict[str, object]:
    if endpoint == "redeem":
        event = sim.redeem(str(args["reward_id"]), str(args["login"]), str(args.get("user_input", "")))
        return {"event": event}
    if endpoint == "rewards/create":
        fields = {k: v for k, v in args.items() if k not in ("title", "cost", "other_app")}
        title, cost = str(args["title"]), int(_float(args["cost"]))
        if args.get("other_app", True):
            return {"reward": sim.create_reward_as_other_app(title, cost, fields)}
        return {"reward": sim.create_reward(title, cost, fields)}
    if endpoint == "rewards/delete":
        sim.delete_reward(str(args["reward_id"]))
    elif endpoint == "rewards/rename":
        sim.rename_reward(str(args["reward_id"]), str(args["title"]))
    elif endpoint == "subscriptions/status":
        sim.set_subscription_status(str(args["id"]), str(args["status"]))
    else:  # sessions/end
        ended = sim.end_session(str(args["session_id"]), str(args.get("status", "websocket_disconnected")))
        return {"subscriptions": ended}
    return {}


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)
