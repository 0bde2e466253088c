"""A local HTTP endpoint that accepts Sentry envelopes, for tests of processes started with ``SENTRY_DSN``.

Only Sentry's network is replaced: the SDK in the service runs for real and
posts its envelopes here (``http://public@127.0.0.1:<port>/1``).
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SentrySink:
    """Collects every envelope posted to it; ``events`` are the ``event`` items among them."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                with sink._lock:
                    sink.bodies.append(raw.decode("utf-8", "replace"))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SentrySink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self._server.server_address[1]}/1"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Payloads of the envelope items whose type is ``event``."""
        with self._lock:
            bodies = list(self.bodies)
        out: list[dict[str, Any]] = []
        for body in bodies:
            lines = body.split("\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                try:
                    if json.loads(header).get("type") == "event":
                        out.append(json.loads(payload))
                except ValueError:
                    continue
        return out

    def raw(self) -> str:
        with self._lock:
            return "\n".join(self.bodies)
