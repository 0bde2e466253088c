"""What every benchmark stands on: the service's environment, its processes, Redis key prefixes, the simulator.

- **Environment**: :func:`service_env` builds a process environment from the caller's without any variable
  ``config.settings`` reads, so settings exported in the caller's shell cannot change a measured run.
- **Processes**: :func:`spawn` starts a command from the repository root in its own process group,
  :func:`stop` ends the whole group (SIGTERM, then SIGKILL); :func:`uvicorn_server` and
  :func:`dramatiq_workers` start the service's two kinds of process (the Procfile's ``web`` and ``worker``).
- **Redis**: every benchmark keeps its keys under a random ``bench<hex>-<name>`` prefix (:func:`key_base`)
  in DB 15 and deletes exactly those keys at the end (:func:`delete_prefixes`: SCAN + DEL, never a flush:
  test runs and other benchmarks may be using the same database).
- **Simulator**: :func:`wetbot_simulator` serves one API key for :data:`GUILD`, or a key per guild.
- **Figures**: CPU seconds of processes (or process groups) and of Redis (:class:`CpuMeter`), the machine
  line, percentiles and the ``n/a``-aware formatting of the report tables.

Every benchmark runs from the repository root as ``python -m bench.<name>``, so ``bench`` imports
without being installed; the processes started here run from that root too (``dramatiq bench.<module>``).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from redis import Redis

from devtools.chaos.servers import free_port as free_port  # the bench scripts take it from here
from simulator.wetbot import RequestRecord, WetbotSimulator
from worker import redis_values as values

OnRequest = Callable[[RequestRecord], None]
#: The repository root: the working directory of every process a benchmark starts.
ROOT = Path(__file__).resolve().parent.parent
#: DB 15, the test suite's database too: shared, so keys are always deleted by prefix.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
#: The guild every benchmark grants in.
GUILD = "111111111111111111"
#: Counter of ``deliver`` runs under a run's key prefix (``bench/backlog_counted_actors.py`` adds to it).
RUNS_KEY = "bench:runs"
#: Seconds a started process gets to become ready (answer, or send its first request).
BOOT_TIMEOUT_S = 30.0
#: Seconds processes get to stop after SIGTERM before their process groups are SIGKILLed.
STOP_TIMEOUT_S = 10.0
#: Every variable ``config.settings`` reads; cleared in a started process's environment so the caller's
#: cannot leak in.
SETTINGS_ENV = (
    "REDIS_URL", "REDIS_KEY_PREFIX", "WETBOT_API_URL", "WETBOT_API_KEY", "WETBOT_API_KEYS", "WETBOT_RATE_LIMIT",
    "WETBOT_TIMEOUT_S", "WETBOT_MAX_ATTEMPTS", "WETBOT_RETRY_BACKOFF_S", "WETBOT_AUTH_PAUSE_S", "WETBOT_COALESCE",
    "WETBOT_MAX_ITEMS_PER_REQUEST", "TWITCH_WEBHOOK_SECRET",
    "PATREON_WEBHOOK_SECRET", "GRANTS_API_TOKEN", "TWITCH_CLIENT_ID", "TWITCH_CLIENT_SECRET", "REWARDS_FILE",
    "AMBIGUOUS_POLICY", "SENTRY_DSN", "SENTRY_ENVIRONMENT", "LOG_LEVEL", "TWITCH_API_URL", "TWITCH_AUTH_URL",
    "LEDGER_RETENTION_S", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD",
    "REDIS_WAIT_REPLICAS", "REDIS_WAIT_TIMEOUT_S", "ADMIN_TOKEN", "CONSOLE_SESSION_S", "METRICS_TOKEN",
    "API_DOCS", "EVENT_RETENTION_S", "LOG_FORMAT", "DEMO_MODE", "TWITCH_EVENTSUB_WS_URL", "TWITCH_TRANSPORT",
    "TOKEN_ENCRYPTION_KEY",
)  # fmt: skip

# -- environment ------------------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The bench's environment without any service setting."""
    return {name: value for name, value in os.environ.items() if name not in SETTINGS_ENV}


#: A rewards file without rules, for benchmarks that queue their grants themselves.
NO_RULES = Path(__file__).with_name("no_rules.toml")


def service_env(redis_url: str, prefix: str, settings: Mapping[str, str]) -> dict[str, str]:
    """:func:`clean_env` plus the service's Redis, key prefix, quiet logging and ``settings`` (by variable name)."""
    base = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LOG_LEVEL": "WARNING", "REWARDS_FILE": str(NO_RULES)}
    return clean_env() | base | dict(settings)


# -- processes ----------------------------------------------------------------------------------------------


