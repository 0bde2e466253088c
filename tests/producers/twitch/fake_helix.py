"""A fake Twitch (token endpoint + Helix EventSub subscriptions) over real HTTP on loopback.

Behaves like the documented API where ``twitch subscribe`` depends on it:
client-credentials tokens, ``Client-Id`` + bearer on every Helix call, 202 with
``data[0]`` on create, 409 for a duplicate type + condition, paginated listing
with ``pagination.cursor``, unused condition fields listed as ``""`` (raid), and
``DELETE ?id=`` answering 204.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CLIENT_ID = "fake-client-id-123"
CLIENT_SECRET = "fake-client-secret-9f8e7d6c"
#: Helix lists these condition fields as "" when they are not used (raid has both directions).
_EMPTY_CONDITION_FIELDS = {"channel.raid": ("from_broadcaster_user_id", "to_broadcaster_user_id")}


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeHelixState:
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    #: Transport secrets sent on create, by subscription id (Helix never lists them).
    secrets: dict[str, str] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)
    #: Types whose create answers 403 (the broadcaster has not authorised the scope).
    unauthorised_types: set[str] = field(default_factory=set)
    page_size: int = 2
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeHelix:
    """Start with ``start()``; ``url`` is the base (``{url}/helix``, ``{url}/oauth2/token``)."""

    def __init__(self) -> None:
        self.state = FakeHelixState()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add_subscription(
        self, subscription_type: str, version: str, condition: dict[str, str], callback: str, status: str = "enabled"
    ) -> str:
        """Arrange an existing subscription; returns its id."""
        with self.state.lock:
            return _store(self.state, subscription_type, version, condition, callback, status)

    def creates(self) -> list[Recorded]:
        return [r for r in self.state.requests if r.method == "POST" and r.path.endswith("/eventsub/subscriptions")]


def _store(
    state: FakeHelixState, subscription_type: str, version: str, condition: dict[str, str], callback: str, status: str
) -> str:
    listed = dict(condition)
    for name in _EMPTY_CONDITION_FIELDS.get(subscription_type, ()):
        listed.setdefault(name, "")
    sub_id = str(uuid.uuid4())
    state.subscriptions.append(
        {
            "id": sub_id,
            "status": status,
            "type": subscription_type,
            "version": version,
            "condition": listed,
            "created_at": "2026-01-01T00:00:00.000000000Z",
            "transport": {"method": "webhook", "callback": callback},
            "cost": 0,
        }
    )
    return sub_id


def _handler(state: FakeHelixState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _record(self) -> Recorded:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urlsplit(self.path)
            recorded = Recorded(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
            )
            with state.lock:
                state.requests.append(recorded)
            return recorded

        def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._reply(status, {"error": self.responses[status][0], "status": status, "message": message})

        def _authorised(self, request: Recorded) -> bool:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if request.headers.get("client-id") != CLIENT_ID:
                self._error(401, "Client ID and OAuth token do not match")
                return False
            if token not in state.tokens:
                self._error(401, "Invalid OAuth token")
                return False
            return True

        def _subscriptions_call(self, request: Recorded) -> bool:
            """True for an authorised call to the EventSub subscriptions endpoint; else answers 404 or 401."""
            if request.path != "/helix/eventsub/subscriptions":
                self._error(404, "not found")
                return False
            return self._authorised(request)

        def do_POST(self) -> None:
            request = self._record()
            if request.path == "/oauth2/token":
                form = parse_qs(request.body.decode())
                if form.get("client_id") != [CLIENT_ID] or form.get("client_secret") != [CLIENT_SECRET]:
                    self._error(403, "invalid client secret")
                    return
                if form.get("grant_type") != ["client_credentials"]:
                    self._error(400, "unsupported grant type")
                    return
                token = uuid.uuid4().hex
                with state.lock:
                    state.tokens.add(token)
                self._reply(200, {"access_token": token, "expires_in": 5011271, "token_type": "bearer"})
                return
            if not self._subscriptions_call(request):
                return
            body = json.loads(request.body)
            transport = body.get("transport", {})
            secret = transport.get("secret", "")
            if transport.get("method") != "webhook" or not 10 <= len(secret) <= 100:
                self._error(400, "invalid transport")
                return
            if body["type"] in state.unauthorised_types:
                self._error(403, "subscription missing proper authorization")
                return
            with state.lock:
                for sub in state.subscriptions:
                    listed = {k: v for k, v in sub["condition"].items() if v}
                    if (sub["type"], sub["version"], listed) == (
                        body["type"],
                        body["version"],
                        body["condition"],
                    ) and sub["status"] in ("enabled", "webhook_callback_verification_pending"):
                        self._error(409, "subscription already exists")
                        return
                sub_id = _store(
                    state,
                    body["type"],
                    body["version"],
                    body["condition"],
                    transport["callback"],
                    "webhook_callback_verification_pending",
                )
                state.secrets[sub_id] = secret
                created = next(s for s in state.subscriptions if s["id"] == sub_id)
            self._reply(
                202, {"data": [created], "total": len(state.subscriptions), "total_cost": 0, "max_total_cost": 10000}
            )

        def do_GET(self) -> None:
            request = self._record()
            if not self._subscriptions_call(request):
                return
            start = int(request.query.get("after", ["0"])[0])
            with state.lock:
                page = state.subscriptions[start : start + state.page_size]
                more = start + state.page_size < len(state.subscriptions)
                total = len(state.subscriptions)
            pagination = {"cursor": str(start + state.page_size)} if more else {}
            self._reply(
                200, {"data": page, "total": total, "total_cost": 0, "max_total_cost": 10000, "pagination": pagination}
            )

        def do_DELETE(self) -> None:
            request = self._record()
            if not self._subscriptions_call(request):
                return
            sub_id = request.query.get("id", [""])[0]
            with state.lock:
                before = len(state.subscriptions)
                state.subscriptions[:] = [s for s in state.subscriptions if s["id"] != sub_id]
                found = len(state.subscriptions) < before
            if found:
                self._reply(204)
            else:
                self._error(404, "subscription not found")

    return Handler
