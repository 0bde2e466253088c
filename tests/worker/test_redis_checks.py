"""The persistence/eviction check against private redis-servers: worker start-up, ``GET /readyz``, refused CONFIG."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from simulator.wetbot import WetbotSimulator
from tests.conftest import CapturingTransport, SettingsFactory, wait_for
from tests.processes.test_procfile import Processes, service_env
from wetbot_rewards.app import create_app
from worker.redis_checks import CachedRedisCheck, check_redis_config, warn_at_start

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

GOOD = ["--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", "noeviction"]
NO_PERSISTENCE = ["--appendonly", "no", "--save", ""]
EVICTING = ["--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"]
NO_CONFIG = ["--appendonly", "yes", "--rename-command", "CONFIG", ""]


class ConfiguredRedis:
    """A redis-server of the test's own on a free port, data in a temp dir, started with ``args``."""

    def __init__(self, directory: Path, args: list[str]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory), *args],
            stdout=subprocess.DEVNULL,
        )
        self.client = Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(self.client.ping())
            except RedisConnectionError:
                return False

        wait_for(up, timeout_s=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[[list[str]], ConfiguredRedis]]:
    started: list[ConfiguredRedis] = []

    def factory(args: list[str]) -> ConfiguredRedis:
        directory = tmp_path / f"redis{len(started)}"
        directory.mkdir()
        server = ConfiguredRedis(directory, args)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


