"""A Redis Sentinel group of the caller's own: a primary, replicas and one sentinel, on free ports.

Everything comes from Debian's ``redis-server`` package: the sentinel is ``redis-server <conf> --sentinel``
(the ``redis-sentinel`` package only adds a symlink, a config file and a service unit). Timings are short
(``down-after-milliseconds`` 1 s) so a failover takes a few seconds. Used by the ``failover`` chaos
scenario and the Sentinel tests; every node persists to an append-only file in a directory of its own.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError

from devtools.chaos.servers import PrivateRedis, free_port, wait_until

__all__ = ["MASTER_NAME", "SentinelGroup"]

#: The master's name the sentinel monitors (``REDIS_SENTINEL_MASTER``'s default).
MASTER_NAME = "mymaster"
HOST = "127.0.0.1"
#: The key ``SentinelGroup.synced`` writes so that its ``WAIT`` covers every earlier write.
SYNC_BARRIER = "sentinel-group:synced"
#: Every node's own arguments: a replica's full sync starts at once (Redis waits 5 s by default, for
#: more replicas to share one transfer).
NODE_ARGS = ("--repl-diskless-sync-delay", "0")


class SentinelGroup:
    """``replicas`` + 1 redis-servers (node 0 starts as the primary) and one sentinel watching them.

    ``env()`` is what the service needs to reach the master through the sentinel; ``client()`` is a
    plain client on the master the sentinel names *now* (a harness must not read a demoted node);
    ``synced()`` says whether every replica has what the master has (what a failover may promote).
    """

    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 1,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes: list[PrivateRedis] = []
        for index in range(replicas + 1):
            node_dir = directory / f"node-{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(PrivateRedis(node_dir, extra_args=NODE_ARGS))
        primary = self.nodes[0].port
        for node in self.nodes[1:]:
            node.extra_args = (*NODE_ARGS, "--replicaof", HOST, str(primary))
        self.sentinel_port = free_port()
        self.sentinel: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ what the service is given

    @property
    def sentinels(self) -> str:
        """``REDIS_SENTINELS``."""
        return f"{HOST}:{self.sentinel_port}"

    def env(self) -> dict[str, str]:
        """``REDIS_URL`` (db 0; host and port are not used under Sentinel) and the sentinel settings."""
        return {
            "REDIS_URL": "redis://sentinel-managed/0",
            "REDIS_SENTINELS": self.sentinels,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the nodes, wait for the replicas to sync, then start the sentinel and wait until it sees them."""
        for node in self.nodes:
            node.start()
        self.wait_replicas_online(self.nodes[0].port, len(self.nodes) - 1)
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {self.sentinel_port}",
                    f"bind {HOST}",
                    f"dir {self.directory}",
                    f"logfile {self.directory / 'sentinel.log'}",
                    f"sentinel monitor {MASTER_NAME} {HOST} {self.nodes[0].port} 1",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                    f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        self.sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
        self.wait_promotable(timeout_s=15)

    def stop(self) -> None:
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sentinel.wait(timeout=10)
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> SentinelGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ observation

    def _sentinel_client(self) -> Redis:
        return Redis(HOST, self.sentinel_port, socket_timeout=2, socket_connect_timeout=2)

    def master_port(self) -> int | None:
        """The master's port as the sentinel names it now (None while it names none)."""
        client = self._sentinel_client()
        try:
            address = client.sentinel_get_master_addr_by_name(MASTER_NAME)  # type: ignore[no-untyped-call]
        except RedisError:
            return None
        finally:
            client.close()
        return int(address[1]) if address else None

    def synced(self, timeout_ms: int = 5000) -> bool:
        """Whether every replica has every write the master had when asked (waiting up to ``timeout_ms``).

        ``WAIT`` counts the replicas that have the writes of its own connection: on one that wrote nothing it
        answers at once with every connected replica, however far behind. So an ``INCR`` of a key of the
        group's own and the ``WAIT`` go on one connection (one pipeline): the ``WAIT`` then covers every write
        the master took before, from any client.

        Raises:
          RedisError: the sentinel names no master (mid-failover), or it did not answer.
        """
        port = self.master_port()
        if port is None:
            raise RedisError("the sentinel names no master right now")
        client = self.node(port).client(socket_timeout=timeout_ms / 1000 + 2)
        try:
            pipe = client.pipeline(transaction=False)
            pipe.incr(SYNC_BARRIER)
            pipe.wait(len(self.nodes) - 1, timeout_ms)
            _, acked = pipe.execute()
        finally:
            client.close()
        return int(acked) == len(self.nodes) - 1

    def node(self, port: int) -> PrivateRedis:
        return next(node for node in self.nodes if node.port == port)

    def client(self) -> Redis:
        """A client on the master the sentinel names now (short timeouts).

        Raises:
          RedisError: the sentinel names no master (mid-failover).
        """
        port = self.master_port()
        if port is None:
            raise RedisError("the sentinel names no master right now")
        return self.node(port).client()

    def _known_replicas(self) -> int:
        """Replicas the sentinel could promote now: up, connected, linked to the master, role seen as replica."""
        client = self._sentinel_client()
        try:
            replicas = client.sentinel_slaves(MASTER_NAME)  # type: ignore[no-untyped-call]
        except RedisError:
            return 0
        finally:
            client.close()
        return sum(
            1
            for r in replicas
            if not (r.get("is_sdown") or r.get("is_odown") or r.get("is_disconnected"))
            and r.get("role-reported") == "slave"
            and r.get("master-link-status") == "ok"
        )

    def wait_promotable(self, timeout_s: float = 30.0) -> None:
        """Wait until the sentinel counts every replica as promotable (it refreshes a returning node's role
        only every few seconds; a failover asked for before then fails with ``NOGOODSLAVE``)."""
        wanted = len(self.nodes) - 1
        wait_until(lambda: self._known_replicas() >= wanted, timeout_s=timeout_s, what="promotable replicas")

    def wait_replicas_online(self, master_port: int, count: int, timeout_s: float = 15.0) -> None:
        """Wait until ``count`` replicas are attached to ``master_port`` and in sync (``state=online``)."""
        client = self.node(master_port).client()

        def online() -> bool:
            try:
                info = cast(dict[str, Any], client.info("replication"))
            except RedisError:
                return False
            replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return sum(1 for r in replicas if r.get("state") == "online") >= count

        try:
            wait_until(online, timeout_s=timeout_s, interval_s=0.05, what=f"{count} replicas online")
        finally:
            client.close()

    # ------------------------------------------------------------------ faults

    def kill_primary(self, *, timeout_s: float = 20.0) -> tuple[int, int]:
        """SIGKILL the primary and wait until the sentinel has promoted a replica; ``(old port, new port)``."""
        self.wait_promotable()
        old = self.master_port()
        assert old is not None, "no master to kill"
        self.node(old).kill()
        return old, self._wait_new_master(old, timeout_s)

    def rejoin(self, port: int, *, timeout_s: float = 15.0) -> None:
        """Restart the node on ``port`` (from its append-only file) as a replica of the current master.

        An orchestrator does this; the sentinel would also turn a returning old primary into a replica on
        its own, about ten seconds after it is back.
        """
        master = self.master_port()
        assert master is not None and master != port
        self.node(port).start(extra_args=[*NODE_ARGS, "--replicaof", HOST, str(master)])
        self.wait_replicas_online(master, len(self.nodes) - 1, timeout_s)

    def failover(self, *, timeout_s: float = 20.0) -> tuple[int, int]:
        """``SENTINEL FAILOVER``: promote a replica while the primary is still up; ``(old port, new port)``.

        The sentinel does not ask the old primary first: it stays writable (to the connections it has) until
        the sentinel reconfigures it as a replica, about ten seconds later, and drops what it took meanwhile.
        """
        self.wait_promotable()
        old = self.master_port()
        assert old is not None
        client = self._sentinel_client()
        try:
            client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        return old, self._wait_new_master(old, timeout_s)

    def _wait_new_master(self, old: int, timeout_s: float) -> int:
        def switched() -> bool:
            port = self.master_port()
            return port is not None and port != old and self._is_master(port)

        wait_until(switched, timeout_s=timeout_s, interval_s=0.05, what="a replica promoted")
        port = self.master_port()
        assert port is not None
        return port

    def _is_master(self, port: int) -> bool:
        client = self.node(port).client()
        try:
            return cast(dict[str, Any], client.info("replication")).get("role") == "master"
        except RedisError:
            return False
        finally:
            client.close()
