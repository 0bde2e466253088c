"""Shared fixtures: Redis DB 15 under a per-test key prefix, the WetBot simulator, settings, deliverer.

Tests never flush a database: each test gets its own prefix (``t<random>``)
and deletes exactly the keys under it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dramatiq
import pytest
import sentry_sdk
import uvicorn
from dramatiq.brokers.redis import RedisBroker
from fastapi import FastAPI
from redis import Redis
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from config.settings import RENAMED_VARIABLES, Settings, env_names, load_settings
from devtools.chaos.servers import PrivateRedis
from simulator.wetbot import WetbotSimulator
from worker.broker import build_broker, declare_deliver
from worker.connections import connect_redis
from worker.delivery import Deliverer
from worker.keys import Keys
from worker.ledger import Ledger
from worker.observability import init_sentry
from worker.runtime import add_worker_middleware, build_deliverer
from worker.schedule import Schedule
from worker.timings import DEFAULT_TIMINGS, Timings

#: Shared fixtures kept as plugins, so no test module copies them.
pytest_plugins = ["tests.twitch_fixtures"]

#: Tests use DB 15 of the local Redis; override with WBR_TEST_REDIS_URL.
TEST_REDIS_URL = os.environ.get("WBR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
API_KEY = "test-api-key-7f3a9c1e5b"
GUILD = "111111111111111111"
USER = "222222222222222222"
OTHER_USER = "333333333333333333"
TOKEN = "test-grants-token-5d8e2a7c41"

#: Every variable Settings reads; cleared so the developer's environment cannot leak into tests.
SETTINGS_ENV = env_names()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SETTINGS_ENV, *RENAMED_VARIABLES):  # the old names too: they are still read
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def own_prefix() -> Iterator[str]:
    """A fresh key prefix in the test database; every key under it is deleted at the end."""
    value = f"t{uuid.uuid4().hex[:10]}"
    yield value
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{value}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    with own_prefix() as value:
        yield value


@pytest.fixture
def redis(prefix: str) -> Iterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def ledger(redis: Redis, keys: Keys) -> Ledger:
    return Ledger(redis, keys)


@pytest.fixture
def sim() -> Iterator[WetbotSimulator]:
    """A WetBot simulator for API_KEY -> GUILD, limit 10 per 60 s (tests change it as needed)."""
    simulator = WetbotSimulator(keys={API_KEY: GUILD}, limit=10, window_s=60.0)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def rewards_file(tmp_path: Path) -> Path:
    path = tmp_path / "rewards.toml"
    path.write_text(f'guild_id = "{GUILD}"\n', encoding="utf-8")
    return path


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(prefix: str, sim: WetbotSimulator, rewards_file: Path) -> SettingsFactory:
    """Settings for this test's prefix and simulator; keyword arguments override fields."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,
            "redis_url": TEST_REDIS_URL,
            "redis_key_prefix": prefix,
            "wetbot_api_url": sim.url,
            "wetbot_api_key": API_KEY,
            "wetbot_timeout_s": 2.0,
            "wetbot_retry_backoff_s": 0.05,
            "wetbot_auth_pause_s": 0.5,
            "rewards_file": rewards_file,
            "grants_api_token": TOKEN,
        }
        values.update(overrides)
        return load_settings(**values)

    return factory


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefix: str, rewards_file: Path) -> None:
    """The CLI's environment: the test's Redis and prefix, its rules file, and no stray ``.env``."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    monkeypatch.setenv("REWARDS_FILE", str(rewards_file))


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@dataclass
class ScheduleDriver:
    """Plays the worker's reconciler and queue when a test drives ``Deliverer`` directly.

    ``run`` hands each grant that is due on the ledger's schedule to the
    deliverer (with its dispatch token, as a queue message would), sleeping
    until the next one is due, until nothing is scheduled any more.
    ``runs`` keeps every (grant id, token) handed over.
    """

    redis: Redis
    keys: Keys
    schedule: Schedule
    runs: list[tuple[str, str]] = field(default_factory=list)

    def run(self, deliverer: Deliverer, *, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            batch = self.schedule.dispatch_batch()
            for grant_id, token in batch.dispatched:
                self.runs.append((grant_id, token))
                deliverer.deliver(grant_id, token)
            if batch.dispatched:
                continue  # the runs moved what is due: look again
            wait_s = batch.next_due_in_s
            if wait_s is None:
                return
            if time.monotonic() + wait_s > deadline:
                raise AssertionError(f"a grant would only run again in {wait_s:.1f}s, after the test's timeout")
            time.sleep(min(max(wait_s, 0.0), 1.0))

    def ran(self, grant_id: str) -> int:
        """How many runs ``grant_id`` was given."""
        return sum(1 for ran_id, _token in self.runs if ran_id == grant_id)


@pytest.fixture
def driver(redis: Redis, keys: Keys) -> ScheduleDriver:
    return ScheduleDriver(redis, keys, Schedule(redis, keys))


class DelivererFactory(Protocol):
    """``make_deliverer``: a deliverer on the test's Redis, with the production timings unless told."""

    def __call__(self, settings: Settings, timings: Timings = DEFAULT_TIMINGS) -> Deliverer: ...


