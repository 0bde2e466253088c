"""What a Redis server is asked to do while a benchmark watches, on a server of the benchmark's own.

- :func:`private_redis` starts a redis-server on a free loopback port in a temporary directory, persisted as
  docker-compose runs it, so no other client of a shared Redis can disturb the figures (or be counted).
- :func:`monitor` reads ``MONITOR`` for a while; :func:`idle_load` turns that into round trips per second
  by command. ``INFO commandstats`` and ``total_commands_processed`` count the commands a Lua script runs
  inside as commands too, so only MONITOR (``[db lua]`` marks a script's own calls) tells a round trip from
  the work it carries; those are summed under :data:`INSIDE`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator

from redis import Redis, RedisError

from bench.rig import BOOT_TIMEOUT_S, STOP_TIMEOUT_S, free_port

#: Where :func:`idle_load` counts the commands scripts run inside (not round trips).
INSIDE = "(in scripts)"


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of this run's own on a free loopback port, yielding its URL; stopped and removed at the end.

    Persisted as docker-compose runs it (``appendonly yes``, ``appendfsync everysec``), so a measured write costs
    what it costs in a deployment.

    Raises:
      RuntimeError: when ``redis-server`` is not installed or does not answer within ``BOOT_TIMEOUT_S``.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        command = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ]  # fmt: skip
        try:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            raise RuntimeError("redis-server is not installed (or pass --redis-url)") from exc
        url = f"redis://127.0.0.1:{port}/0"
        client = Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            deadline = time.monotonic() + BOOT_TIMEOUT_S
            while True:
                with contextlib.suppress(RedisError):
                    if client.ping():
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start")
                time.sleep(0.05)
            yield url
        finally:
            client.close()
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT_S)
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)


def monitor(redis_url: str, seconds: float) -> list[tuple[str, bool]]:
    """Every command Redis runs for ``seconds`` (``MONITOR``), as ``(name, run inside a script)``.

    Read from a raw socket, so no client library times out in the middle of a reply.
    """
    options = Redis.from_url(redis_url).connection_pool.connection_kwargs
    seen: list[tuple[str, bool]] = []
    with socket.create_connection((options.get("host", "127.0.0.1"), options.get("port", 6379)), timeout=5) as sock:
        sock.sendall(b"MONITOR\r\n")
        deadline = time.monotonic() + seconds
        buffer = b""
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                raise RuntimeError("Redis closed the MONITOR connection")
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                head, _, rest = line.partition(b"] ")
                if line.startswith(b"+") and rest:
                    seen.append((rest.split(b" ", 1)[0].strip(b'"').decode().lower(), head.endswith(b" lua")))
    return seen


def idle_load(redis_url: str, settle_s: float, idle_s: float) -> dict[str, float]:
    """Round trips per second by command over ``idle_s`` seconds, after ``settle_s`` seconds of quiet.

    The commands scripts run inside are summed under :data:`INSIDE`.
    """
    time.sleep(settle_s)
    counts = Counter(INSIDE if inside else name for name, inside in monitor(redis_url, idle_s))
    return {name: count / idle_s for name, count in counts.most_common()}
