"""Servers the chaos harness and the Redis tests start for themselves: a private ``redis-server`` on a free port.

Kept apart from ``devtools.chaos.harness`` so ``devtools.chaos.sentinel`` can build a Sentinel group
from the same nodes without importing the harness that uses it.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

__all__ = ["PrivateRedis", "free_port", "wait_until"]


#: Where ``free_port`` picks: below Linux's ephemeral range (32768-60999), from which the kernel takes the
#: local port of every outgoing connection, so none of those can take a port between its check and its use.
FREE_PORTS = range(20000, 32000)
#: Seconds ``PrivateRedis.stop`` gives a server after SIGTERM before it kills it.
STOP_GRACE_S = 3.0


def _share_of(ports: range, worker: str, workers: str) -> range:
    """The part of ``ports`` one pytest-xdist worker (``gw<n>`` of ``workers``) picks from, so that two test
    processes never pick the same port; the whole range outside xdist."""
    if not (worker.startswith("gw") and worker[2:].isascii() and worker[2:].isdigit()):
        return ports
    if not (workers.isascii() and workers.isdigit() and int(workers) > 0):
        return ports
    count, index = int(workers), int(worker[2:]) % int(workers)
    size = len(ports) // count
    return range(ports.start + index * size, ports.start + (index + 1) * size)


_PORTS = _share_of(
    FREE_PORTS, os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
)
#: Where the next pick starts: one process walks its share in turn (from a random start, so two runs
#: differ), so it never hands out a port twice before it has handed out every other one.
_next_pick = itertools.count(random.randrange(len(_PORTS)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, from this process' share of ``FREE_PORTS``.

    A port is free between this check and the caller's bind only if no one else picks it meanwhile: within
    a process the picks go round the share, and each pytest-xdist worker has a share of its own.
    """
    for _ in range(len(_PORTS)):
        port = _PORTS[next(_next_pick) % len(_PORTS)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05, what: str = "") -> float:
    """Poll ``predicate`` until it holds; returns the seconds it took. Raises ``TimeoutError`` past ``timeout_s``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout_s}s")
        time.sleep(interval_s)
    return time.monotonic() - start


# --------------------------------------------------------------------------------------------- Redis


class PrivateRedis:
    """A redis-server of the caller's own, on a free port, persisting to an append-only file in ``directory``."""

    def __init__(self, directory: Path, port: int | None = None, *, extra_args: Sequence[str] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        #: more ``redis-server`` arguments (a replica's ``--replicaof``); :meth:`start` may be given others.
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **options: Any) -> Redis:
        """A client with short timeouts (the harness must never hang on a dead or paused server); ``options``
        win (a longer ``socket_timeout`` for a command that blocks, say)."""
        return Redis.from_url(self.url, **({"socket_timeout": 2, "socket_connect_timeout": 2} | options))

    def start(self, *, extra_args: Sequence[str] | None = None) -> None:
        """Start the server (``extra_args`` replaces the constructor's) and wait until it answers PING."""
        if extra_args is not None:
            self.extra_args = tuple(extra_args)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
        )
        client = self.client()

        def up() -> bool:
            try:
                return bool(client.ping())
            except RedisError:
                return False

        try:
            wait_until(up, timeout_s=10, what="redis-server up")
        finally:
            client.close()

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL): only what reached the append-only file survives."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def pause(self, milliseconds: int, mode: str = "WRITE") -> None:
        """``CLIENT PAUSE <ms> <mode>``: clients' (write) commands wait until the pause ends."""
        client = self.client()
        try:
            client.execute_command("CLIENT", "PAUSE", str(milliseconds), mode)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                # A loaded machine can keep a replica (fsync always, a sync under way) busy past SIGTERM;
                # a test's server has nothing left to save, so it is killed rather than failing the test.
                self.process.kill()
                self.process.wait(timeout=10)