@pytest.fixture
def make_deliverer(redis: Redis) -> DelivererFactory:
    def factory(settings: Settings, timings: Timings = DEFAULT_TIMINGS) -> Deliverer:
        return build_deliverer(settings, redis, timings=timings)

    return factory


class CapturingTransport(Transport):
    """Sentry transport that keeps events in memory instead of sending them (Sentry's network is not here)."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    @property
    def events(self) -> list[dict[str, Any]]:
        out = []
        for envelope in self.envelopes:
            event = envelope.get_event()
            if event is not None:
                out.append(dict(event))
        return out

    def raw(self) -> str:
        """Every captured envelope serialised, to search for secrets."""
        return "\n".join(envelope.serialize().decode("utf-8", "replace") for envelope in self.envelopes)


@pytest.fixture
def sentry_events(settings: Settings) -> Iterator[CapturingTransport]:
    """Sentry initialised as the service does it, with a capturing transport."""
    transport = CapturingTransport()
    init_sentry(settings, transport=transport)
    yield transport
    client = sentry_sdk.get_client()
    client.close()
    sentry_sdk.get_global_scope().set_client(None)


@dataclass
class RunningWorker:
    """A real Dramatiq worker (threads in this process) on a real Redis broker, running ``deliver``."""

    broker: RedisBroker
    worker: dramatiq.Worker

    def stop(self) -> None:
        self.worker.stop()
        self.broker.close()


Handler = Callable[[str, str], None]


def start_worker(
    settings: Settings,
    *,
    threads: int = 4,
    handler: Handler | None = None,
    wrap: Callable[[Handler], Handler] | None = None,
) -> RunningWorker:
    """Start a worker for ``settings``: its own broker connection, as a separate process would have.

    ``handler`` replaces the deliverer (to make the actor fail on purpose); ``wrap`` wraps the deliverer's
    ``deliver`` (to count its runs).
    """
    broker = build_broker(settings)
    redis_client = connect_redis(settings)
    deliverer = build_deliverer(settings, redis_client)
    run = handler or deliverer.deliver
    declare_deliver(broker, wrap(run) if wrap else run, timeout_s=settings.wetbot_timeout_s)
    add_worker_middleware(
        broker,
        redis_client,
        Keys(settings.redis_key_prefix),
        keyring=deliverer.clients.keyring,
        schedule=deliverer.schedule,
    )
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return RunningWorker(broker, worker)


@pytest.fixture
def workers() -> Iterator[Callable[..., RunningWorker]]:
    """Factory for in-process workers; all are stopped at the end of the test."""
    started: list[RunningWorker] = []

    def factory(settings: Settings, **options: Any) -> RunningWorker:
        running = start_worker(settings, **options)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@contextlib.contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn on a loopback port (bound before the server starts: no race); yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=10, interval_s=0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_for(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05) -> float:
    """Poll until ``predicate()`` holds; returns the seconds it took. Fails the test on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)
    return time.monotonic() - start


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own (append-only, in ``tmp_path``), for tests that restart or kill Redis."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
