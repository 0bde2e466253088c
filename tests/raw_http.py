"""Raw HTTP/1.1 over a socket, for tests that must control exactly when (and whether) body bytes are sent."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def start_request(base_url: str, path: str, headers: dict[str, str], *, method: str = "POST") -> socket.socket:
    """Connect to ``base_url`` and send the request line and ``headers``, no body byte yet."""
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.hostname}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return sock


def read_response(sock: socket.socket, *, timeout_s: float) -> RawResponse:
    """The response on ``sock`` (status line, headers, ``Content-Length`` bytes of body) within ``timeout_s``.

    Raises:
      TimeoutError: nothing complete arrived in time.
    """
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock, deadline)
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += _recv(sock, deadline)
    return RawResponse(int(status_line.split()[1]), headers, rest[:length])


def closed_by_server(sock: socket.socket, *, timeout_s: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``timeout_s``; bytes that arrive are dropped."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if not _recv(sock, deadline, eof_ok=True):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _recv(sock: socket.socket, deadline: float, *, eof_ok: bool = False) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no answer in time")
    sock.settimeout(remaining)
    chunk = sock.recv(65536)  # TimeoutError when nothing arrives in time
    if not chunk and not eof_ok:
        raise ConnectionResetError("the server closed the connection before a complete answer")
    return chunk