def spawn(command: Sequence[str], env: Mapping[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``command`` from :data:`ROOT`, output to ``log``, in a new session: :func:`stop` reaches its children."""
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, wait up to :data:`STOP_TIMEOUT_S`, then SIGKILL whatever is left of it."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the master may be gone while a child lingers
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


@contextlib.contextmanager
def uvicorn_server(target: str, port: int, env: Mapping[str, str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """One uvicorn worker serving ``target`` on loopback, without access log; yields once ``/healthz`` answers 200.

    Raises:
      RuntimeError: when the server exits or does not answer within :data:`BOOT_TIMEOUT_S`.
    """
    command = [
        sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = spawn(command, env, log)
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not _healthy(port):
            if process.poll() is not None:
                raise RuntimeError(f"{target} exited with status {process.returncode} (log: {log.name})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not answer /healthz within {BOOT_TIMEOUT_S:g} s")
            time.sleep(0.1)
        yield process
    finally:
        stop([process])


def _healthy(port: int) -> bool:
    with contextlib.suppress(OSError):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    return False


def dramatiq_workers(
    module: str, queue: str, *, processes: int, threads: int, env: Mapping[str, str], log: IO[bytes]
) -> list[subprocess.Popen[bytes]]:
    """``processes`` separate ``dramatiq <module>`` masters of one worker process each, each its own group."""
    command = [
        sys.executable, "-m", "dramatiq", module,
        "--processes", "1", "--threads", str(threads), "--queues", queue,
    ]  # fmt: skip
    return [spawn(command, env, log) for _ in range(processes)]


def log_path(name: str) -> Path:
    """Where the output of a run's processes goes: ``<name>.log`` in the system temp directory."""
    return Path(tempfile.gettempdir()) / f"{name}.log"


# -- Redis --------------------------------------------------------------------------------------------------


def key_base() -> str:
    """A fresh ``bench<8 hex>``; a run's key prefixes are ``<base>-<name>``."""
    return f"bench{secrets.token_hex(4)}"


def delete_prefixes(redis_url: str, prefixes: Sequence[str]) -> int:
    """Delete exactly the keys under each ``<prefix>:``; returns how many."""
    client = Redis.from_url(redis_url)
    deleted = 0
    try:
        for prefix in prefixes:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += values.integer(client.delete(*batch))
                    batch = []
            if batch:
                deleted += values.integer(client.delete(*batch))
    finally:
        client.close()
    return deleted


# -- simulator ----------------------------------------------------------------------------------------------


def wetbot_simulator(
    api_key: str | Mapping[str, str], *, limit: int, window_s: float, on_request: OnRequest | None = None
) -> WetbotSimulator:
    """A WetBot simulator, not started yet, that accepts ``api_key`` for :data:`GUILD` (or, given a mapping
    API key -> guild id, each key for its own guild). It is strict: at most ``limit`` requests per key in any
    ``window_s`` seconds, 429-answered ones counted too."""
    keys = {api_key: GUILD} if isinstance(api_key, str) else dict(api_key)
    return WetbotSimulator(keys=keys, limit=limit, window_s=window_s, count_rejected=True, on_request=on_request)


# -- figures ------------------------------------------------------------------------------------------------


def _stat(path: Path) -> list[str] | None:
    """The fields of a ``/proc/<pid>/stat`` after the command name (state first), None once it is gone."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux ``/proc``; 0 elsewhere)."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_s(redis_url: str) -> float:
    """User + system CPU seconds of the Redis server so far (the whole server: other clients count too)."""
    client = Redis.from_url(redis_url)
    try:
        info = cast(dict[str, Any], client.info("cpu"))
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds so far of every live process in process group ``pgid`` (Linux ``/proc``): a
    ``dramatiq`` master's worker process does the work, and the master's ``cutime`` counts it only once it exits."""
    groups = (_stat(path) for path in Path("/proc").glob("[0-9]*/stat"))
    ticks = sum(int(f[11]) + int(f[12]) for f in groups if f is not None and int(f[2]) == pgid)
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU seconds spent by the server process, Redis and this (client) process during one run.

    ``more_pids`` are more server processes (several ``dramatiq`` masters); with ``groups`` each counts its
    whole process group (:func:`group_cpu_s`)."""

    server_pid: int
    redis_url: str
    more_pids: tuple[int, ...] = ()
    groups: bool = False
    server_s: float = 0.0
    redis_s: float = 0.0
    client_s: float = 0.0

    def _server_now(self) -> float:
        of = group_cpu_s if self.groups else process_cpu_s
        return sum(of(pid) for pid in (self.server_pid, *self.more_pids))

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        server, redis, client = self._server_now(), redis_cpu_s(self.redis_url), time.process_time()
        yield
        self.server_s = self._server_now() - server
        self.redis_s = redis_cpu_s(self.redis_url) - redis
        self.client_s = time.process_time() - client


def machine() -> str:
    """One line: vCPUs, CPU model, OS release and Python version."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} vCPU {model}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank, 100 = the maximum); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def format_pct(value: float | None) -> str:
    """A fraction as ``12.3 %``; ``n/a`` for None."""
    return "n/a" if value is None else f"{value * 100:.1f} %"


def format_secs(value: float | None) -> str:
    """Seconds as ``1.23 s``; ``n/a`` for None."""
    return "n/a" if value is None else f"{value:.2f} s"


def format_ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``2.33x``; ``inf`` when only ``b`` is 0, ``n/a`` when either is unknown or both are 0."""
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "inf" if a > 0 else "n/a"
    return f"{a / b:.2f}x"
