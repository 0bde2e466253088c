"""The HTTP plumbing the simulators share: a threaded loopback server that tracks its connections, and a
handler base that dispatches every method to one place.

:class:`TrackingServer` and :class:`TrackingHandler` serve both ``simulator.wetbot`` (which writes its answers
itself: faults cut a request mid-way) and the Twitch simulator (:class:`SimServer`: it hands each request to an
app, so the OAuth and Helix modules deal in :class:`Request` and :class:`Reply` only). A stopped server cuts
every open connection, so it answers nothing on kept-alive sockets either.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol, cast
from urllib.parse import parse_qs, urlsplit

#: Largest request body read (answered with 413 beyond it).
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class Request:
    """One request as the app sees it: header names lower-cased, the query parsed (repeated keys kept)."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def arg(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None

    def form(self) -> dict[str, str]:
        """The body as an ``application/x-www-form-urlencoded`` form merged over the query (first values)."""
        merged = {key: values[0] for key, values in self.query.items() if values}
        with contextlib.suppress(UnicodeDecodeError):
            for key, values in parse_qs(self.body.decode(), keep_blank_values=True).items():
                merged[key] = values[0]
        return merged

    def json_body(self) -> object:
        """The body parsed as JSON; raises ValueError when it is not JSON."""
        return cast(object, json.loads(self.body))


@dataclass
class Reply:
    """What to answer. ``payload`` None sends an empty body; ``html`` sends a page instead of JSON;
    ``drop`` closes the connection without an answer."""

    status: int
    payload: object = None
    headers: dict[str, str] = field(default_factory=dict)
    html: str | None = None
    drop: bool = False


class App(Protocol):
    def handle(self, request: Request, stopping: threading.Event) -> Reply: ...


class TrackingServer(ThreadingHTTPServer):
    """A threaded HTTP server on loopback that knows its open connections (to cut them when it stops)."""

    daemon_threads = True
    allow_reuse_address = True
    #: The listen backlog. socketserver's 5 overflows when a few dozen worker threads open their connections
    #: at once (a backlog drained by several processes): the kernel drops the extra SYNs and each of those
    #: clients retransmits after 1 s, which showed up as a late request in benchmarks. Real servers use hundreds.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall on hosts with slow DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open connection, so a stopped server answers nothing on kept-alive sockets either."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away; nothing to report
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class TrackingHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1, connections tracked by their :class:`TrackingServer`, every method to ``_dispatch``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall

    def setup(self) -> None:
        super().setup()
        cast(TrackingServer, self.server).track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            cast(TrackingServer, self.server).untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        """Silenced: each simulator records its requests itself (never with a token or key)."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        raise NotImplementedError


class SimServer(TrackingServer):
    """The Twitch simulator's server: each request goes to ``app``."""

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def stop_serving(self) -> None:
        """Wake held requests, stop accepting and cut every open connection."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.close_connections()


class _Handler(TrackingHandler):
    server_version = "TwitchSim/1.0"

    def _server(self) -> SimServer:
        return cast(SimServer, self.server)

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_BODY_BYTES:
            self.close_connection = True
            self._send(Reply(400 if size < 0 else 413, {"status": 400, "message": "Bad request body"}))
            return
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(size) if size else b"",
        )
        self._send(self._server().app.handle(request, self._server().stopping))

    def _send(self, reply: Reply) -> None:
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.html is not None:
            data, content_type = reply.html.encode(), "text/html; charset=utf-8"
        elif reply.payload is None:
            data, content_type = b"", ""
        else:
            data, content_type = json.dumps(reply.payload).encode(), "application/json"
        try:
            self.send_response(reply.status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