class Reports:
    """Stands in for ``observability.capture``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, message: str, **options: Any) -> None:
        self.calls.append((message, options))


# --- the check itself ----------------------------------------------------------------------


def test_a_persistent_non_evicting_redis_has_no_warnings(start_redis: Callable[[list[str]], ConfiguredRedis]) -> None:
    report = check_redis_config(start_redis(GOOD).client)
    assert report.checked is True
    assert report.warnings == ()
    assert report.settings == {
        "appendonly": "yes",
        "save": report.settings["save"],
        "maxmemory": str(100 * 1024 * 1024),
        "maxmemory-policy": "noeviction",
    }


def test_no_persistence_is_reported(start_redis: Callable[[list[str]], ConfiguredRedis]) -> None:
    report = check_redis_config(start_redis(NO_PERSISTENCE).client)
    assert report.checked is True
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("Redis has no persistence (appendonly no, save '')")
    assert "appendonly yes" in report.warnings[0]


def test_snapshots_only_are_reported(start_redis: Callable[[list[str]], ConfiguredRedis]) -> None:
    (warning,) = check_redis_config(start_redis(["--appendonly", "no", "--save", "60 1"]).client).warnings
    assert warning.startswith("Redis persists only by snapshots (appendonly no, save '60 1')")


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_an_evicting_policy_with_maxmemory_is_reported(
    start_redis: Callable[[list[str]], ConfiguredRedis], policy: str
) -> None:
    args = ["--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", policy]
    (warning,) = check_redis_config(start_redis(args).client).warnings
    assert warning.startswith(f"Redis may evict keys (maxmemory 104857600, maxmemory-policy {policy})")
    assert "set maxmemory-policy noeviction" in warning


def test_an_evicting_policy_without_maxmemory_evicts_nothing(
    start_redis: Callable[[list[str]], ConfiguredRedis],
) -> None:
    assert (
        check_redis_config(start_redis(["--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"]).client).warnings
        == ()
    )


def test_refused_config_says_what_to_check_by_hand(start_redis: Callable[[list[str]], ConfiguredRedis]) -> None:
    report = check_redis_config(start_redis(NO_CONFIG).client)
    assert report.checked is False
    (warning,) = report.warnings
    assert warning.startswith("Redis refused CONFIG GET (unknown command 'CONFIG'")
    assert "cannot be checked: check by hand" in warning and "noeviction" in warning


# --- worker start ----------------------------------------------------------------------------


def test_worker_start_logs_each_problem_and_reports_once(
    start_redis: Callable[[list[str]], ConfiguredRedis], caplog: pytest.LogCaptureFixture
) -> None:
    args = ["--appendonly", "no", "--save", "", "--maxmemory", "100mb", "--maxmemory-policy", "volatile-lru"]
    reports = Reports()
    with caplog.at_level(logging.WARNING, logger="wetbot_rewards.redis_checks"):
        result = warn_at_start(start_redis(args).client, report=reports)
    assert result is not None and len(result.warnings) == 2
    lines = [r for r in caplog.records if r.name == "wetbot_rewards.redis_checks"]
    assert [r.levelno for r in lines] == [logging.ERROR, logging.ERROR]
    assert lines[0].getMessage().startswith("Redis has no persistence")
    assert lines[1].getMessage().startswith("Redis may evict keys")
    assert all("\n" not in r.getMessage() for r in lines)
    (message, options), *more = reports.calls
    assert not more
    assert "no persistence" in message and "may evict" in message
    assert options["tags"]["kind"] == "redis_config"


def test_worker_start_is_quiet_on_a_good_redis(
    start_redis: Callable[[list[str]], ConfiguredRedis], caplog: pytest.LogCaptureFixture
) -> None:
    reports = Reports()
    with caplog.at_level(logging.INFO, logger="wetbot_rewards.redis_checks"):
        warn_at_start(start_redis(GOOD).client, report=reports)
    assert reports.calls == []
    assert [r for r in caplog.records if r.name == "wetbot_rewards.redis_checks"] == []


def test_worker_start_with_refused_config_warns_without_sentry(
    start_redis: Callable[[list[str]], ConfiguredRedis], caplog: pytest.LogCaptureFixture
) -> None:
    reports = Reports()
    with caplog.at_level(logging.WARNING, logger="wetbot_rewards.redis_checks"):
        result = warn_at_start(start_redis(NO_CONFIG).client, report=reports)
    assert result is not None and result.checked is False
    (line,) = [r for r in caplog.records if r.name == "wetbot_rewards.redis_checks"]
    assert line.levelno == logging.WARNING and "cannot be checked" in line.getMessage()
    assert reports.calls == []


def test_worker_start_survives_an_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wetbot_rewards.redis_checks"):
        assert warn_at_start(Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)) is None
    assert "Redis unavailable" in caplog.text


def test_worker_start_sends_one_sentry_event(
    start_redis: Callable[[list[str]], ConfiguredRedis], sentry_events: CapturingTransport
) -> None:
    warn_at_start(start_redis(EVICTING).client)
    (event,) = sentry_events.events
    assert event["level"] == "error"
    assert event["tags"]["kind"] == "redis_config"
    assert "may evict keys" in str(event.get("message") or event.get("logentry"))


@pytest.mark.slow
def test_the_worker_process_warns_at_start(
    start_redis: Callable[[list[str]], ConfiguredRedis],
    tmp_path: Path,
    prefix: str,
    sim: WetbotSimulator,
    rewards_file: Path,
) -> None:
    server = start_redis(NO_PERSISTENCE)
    procs = Processes(tmp_path)
    env = service_env(prefix, sim, rewards_file, REDIS_URL=server.url)
    dramatiq_bin = str(Path(sys.executable).parent / "dramatiq")
    procs.start("worker", [dramatiq_bin, "worker.actors", "--processes", "1", "--threads", "1"], env)
    try:
        wait_for(lambda: "Redis has no persistence" in procs.log("worker"), timeout_s=20, interval_s=0.1)
    finally:
        procs.stop_all()
    assert procs.log("worker").count("Redis has no persistence") == 1


# --- GET /readyz --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "warning"),
    [(GOOD, None), (NO_PERSISTENCE, "Redis has no persistence"), (EVICTING, "Redis may evict keys")],
)
def test_readyz_stays_200_and_lists_the_warnings(
    start_redis: Callable[[list[str]], ConfiguredRedis],
    make_settings: SettingsFactory,
    args: list[str],
    warning: str | None,
) -> None:
    server = start_redis(args)
    with TestClient(create_app(make_settings(redis_url=server.url))) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["redis"] == "ok"
    assert body["redis_config"]["checked"] is True
    if warning is None:
        assert body["warnings"] == []
        assert body["redis_config"]["maxmemory-policy"] == "noeviction"
    else:
        (only,) = body["warnings"]
        assert only.startswith(warning)


def test_readyz_with_refused_config(
    start_redis: Callable[[list[str]], ConfiguredRedis], make_settings: SettingsFactory
) -> None:
    server = start_redis(NO_CONFIG)
    with TestClient(create_app(make_settings(redis_url=server.url))) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["redis_config"] == {"checked": False}
    (warning,) = body["warnings"]
    assert "cannot be checked" in warning


def test_readyz_reuses_one_check_for_a_while(start_redis: Callable[[list[str]], ConfiguredRedis]) -> None:
    # Given a cached check of a good Redis
    server = start_redis(GOOD)
    now = [0.0]
    cache = CachedRedisCheck(server.client, ttl_s=60, clock=lambda: now[0])
    assert cache.get().warnings == ()
    # When Redis becomes evicting, the cached answer stands until the cache ages out
    server.client.config_set("maxmemory-policy", "allkeys-lru")
    now[0] = 59.0
    assert cache.get().warnings == ()
    now[0] = 60.0
    (warning,) = cache.get().warnings
    assert warning.startswith("Redis may evict keys")
