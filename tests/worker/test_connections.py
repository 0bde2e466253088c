"""Every Redis client follows Sentinel and speaks TLS, with the same defences (``worker.connections``).

Servers are the test's own: a Sentinel group (``devtools.chaos.sentinel``) and a ``redis-server`` with
``--tls-port`` and a throwaway certificate made by ``openssl`` (Debian's redis-server is built with TLS).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from config.settings import Settings
from devtools.chaos.sentinel import MASTER_NAME, SentinelGroup
from devtools.chaos.servers import PrivateRedis, free_port
from tests.conftest import SettingsFactory, wait_for
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main as cli_main
from worker.broker import build_broker
from worker.connections import (
    MASTER_RECHECK_S,
    REDIS_SOCKET_TIMEOUT_S,
    connect_redis,
    connect_redis_async,
    follow_failover,
)

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a test certificate")


def assert_defended(options: dict[str, object]) -> None:
    assert options["socket_timeout"] == REDIS_SOCKET_TIMEOUT_S
    assert options["socket_keepalive"] is True and options["socket_keepalive_options"]
    assert options["health_check_interval"]
    assert options["retry"]._retries >= 1  # type: ignore[attr-defined]  # redis-py keeps the count private


# --------------------------------------------------------------------------------------------- configuration


def test_sentinel_clients_keep_every_defence_and_take_db_credentials_and_tls_from_redis_url(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(
        redis_url="rediss://app:master-pw@not-used:1/4?ssl_cert_reqs=none",
        redis_sentinels="127.0.0.1:1,127.0.0.1:2",
        redis_sentinel_master="wetbot",
        redis_sentinel_password="sentinel-pw",
    )
    sync, asynchronous = connect_redis(settings), connect_redis_async(settings)
    broker = build_broker(settings)
    try:
        for client, pool_class in (
            (sync, SentinelConnectionPool),
            (asynchronous, AsyncSentinelPool),
            (broker.client, SentinelConnectionPool),
        ):
            pool = client.connection_pool
            assert isinstance(pool, pool_class) and pool.service_name == "wetbot"
            options = pool.connection_kwargs
            assert_defended(options)
            assert (options["db"], options["username"], options["password"]) == (4, "app", "master-pw")
            assert options["ssl_cert_reqs"] == "none" and "host" not in options
            sentinels = pool.sentinel_manager.sentinels
            assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
            sentinel_options = sentinels[0].connection_pool.connection_kwargs
            assert sentinel_options["password"] == "sentinel-pw"
            assert sentinel_options["socket_timeout"] == REDIS_SOCKET_TIMEOUT_S
            assert sentinel_options["ssl_cert_reqs"] == "none"
        assert sync.connection_pool.connection_class is SentinelManagedSSLConnection
    finally:
        sync.close()
        broker.close()
        asyncio.run(asynchronous.aclose())


# --------------------------------------------------------------------------------------------- one server


@pytest.mark.slow
@needs_redis_server
def test_a_readonly_answer_is_retried_on_a_new_connection(tmp_path: Path, make_settings: SettingsFactory) -> None:
    """A managed endpoint that fails over by DNS: old connections reach the demoted node, which says READONLY."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    primary = PrivateRedis(tmp_path / "a")
    primary.start()
    replica = PrivateRedis(tmp_path / "b", extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    client = connect_redis(make_settings(redis_url=replica.url))
    admin = replica.client()
    try:
        with pytest.raises(ReadOnlyError):
            client.set("k", "v")  # still a replica after every retry: the error comes through as itself

        def promote() -> None:
            time.sleep(0.15)
            admin.execute_command("REPLICAOF", "NO", "ONE")  # type: ignore[no-untyped-call]

        promoting = threading.Thread(target=promote)
        promoting.start()
        try:
            assert client.set("k", "v")  # READONLY first, then a retry on a new connection finds a primary
        finally:
            promoting.join()
    finally:
        client.close()
        admin.close()
        replica.stop()
        primary.stop()


class TlsRedis:
    """A redis-server listening on TLS only, with a self-signed certificate for 127.0.0.1 in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.cert, self.key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
            ],
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                str(self.cert),
                "--tls-key-file",
                str(self.key),
                "--tls-ca-cert-file",
                str(self.cert),
                "--tls-auth-clients",
                "no",
                "--dir",
                str(directory),
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )

    def url(self, query: str) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?{query}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@needs_redis_server
@needs_openssl
def test_tls_redis_with_a_checked_certificate_for_every_client(
    tls_redis: TlsRedis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(redis_url=tls_redis.url(f"ssl_cert_reqs=required&ssl_ca_certs={tls_redis.cert}"))
    client = connect_redis(settings)

    def up() -> bool:
        try:
            return bool(client.ping())
        except RedisConnectionError:
            return False

    wait_for(up, timeout_s=10)
    assert client.set("k", "v") and client.get("k") == b"v"
    client.close()

    async def async_round_trip() -> bytes | None:
        aclient = connect_redis_async(settings)
        try:
            return await aclient.get("k")  # type: ignore[no-any-return]
        finally:
            await aclient.aclose()

    assert asyncio.run(async_round_trip()) == b"v"
    broker = build_broker(settings)
    try:
        assert broker.client.ping()
    finally:
        broker.close()
    with TestClient(create_app(settings)) as web:
        assert web.get("/readyz").json()["redis"] == "ok"

    # Verification is real: a certificate from another CA is refused; ssl_cert_reqs=none skips the check.
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
            "-keyout",
            str(other / "key.pem"),
            "-out",
            str(other / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    wrong = connect_redis(make_settings(redis_url=tls_redis.url(f"ssl_ca_certs={other / 'cert.pem'}")))
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        wrong.ping()
    wrong.close()
    unchecked = connect_redis(make_settings(redis_url=tls_redis.url("ssl_cert_reqs=none")))
    assert unchecked.get("k") == b"v"
    unchecked.close()


# --------------------------------------------------------------------------------------------- Sentinel


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path) as started:
        yield started


def sentinel_settings(make_settings: SettingsFactory, group: SentinelGroup, **overrides: object) -> Settings:
    env = group.env()
    return make_settings(
        redis_url=env["REDIS_URL"],
        redis_sentinels=env["REDIS_SENTINELS"],
        redis_sentinel_master=MASTER_NAME,
        redis_key_prefix="wbr",
        **overrides,
    )


@pytest.mark.slow
@needs_redis_server
def test_every_client_follows_the_master_through_a_failover(
    group: SentinelGroup, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = sentinel_settings(make_settings, group)
    client = connect_redis(settings)
    broker = build_broker(settings)
    try:
        assert client.set("before", "1")
        # Replication is asynchronous: on a loaded machine the kill can come before the replica has the key
        # (the service confirms the writes that matter the same way, worker.replication).
        assert client.wait(1, 5000) == 1
        assert client.connection_pool.get_master_address()[1] == group.nodes[0].port  # type: ignore[attr-defined]
        old, new = group.kill_primary()
        assert new == group.nodes[1].port
        # The first command after the kill may fail while the sentinel names no master (a 503 for a
        # producer, a retry in place for a worker); within a few seconds every client is on the new one.
        wait_for(lambda: _answers(client), timeout_s=15)
        assert client.get("before") == b"1"
        assert broker.client.ping()

        async def async_round_trip() -> bytes | None:
            aclient = connect_redis_async(settings)
            try:
                return await aclient.get("before")  # type: ignore[no-any-return]
            finally:
                await aclient.aclose()

        assert asyncio.run(async_round_trip()) == b"1"
        with TestClient(create_app(settings)) as web:
            ready = web.get("/readyz")
            assert ready.status_code == 200  # Redis answers; that nothing can be confirmed is a warning
            assert any("0 of the 1 Redis replicas" in w for w in ready.json()["warnings"])
            group.rejoin(old)
            assert web.get("/readyz").json()["warnings"] == []
        for name, value in group.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("REDIS_KEY_PREFIX", f"t{os.getpid()}")
        assert cli_main(["grants", "list"]) == 0
    finally:
        client.close()
        broker.close()


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary with two replicas: a failover then takes seconds (the other replica is moved too), and
    the sentinels' ``SENTINEL MASTERS`` names the old primary until it is over."""
    with SentinelGroup(tmp_path / "trio", replicas=2) as started:
        yield started


def _on_old_primary(group: SentinelGroup, port: int, key: str) -> bool:
    """``key`` is on the old primary while it still acts as one (once a replica again, it has the new one's data)."""
    client = group.node(port).client()
    try:
        role = cast(dict[str, Any], client.info("replication"))["role"]
        return bool(client.exists(key)) and role == "master"
    finally:
        client.close()


@pytest.mark.slow
@needs_redis_server
def test_a_pooled_connection_follows_a_sentinel_failover_at_once(
    trio: SentinelGroup, make_settings: SettingsFactory
) -> None:
    """A ``SENTINEL FAILOVER`` leaves the old primary writable for ~10 s; an open connection must not keep
    writing there (redis-py's pool did), neither a sync nor an async one."""
    settings = sentinel_settings(make_settings, trio)
    client, aclient = connect_redis(settings), connect_redis_async(settings)

    async def aset(key: str) -> None:
        await aclient.set(key, "1")

    loop = asyncio.new_event_loop()
    try:
        client.set("before", "1")
        loop.run_until_complete(aset("before-async"))
        old, new = trio.failover()
        follow_failover(client)  # an operator action asks first: at once
        client.set("asked", "1")
        time.sleep(MASTER_RECHECK_S + 0.1)  # any other command asks within MASTER_RECHECK_S
        client.set("later", "1")
        loop.run_until_complete(aset("later-async"))
        for key in ("asked", "later", "later-async"):
            assert not _on_old_primary(trio, old, key), key
        primary = trio.node(new).client()
        assert primary.exists("asked", "later", "later-async") == 3
        primary.close()
    finally:
        client.close()
        loop.run_until_complete(aclient.aclose())
        loop.close()


def _answers(client: Redis) -> bool:
    try:
        return bool(client.set("after", "1"))
    except RedisConnectionError:
        return False
