"""A local EventSub WebSocket server that behaves as Twitch's documents say, for tests and demo mode.

A real WebSocket server on loopback (the ``websockets`` library, its asyncio loop in a daemon thread),
started in-process (:class:`EventSubWebSocketServer`). The Twitch HTTP simulator owns one: when a
``websocket``-transport subscription is created it asks :meth:`~EventSubWebSocketServer.has_session`
and binds the subscription with :meth:`~EventSubWebSocketServer.attach`.

Facts vs. choices
=================
**Documented facts** (docs/sources-sync.md §3.1; dev.twitch.tv handling-websocket-events and
websocket-reference):

* Clients connect to ``/ws``; the optional query ``keepalive_timeout_seconds`` takes 10-600 and a
  numeric value outside that range is answered with the nearest acceptable one.
* The first message is ``session_welcome``: ``metadata`` {``message_id``, ``message_type``,
  ``message_timestamp``} and ``payload.session`` {``id``, ``status`` "connected",
  ``keepalive_timeout_seconds``, ``reconnect_url`` null, ``connected_at``} (Twitch also sends
  ``recovery_url`` null). Timestamps are RFC3339 with nanoseconds.
* ``keepalive_timeout_seconds`` is both the longest silence before a ``session_keepalive`` (empty
  payload) and how long the client has to subscribe: with no subscription by then the socket closes
  with 4003 "connection unused".
* ``notification`` and ``revocation`` messages add ``subscription_type`` and ``subscription_version`` to
  the metadata; the payload holds ``subscription`` (and ``event`` for a notification). Messages are
  at-least-once and a resend keeps its ``message_id``.
* Any message from the client other than a pong closes the socket with 4001.
* ``session_reconnect`` carries the session with ``status`` "reconnecting", ``keepalive_timeout_seconds``
  null and a ``reconnect_url``. The client opens that URL and keeps the old socket until the new
  welcome; the subscriptions move over. Closing the old socket first ends in 4007 "invalid reconnect"
  (pyTwitchAPI #286). A client that has not reconnected 30 s later gets 4004.
* Close codes 4000-4007 (:data:`CLOSE_REASONS`). A session that dies without a reconnect takes its
  subscriptions with it; Helix then shows them with a ``websocket_*`` status (:data:`CLOSE_STATUSES`,
  the names of docs.rs ``twitch_api::eventsub::Status``).
* Limits: ≤ 300 enabled subscriptions per connection, ≤ 3 connections per user and client id.

**Simulator choices** (ASSUMPTIONS):

* The session keeps its id across a reconnect (twitch4j's ``EventSocketWelcomedEvent.sessionChanged`` is
  false after a Twitch-requested reconnect), so subscriptions keep their ``transport.session_id``.
  The reconnect URL is ``<url>?reconnect_id=<token>`` and keeps the session's keepalive timeout.
* A ``session_keepalive`` goes out after 0.8 of the keepalive timeout of silence on the socket, so
  a client that waits the full timeout never races it (:data:`KEEPALIVE_SILENCE_FRACTION`).
* After the new welcome the old socket is closed with 1000 "reconnected"; a reconnect URL used
  twice, unknown, or whose session has ended is closed with 4007 right after the handshake, without
  a welcome. The 4003 check applies to a session's first socket only.
* A non-numeric ``keepalive_timeout_seconds`` is ignored (the default applies). Subsecond values are
  accepted when ``min_keepalive_s`` is lowered, and the welcome then carries a fractional number.
* The server sends no WebSocket pings of its own, so 4002 happens only through :meth:`close`. An
  unknown path is answered 404 before the upgrade.
* A subscription's end status: from the close code, 4007 as ``websocket_failed_to_reconnect``, a close
  or drop by the client as ``websocket_disconnected``, :meth:`stop` (1001) as ``websocket_disconnected``.
* The connection limit is counted per ``owner`` (what :meth:`attach` is given, e.g. client id and
  user id) over live sessions holding at least one subscription.

Faults (the simulator's purpose, not Twitch behaviour): ``keepalives_enabled = False`` silences the
keepalives, :meth:`close` closes with any documented code, :meth:`drop` cuts the TCP connection without
a close frame, :meth:`notify` with ``duplicate=True`` sends a notification twice under one ``message_id``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Final, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = [
    "CLOSE_REASONS",
    "CLOSE_STATUSES",
    "DISCONNECTED",
    "ConnectionLimitError",
    "EventSubSimError",
    "EventSubWebSocketServer",
    "JsonObject",
    "SubscriptionLimitError",
    "UnknownSessionError",
    "UnknownSubscriptionError",
    "WsRecord",
]

JsonObject = dict[str, object]
_T = TypeVar("_T")

DEFAULT_KEEPALIVE_S: Final = 10.0
MIN_KEEPALIVE_S: Final = 10.0
MAX_KEEPALIVE_S: Final = 600.0
#: How long a client has to open the reconnect URL before the old socket closes with 4004.
RECONNECT_GRACE_S: Final = 30.0
MAX_SUBSCRIPTIONS_PER_CONNECTION: Final = 300
MAX_CONNECTIONS: Final = 3
#: ASSUMPTION: the share of the keepalive timeout a socket stays silent before a keepalive goes out.
KEEPALIVE_SILENCE_FRACTION: Final = 0.8
#: Path the server accepts upgrades on.
WS_PATH: Final = "/ws"

CLOSE_INTERNAL_ERROR: Final = 4000
CLOSE_INBOUND_TRAFFIC: Final = 4001
CLOSE_FAILED_PING_PONG: Final = 4002
CLOSE_CONNECTION_UNUSED: Final = 4003
CLOSE_RECONNECT_GRACE_EXPIRED: Final = 4004
CLOSE_NETWORK_TIMEOUT: Final = 4005
CLOSE_NETWORK_ERROR: Final = 4006
CLOSE_INVALID_RECONNECT: Final = 4007
#: ASSUMPTION: how the server closes the old socket once the new one got its welcome.
CLOSE_RECONNECTED: Final = 1000

#: Twitch's documented close codes and their names, sent as the close reason.
CLOSE_REASONS: Final[Mapping[int, str]] = {
    CLOSE_INTERNAL_ERROR: "internal server error",
    CLOSE_INBOUND_TRAFFIC: "client sent inbound traffic",
    CLOSE_FAILED_PING_PONG: "client failed ping-pong",
    CLOSE_CONNECTION_UNUSED: "connection unused",
    CLOSE_RECONNECT_GRACE_EXPIRED: "reconnect grace time expired",
    CLOSE_NETWORK_TIMEOUT: "network timeout",
    CLOSE_NETWORK_ERROR: "network error",
    CLOSE_INVALID_RECONNECT: "invalid reconnect",
}
#: The status a session's subscriptions end in when a close code ends it.
CLOSE_STATUSES: Final[Mapping[int, str]] = {
    CLOSE_INTERNAL_ERROR: "websocket_internal_error",
    CLOSE_INBOUND_TRAFFIC: "websocket_received_inbound_traffic",
    CLOSE_FAILED_PING_PONG: "websocket_failed_ping_pong",
    CLOSE_CONNECTION_UNUSED: "websocket_connection_unused",
    CLOSE_RECONNECT_GRACE_EXPIRED: "websocket_failed_to_reconnect",
    CLOSE_NETWORK_TIMEOUT: "websocket_network_timeout",
    CLOSE_NETWORK_ERROR: "websocket_network_error",
    CLOSE_INVALID_RECONNECT: "websocket_failed_to_reconnect",
}
#: The status of subscriptions whose session the client closed or lost.
DISCONNECTED: Final = "websocket_disconnected"

#: How long a control call waits for the server's loop (a send, a close handshake).
_CONTROL_TIMEOUT_S: Final = 15.0
#: How long the server waits for a client's answer to its close frame.
_CLOSE_TIMEOUT_S: Final = 2.0

RecordKind = Literal["sent", "received", "closed_by_server", "closed_by_client"]


class EventSubSimError(RuntimeError):
    """Raised when a control call asks the EventSub WebSocket simulator for something it cannot do."""


class UnknownSessionError(EventSubSimError, LookupError):
    """Raised when a session id names no live session."""


class UnknownSubscriptionError(EventSubSimError, LookupError):
    """Raised when no live session holds the subscription id or type asked for."""


class SubscriptionLimitError(EventSubSimError):
    """Raised when a session already holds the most subscriptions one connection may have."""


class ConnectionLimitError(EventSubSimError):
    """Raised when an owner already has the most connections with subscriptions it may have."""


@dataclass(frozen=True)
class WsRecord:
    """One thing that happened on a session's socket.

    ``connection`` counts the session's sockets (1 = the first, 2 after the first reconnect, ...; 0 for
    a reconnect URL refused before it reached a session). ``text`` is the frame's text for
    ``sent``/``received`` and the close reason for closes; ``code`` is the close code.
    """

    session_id: str
    connection: int
    kind: RecordKind
    text: str
    code: int | None
    at: float

    @property
    def message(self) -> JsonObject | None:
        """A sent message parsed (None for other records)."""
        if self.kind != "sent":
            return None
        parsed = json.loads(self.text)
        return parsed if isinstance(parsed, dict) else None

    @property
    def message_type(self) -> str | None:
        """``metadata.message_type`` of a sent message."""
        message = self.message
        metadata = message.get("metadata") if message is not None else None
        value = metadata.get("message_type") if isinstance(metadata, dict) else None
        return value if isinstance(value, str) else None


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    session: _Session
    index: int
    connected_at: str
    silent_since: float
    server_close: int | None = None


@dataclass(eq=False)
class _Session:
    id: str
    keepalive_s: float
    connected_at: str
    conn: _Conn | None = None
    subscriptions: dict[str, JsonObject] = field(default_factory=dict)
    owner: str | None = None
    used: bool = False
    ended: str | None = None
    reconnect_token: str | None = None
    sockets: int = 0


def timestamp() -> str:
    """Now in RFC3339 with nanoseconds, as Twitch writes ``message_timestamp``."""
    ns = time.time_ns()
    seconds = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{seconds}.{ns % 1_000_000_000:09d}Z"


def _number(value: float) -> int | float:
    """A whole keepalive as an int (what Twitch sends), a compressed subsecond one as it is."""
    return int(value) if float(value).is_integer() else value


def _message(message_type: str, payload: JsonObject, subscription: Mapping[str, object] | None = None) -> JsonObject:
    metadata: JsonObject = {
        "message_id": str(uuid.uuid4()),
        "message_type": message_type,
        "message_timestamp": timestamp(),
    }
    if subscription is not None:
        metadata["subscription_type"] = subscription.get("type")
        metadata["subscription_version"] = subscription.get("version")
    return {"metadata": metadata, "payload": payload}


class EventSubWebSocketServer:
    """An in-process EventSub WebSocket server; see the module docstring for what is fact and what is choice.

    Parameters:
      host, port: where to listen; port 0 picks a free port (kept across :meth:`stop`/:meth:`start`).
      default_keepalive_s: the keepalive timeout when the query asks for none (Twitch: 10).
      min_keepalive_s, max_keepalive_s: the range the query is clamped to (Twitch: 10-600). Lowering
        the floor compresses the protocol's time (demo mode, tests): a session then may ask for 0.5 s.
      reconnect_grace_s: how long after ``session_reconnect`` the old socket waits for the new one
        before closing with 4004 (Twitch: 30).
      max_subscriptions_per_connection, max_connections: the limits :meth:`attach` enforces.
      close_unused: close a first socket with 4003 when no subscription arrived within its keepalive
        timeout (Twitch always does).
      on_session_end: called with ``(session_id, status)`` when a session ends without a reconnect;
        runs in a thread of its own, so it may call back into the server.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_keepalive_s: float = DEFAULT_KEEPALIVE_S,
        min_keepalive_s: float = MIN_KEEPALIVE_S,
        max_keepalive_s: float = MAX_KEEPALIVE_S,
        reconnect_grace_s: float = RECONNECT_GRACE_S,
        max_subscriptions_per_connection: int = MAX_SUBSCRIPTIONS_PER_CONNECTION,
        max_connections: int = MAX_CONNECTIONS,
        close_unused: bool = True,
        on_session_end: Callable[[str, str], None] | None = None,
    ) -> None:
        if not 0 < min_keepalive_s <= max_keepalive_s:
            raise ValueError("need 0 < min_keepalive_s <= max_keepalive_s")
        self._host = host
        self._port = port
        self.default_keepalive_s = min(max(default_keepalive_s, min_keepalive_s), max_keepalive_s)
        self.min_keepalive_s = min_keepalive_s
        self.max_keepalive_s = max_keepalive_s
        self.reconnect_grace_s = reconnect_grace_s
        self.max_subscriptions_per_connection = max_subscriptions_per_connection
        self.max_connections = max_connections
        self.close_unused = close_unused
        self.on_session_end = on_session_end
        #: Fault: False stops every socket's keepalives (a server that went quiet).
        self.keepalives_enabled = True
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._tokens: dict[str, _Session] = {}
        self._records: list[WsRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[_Conn] = set()
        self._callbacks: concurrent.futures.ThreadPoolExecutor | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> EventSubWebSocketServer:
        """Bind and serve in a daemon thread; returns self. ``url`` is valid afterwards."""
        if self._thread is not None:
            raise RuntimeError("EventSub WebSocket server already running")
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(target=self._run_loop, args=(loop, ready), daemon=True)
        thread.name = "eventsub-ws-sim"
        self._callbacks = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventsub-ws-end")
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            ready.result(timeout=_CONTROL_TIMEOUT_S)
        except BaseException:
            self._loop = self._thread = None
            thread.join(timeout=5)
            raise
        return self

    def _run_loop(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(self._open())
        except OSError as exc:  # the bind failed: hand it to start() in the caller's thread
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _open(self) -> Server:
        server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._check_path,
            ping_interval=None,
            close_timeout=_CLOSE_TIMEOUT_S,
            compression=None,
        )
        self._port = server.sockets[0].getsockname()[1]
        return server

    def stop(self) -> None:
        """Close every socket (1001) and the listener; sessions end as ``websocket_disconnected``."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(TimeoutError):  # stop goes on: the thread is a daemon
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=_CONTROL_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._loop = self._thread = None
        self._server = None
        if self._callbacks is not None:
            self._callbacks.shutdown(wait=False)
            self._callbacks = None

    async def _shutdown(self) -> None:
        with self._lock:
            for conn in self._conns:
                if conn.server_close is None:
                    conn.server_close = 1001
                    self._record_locked(conn, "closed_by_server", "server stopped", 1001)
            for session in self._sessions.values():
                if session.ended is None:
                    self._end_locked(session, DISCONNECTED)
        server = self._server
        if server is not None:
            server.close()
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    def __enter__(self) -> EventSubWebSocketServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def url(self) -> str:
        """``ws://host:port/ws`` (valid after :meth:`start`)."""
        if self._port == 0:
            raise RuntimeError("EventSub WebSocket server not started")
        return f"ws://{self._host}:{self._port}{WS_PATH}"

    # ---------------------------------------------------------------- what the HTTP simulator asks

    def has_session(self, session_id: str) -> bool:
        """Whether ``session_id`` names a live session (one a subscription may be created on)."""
        with self._lock:
            session = self._sessions.get(session_id)
            return session is not None and session.ended is None

    def sessions(self) -> list[str]:
        """The live sessions' ids, oldest first."""
        with self._lock:
            return [s.id for s in self._sessions.values() if s.ended is None]

    def attach(self, session_id: str, subscription: Mapping[str, object], *, owner: str | None = None) -> None:
        """Bind a subscription (its Helix object, with an ``id``) to a live session.

        ``owner`` (e.g. ``"<client id>:<user id>"``) is what the connection limit is counted by.
        Raises :class:`UnknownSessionError`, :class:`SubscriptionLimitError` or :class:`ConnectionLimitError`.
        """
        sub_id = subscription.get("id")
        if not isinstance(sub_id, str) or not sub_id:
            raise ValueError("a subscription needs a string id")
        with self._lock:
            session = self._live_locked(session_id)
            if sub_id not in session.subscriptions:
                if len(session.subscriptions) >= self.max_subscriptions_per_connection:
                    raise SubscriptionLimitError(f"session already holds {self.max_subscriptions_per_connection}")
                if (
                    owner is not None
                    and not session.subscriptions
                    and self._connection_count_locked(owner) >= (self.max_connections)
                ):
                    raise ConnectionLimitError(f"owner already has {self.max_connections} connections")
            if owner is not None and session.owner is None:
                session.owner = owner
            session.subscriptions[sub_id] = dict(subscription)
            session.used = True

    def detach(self, subscription_id: str) -> bool:
        """Remove a subscription from its session (a Helix delete); False when no session held it."""
        with self._lock:
            for session in self._sessions.values():
                if session.ended is None and session.subscriptions.pop(subscription_id, None) is not None:
                    return True
        return False

    def subscriptions(self, session_id: str) -> list[JsonObject]:
        """Copies of a session's subscriptions; an ended session's carry the status it ended with."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise UnknownSessionError(f"no session {session_id!r}")
            return [dict(sub) for sub in session.subscriptions.values()]

    def connection_count(self, owner: str) -> int:
        """How many live sessions with subscriptions ``owner`` has (the 3-connection limit counts these)."""
        with self._lock:
            return self._connection_count_locked(owner)

    def _connection_count_locked(self, owner: str) -> int:
        return sum(1 for s in self._sessions.values() if s.ended is None and s.owner == owner and s.subscriptions)

    def session_status(self, session_id: str) -> str | None:
        """None while the session lives; then the status its subscriptions ended in."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise UnknownSessionError(f"no session {session_id!r}")
            return session.ended

    # ---------------------------------------------------------------- messages and faults

    def notify(self, target: str, event: Mapping[str, object], *, duplicate: bool = False) -> list[JsonObject]:
        """Send a ``notification`` for the subscription with id ``target``, else for every one of that type.

        ``duplicate`` sends each message twice under one ``message_id`` (Twitch's at-least-once resend).
        Returns the messages sent. Raises :class:`UnknownSubscriptionError` when nothing matches.
        """
        with self._lock:
            targets = self._targets_locked(target)
            batch = [
                (conn, _message("notification", {"subscription": dict(sub), "event": dict(event)}, sub))
                for conn, sub in targets
            ]
        for conn, message in batch:
            for _ in range(2 if duplicate else 1):
                self._call(self._send(conn, message))
        return [message for _, message in batch]

    def revoke(self, subscription_id: str, status: str = "authorization_revoked") -> JsonObject:
        """Send a ``revocation`` for a subscription (which leaves its session); returns the message."""
        with self._lock:
            for session in self._sessions.values():
                sub = session.subscriptions.get(subscription_id) if session.ended is None else None
                if sub is not None and session.conn is not None:
                    del session.subscriptions[subscription_id]
                    revoked = {**sub, "status": status}
                    conn, message = session.conn, _message("revocation", {"subscription": revoked}, revoked)
                    break
            else:
                raise UnknownSubscriptionError(f"no live subscription {subscription_id!r}")
        self._call(self._send(conn, message))
        return message

    def reconnect(self, session_id: str) -> str:
        """Send ``session_reconnect``; returns the reconnect URL. The old socket gets 4004 after the grace time."""
        token = secrets.token_urlsafe(16)
        with self._lock:
            session = self._live_locked(session_id)
            conn = session.conn
            if conn is None:
                raise UnknownSessionError(f"session {session_id!r} has no socket")
            if session.reconnect_token is not None:
                self._tokens.pop(session.reconnect_token, None)
            session.reconnect_token = token
            self._tokens[token] = session
            reconnect_url = f"{self.url}?reconnect_id={token}"
            message = _message(
                "session_reconnect",
                {
                    "session": {
                        "id": session.id,
                        "status": "reconnecting",
                        "keepalive_timeout_seconds": None,
                        "reconnect_url": reconnect_url,
                        "connected_at": conn.connected_at,
                        "recovery_url": None,
                    }
                },
            )
        self._call(self._send(conn, message))
        self._call(self._spawn(self._grace_timer(conn)))
        return reconnect_url

    def close(self, session_id: str, code: int, reason: str | None = None) -> None:
        """Close a session's socket with a documented code (4000-4007); its subscriptions end."""
        if code not in CLOSE_REASONS:
            raise ValueError(f"not a documented EventSub close code: {code}")
        with self._lock:
            conn = self._live_locked(session_id).conn
        if conn is None:
            raise UnknownSessionError(f"session {session_id!r} has no socket")
        self._call(self._server_close(conn, code, reason))

    def drop(self, session_id: str) -> None:
        """Cut a session's TCP connection without a close frame (a network drop)."""
        with self._lock:
            conn = self._live_locked(session_id).conn
        if conn is None:
            raise UnknownSessionError(f"session {session_id!r} has no socket")
        self._call(self._abort(conn))

    # ---------------------------------------------------------------- records

    def records(self, session_id: str | None = None) -> list[WsRecord]:
        """What was sent, received and closed, in order; one session's when ``session_id`` is given."""
        with self._lock:
            return [r for r in self._records if session_id is None or r.session_id == session_id]

    def sent(self, session_id: str, message_type: str | None = None) -> list[JsonObject]:
        """The messages sent on a session's sockets, parsed, optionally of one ``message_type``."""
        return [
            message
            for r in self.records(session_id)
            if (message := r.message) is not None and (message_type is None or r.message_type == message_type)
        ]

    # ---------------------------------------------------------------- internals: locked state

    def _live_locked(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None or session.ended is not None:
            raise UnknownSessionError(f"no live session {session_id!r}")
        return session

    def _targets_locked(self, target: str) -> list[tuple[_Conn, JsonObject]]:
        found: list[tuple[_Conn, JsonObject]] = []
        by_type: list[tuple[_Conn, JsonObject]] = []
        for session in self._sessions.values():
            if session.ended is not None or session.conn is None:
                continue
            for sub_id, sub in session.subscriptions.items():
                if sub_id == target:
                    found.append((session.conn, sub))
                elif sub.get("type") == target:
                    by_type.append((session.conn, sub))
        if not found and not by_type:
            raise UnknownSubscriptionError(f"no live subscription with id or type {target!r}")
        return found or by_type

    def _end_locked(self, session: _Session, status: str) -> None:
        """Mark a session over: its subscriptions take ``status``, its reconnect URL stops working."""
        session.ended = status
        if session.reconnect_token is not None:
            self._tokens.pop(session.reconnect_token, None)
            session.reconnect_token = None
        for sub in session.subscriptions.values():
            sub["status"] = status
        callback, executor = self.on_session_end, self._callbacks
        if callback is not None and executor is not None:
            executor.submit(callback, session.id, status)

    def _record_locked(self, conn: _Conn | None, kind: RecordKind, text: str, code: int | None = None) -> WsRecord:
        session_id, index = (conn.session.id, conn.index) if conn is not None else ("", 0)
        record = WsRecord(session_id, index, kind, text, code, time.time())
        self._records.append(record)
        return record

    # ---------------------------------------------------------------- internals: the loop

    def _call(self, coro: Coroutine[object, object, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("EventSub WebSocket server not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("control methods are called from other threads than the server's")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=_CONTROL_TIMEOUT_S)

    async def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != WS_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    def _keepalive_from(self, query: Mapping[str, list[str]]) -> float:
        values = query.get("keepalive_timeout_seconds")
        try:
            asked = float(values[0]) if values else math.nan
        except ValueError:
            asked = math.nan
        if math.isnan(asked):
            return self.default_keepalive_s
        return min(max(asked, self.min_keepalive_s), self.max_keepalive_s)

    async def _handle(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request is not None else "").query)
        tokens = query.get("reconnect_id")
        conn = self._claim(ws, tokens[0]) if tokens else self._open_session(ws, self._keepalive_from(query))
        if conn is None:
            with self._lock:
                self._record_locked(None, "closed_by_server", CLOSE_REASONS[CLOSE_INVALID_RECONNECT], 4007)
            await ws.close(CLOSE_INVALID_RECONNECT, CLOSE_REASONS[CLOSE_INVALID_RECONNECT])
            return
        await self._welcome(conn)
        keepalive = asyncio.get_running_loop().create_task(self._keepalive(conn))
        try:
            async for data in ws:
                text = data if isinstance(data, str) else data.hex()
                with self._lock:
                    self._record_locked(conn, "received", text)
                await self._server_close(conn, CLOSE_INBOUND_TRAFFIC)
                break
        except ConnectionClosed:
            pass
        finally:
            keepalive.cancel()
            self._connection_ended(conn)

    def _open_session(self, ws: ServerConnection, keepalive_s: float) -> _Conn:
        with self._lock:
            session_id = secrets.token_urlsafe(21)
            session = _Session(id=session_id, keepalive_s=keepalive_s, connected_at=timestamp())
            self._sessions[session_id] = session
            return self._new_conn_locked(ws, session)

    def _claim(self, ws: ServerConnection, token: str) -> _Conn | None:
        """The reconnecting socket of the session ``token`` belongs to; None for an invalid reconnect URL."""
        with self._lock:
            session = self._tokens.pop(token, None)
            if session is None or session.ended is not None:
                return None
            session.reconnect_token = None
            return self._new_conn_locked(ws, session)

    def _new_conn_locked(self, ws: ServerConnection, session: _Session) -> _Conn:
        session.sockets += 1
        conn = _Conn(ws, session, session.sockets, timestamp(), time.monotonic())
        self._conns.add(conn)
        return conn

    async def _welcome(self, conn: _Conn) -> None:
        """Send the welcome; on a reconnect, make the new socket current and close the old one."""
        session = conn.session
        message = _message(
            "session_welcome",
            {
                "session": {
                    "id": session.id,
                    "status": "connected",
                    "connected_at": conn.connected_at,
                    "keepalive_timeout_seconds": _number(session.keepalive_s),
                    "reconnect_url": None,
                    "recovery_url": None,
                }
            },
        )
        if conn.index == 1:
            with self._lock:
                session.conn = conn
            await self._send(conn, message)
            return
        if session.ended is not None or not await self._send(conn, message):
            await self._server_close(conn, CLOSE_INVALID_RECONNECT)
            return
        with self._lock:
            old = session.conn
            if session.ended is None:
                session.conn = conn
        if session.ended is not None:  # the old socket went first: the reconnect URL died with it
            await self._server_close(conn, CLOSE_INVALID_RECONNECT)
        elif old is not None:
            await self._spawn(self._server_close(old, CLOSE_RECONNECTED, "reconnected"))

    async def _send(self, conn: _Conn, message: JsonObject) -> bool:
        """Send one message; it is recorded before the write, so a client that read it finds the record."""
        text = json.dumps(message)
        with self._lock:
            record = self._record_locked(conn, "sent", text)
        try:
            await conn.ws.send(text)
        except ConnectionClosed:
            with self._lock:  # never went out: drop this very record (an equal resend may stand beside it)
                self._records = [r for r in self._records if r is not record]
            return False
        conn.silent_since = time.monotonic()
        return True

    async def _keepalive(self, conn: _Conn) -> None:
        """Keepalives while the socket is its session's current one; 4003 for a first socket left unused."""
        session = conn.session
        interval = session.keepalive_s * KEEPALIVE_SILENCE_FRACTION
        unused_at: float | None = time.monotonic() + session.keepalive_s if conn.index == 1 else None
        while session.ended is None:
            now = time.monotonic()
            if unused_at is not None and now >= unused_at:
                unused_at = None
                if self.close_unused and not session.used and session.conn is conn:
                    await self._server_close(conn, CLOSE_CONNECTION_UNUSED)
                    return
            if now >= conn.silent_since + interval:
                if self.keepalives_enabled and session.conn is conn:
                    await self._send(conn, _message("session_keepalive", {}))
                conn.silent_since = max(conn.silent_since, now)
                continue
            wake = conn.silent_since + interval if unused_at is None else min(unused_at, conn.silent_since + interval)
            await asyncio.sleep(max(wake - now, 0.005))

    async def _grace_timer(self, old: _Conn) -> None:
        await asyncio.sleep(self.reconnect_grace_s)
        if old.session.conn is old and old.session.ended is None:
            await self._server_close(old, CLOSE_RECONNECT_GRACE_EXPIRED)

    async def _server_close(self, conn: _Conn, code: int, reason: str | None = None) -> None:
        """Close a socket; when it is its session's current one, the session ends with the code's status."""
        text = reason if reason is not None else CLOSE_REASONS.get(code, "")
        with self._lock:
            if conn.server_close is not None:
                return
            conn.server_close = code
            session = conn.session
            if session.conn is conn and session.ended is None:
                self._end_locked(session, CLOSE_STATUSES.get(code, DISCONNECTED))
            self._record_locked(conn, "closed_by_server", text, code)
        await conn.ws.close(code, text)

    async def _abort(self, conn: _Conn) -> None:
        with self._lock:
            conn.server_close = 1006
            session = conn.session
            if session.conn is conn and session.ended is None:
                self._end_locked(session, DISCONNECTED)
            self._record_locked(conn, "closed_by_server", "dropped", 1006)
        conn.ws.transport.abort()

    def _connection_ended(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)
            session = conn.session
            if conn.server_close is None:
                code = conn.ws.close_code
                self._record_locked(conn, "closed_by_client", conn.ws.close_reason or "", code)
            if session.conn is conn and session.ended is None:
                self._end_locked(session, DISCONNECTED)
