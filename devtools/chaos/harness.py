"""Chaos harness: the Procfile's real processes against the WetBot simulator, with faults, and exact accounting.

A :class:`Cluster` starts, in a temp dir of its own:

* a private ``redis-server`` (:class:`~devtools.chaos.servers.PrivateRedis`, append-only file,
  ``appendfsync always``) on a free port — or, with ``sentinel``, a primary, a replica and a sentinel
  (:class:`~devtools.chaos.sentinel.SentinelGroup`) that every process reaches through the sentinel;
* the WetBot simulator in this process (:class:`simulator.wetbot.WetbotSimulator`), fast window (10/2 s);
* optionally a TCP proxy between the workers and Redis (:class:`BlackholeProxy`) that can silently cut
  every existing connection;
* the web process exactly as the Procfile runs it (``uvicorn wetbot_rewards.app:app``);
* ``workers`` worker processes exactly as the Procfile runs them (``dramatiq worker.actors ...``), each in
  a process group of its own so it can be SIGKILLed or SIGTERMed as a whole; a worker may run through
  ``devtools.chaos.skewed_clock`` to shift its clock.

A :class:`Load` is a set of expected grants, one Discord user each (so the simulator's applied list says
exactly how often each was applied), and the signed deliveries that produce them: Twitch cheers and
channel-point redemptions, Patreon new pledges and ``POST /grants`` with idempotency keys. Every
delivery is sent twice at once and once more later; a redemption is also sent again under a new message
id. :func:`measure` compares the simulator's applied changes and the ledger with the expected set.

Used by ``tests/chaos`` (short scenarios) and ``bench/chaos_long.py`` (long ones); the scenarios themselves
are in ``devtools/chaos/scenarios.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from redis.exceptions import RedisError

from devtools.chaos.sentinel import SentinelGroup
from devtools.chaos.servers import PrivateRedis, free_port, wait_until
from producers.patreon.samples import Member, encode
from producers.twitch.samples import SAMPLE_REWARD_ID, sample_event, sample_payload, signed_request
from simulator.wetbot import NO_RESPONSE, ProfileShape, RequestRecord, WetbotSimulator
from worker.grant import FINAL_STATES, Grant, GrantState
from worker.keys import Keys
from worker.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

API_KEY = secrets.token_hex(16)
GUILD = "111111111111111111"
TOKEN = secrets.token_hex(16)
TWITCH_SECRET = secrets.token_hex(16)
PATREON_SECRET = secrets.token_hex(16)
PREFIX = "wbr"
#: The simulator's window and the service's WETBOT_RATE_LIMIT (fast, so short scenarios drain in seconds).
LIMIT, WINDOW_S = 10, 2.0
#: WETBOT_TIMEOUT_S of the workers, in seconds; ``slow_after`` faults longer than this are read timeouts.
TIMEOUT_S = 2.0
#: Log line of a Dramatiq worker process that is consuming.
WORKER_READY = "Worker process is ready for action"
#: Fault kinds after which the client cannot know whether the request was applied.
AMBIGUOUS_FAULTS = frozenset({"500_before", "500_after", "drop_before", "html_200", "html_200_after"})
#: Profile shapes of a POST's 200 after which the client cannot know whether it was applied: the answer holds
#: no profile object, so it proves no more than a proxy's HTML 200 would. The other drifts still come in
#: WetBot's success envelope with a profile: applied, only the inventory is unreadable.
AMBIGUOUS_SHAPES: frozenset[ProfileShape] = frozenset({"not_object"})


# --------------------------------------------------------------------------------------------- proxy


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    frozen: bool = False


class BlackholeProxy:
    """A TCP proxy (threads) in front of ``127.0.0.1:target_port``.

    :meth:`blackhole` makes every connection open at that moment a black hole: nothing more is forwarded
    in either direction and nothing is closed, as when a NAT or a firewall silently drops a flow. New
    connections are forwarded normally.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.cut = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def blackhole(self) -> int:
        """Silently cut every open connection; returns how many were cut."""
        with self._lock:
            live = [pair for pair in self._pairs if not pair.frozen]
            for pair in live:
                pair.frozen = True
        self.cut += len(live)
        return len(live)

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            for sock in (pair.client, pair.upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, upstream, client), daemon=True).start()

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not pair.frozen:
                data = source.recv(65536)
                if not data:
                    break
                if pair.frozen:
                    break  # dropped: a black hole forwards nothing
                sink.sendall(data)
        except OSError:
            pass
        if pair.frozen:
            self._stopped.wait()  # keep both sockets open, unanswered, until the proxy stops
            return
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Expected:
    """One grant the load must produce: ``amount`` of ``item_id`` for ``user_id`` (that grant's own user)."""

    source: str
    user_id: str
    item_id: str
    amount: float


@dataclass(frozen=True)
class Delivery:
    """One HTTP request a source sends (the very same bytes every time it is repeated)."""

    name: str
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class SendLog:
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int) -> None:
        with self.lock:
            self.attempts += 1
            self.statuses[status] += 1


class Load:
    """``grants`` expected grants over the four sources, and the deliveries that produce them.

    User ids are ``base_user + n`` (18-digit snowflakes), one per grant. Twitch users are linked to
    them statically in the rewards file (:meth:`twitch_links`).
    """

    SOURCES = ("twitch-cheer", "twitch-redeem", "patreon", "api")

    def __init__(self, grants: int, *, base_user: int = 500_000_000_000_000_000) -> None:
        self.expected: list[Expected] = []
        self.deliveries: list[Delivery] = []
        #: Deliveries of an event Twitch sent before under another message id (same redemption id).
        self.renamed: list[Delivery] = []
        self._links: dict[str, str] = {}
        self.log = SendLog()
        for n in range(grants):
            source = self.SOURCES[n % len(self.SOURCES)]
            user = str(base_user + n)
            getattr(self, "_" + source.replace("-", "_"))(n, user)

    def twitch_links(self) -> dict[str, str]:
        return dict(self._links)

    def users(self) -> list[str]:
        return [e.user_id for e in self.expected]

    def _twitch_cheer(self, n: int, user: str) -> None:
        twitch_user = str(70_000 + n)
        self._links[twitch_user] = user
        event = sample_event("channel.cheer", user_id=twitch_user, bits=100)
        body, headers = signed_request(TWITCH_SECRET, sample_payload("channel.cheer", event))
        self.deliveries.append(Delivery(f"cheer-{n}", "/webhooks/twitch", body, headers))
        self.expected.append(Expected("twitch", user, "chaos-gem", 1))

    def _twitch_redeem(self, n: int, user: str) -> None:
        twitch_user = str(70_000 + n)
        self._links[twitch_user] = user
        kind = "channel.channel_points_custom_reward_redemption.add"
        payload = sample_payload(kind, sample_event(kind, user_id=twitch_user))
        body, headers = signed_request(TWITCH_SECRET, payload)
        self.deliveries.append(Delivery(f"redeem-{n}", "/webhooks/twitch", body, headers))
        body2, headers2 = signed_request(TWITCH_SECRET, payload)  # same redemption id, new message id
        self.renamed.append(Delivery(f"redeem-{n}-renamed", "/webhooks/twitch", body2, headers2))
        self.expected.append(Expected("twitch", user, "chaos-potion", 2))

    def _patreon(self, n: int, user: str) -> None:
        member = Member(member_id=str(uuid.UUID(int=n + 1)), user_id=str(80_000 + n), discord_id=user, status="Paid")
        body = encode(member.document())
        signature = hmac.new(PATREON_SECRET.encode(), body, hashlib.md5).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Patreon-Event": "members:pledge:create",
            "X-Patreon-Signature": signature,
        }
        self.deliveries.append(Delivery(f"patreon-{n}", "/webhooks/patreon", body, headers))
        self.expected.append(Expected("patreon", user, "chaos-crate", 3))

    def _api(self, n: int, user: str) -> None:
        body = json.dumps(
            {
                "guild_id": GUILD,
                "user_id": user,
                "items": [{"item_id": "chaos-coin", "amount": 4}],
                "idempotency_key": f"chaos-order-{n}",
            }
        ).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        self.deliveries.append(Delivery(f"api-{n}", "/grants", body, headers))
        self.expected.append(Expected("api", user, "chaos-coin", 4))

    # ---------------------------------------------------------------- sending

    def send(self, base_url: str, delivery: Delivery, *, deadline_s: float = 60.0) -> int:
        """POST ``delivery`` as a source would: again after a 5xx or a connection error, until it is answered.

        Returns the final status (2xx expected; a 4xx is recorded as a failure).
        """
        deadline = time.monotonic() + deadline_s
        delay = 0.2
        with requests.Session() as session:
            session.trust_env = False
            while True:
                try:
                    response = session.post(
                        base_url + delivery.path, data=delivery.body, headers=delivery.headers, timeout=10
                    )
                    status = response.status_code
                except requests.RequestException:
                    status = 0
                self.log.add(status)
                if 200 <= status < 300:
                    return status
                if 400 <= status < 500 or time.monotonic() > deadline:
                    with self.log.lock:
                        self.log.failures.append(f"{delivery.name}: HTTP {status}")
                    return status
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def send_pair(self, base_url: str, delivery: Delivery, pool: ThreadPoolExecutor) -> list[Any]:
        """Send ``delivery`` twice at the same moment (two connections released by one barrier)."""
        barrier = threading.Barrier(2)

        def one() -> int:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=10)
            return self.send(base_url, delivery)

        return [pool.submit(one), pool.submit(one)]

    def run(self, base_url: str, *, later_s: float = 2.0, spread_s: float = 0.0) -> None:
        """Every delivery twice at once; after ``later_s`` once more (and each redemption under a new message id).

        ``spread_s`` spreads the first sends evenly over that many seconds (a trickle instead of a burst).
        """
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="load") as pool:
            futures = []
            gap = spread_s / max(1, len(self.deliveries))
            for delivery in self.deliveries:
                futures += self.send_pair(base_url, delivery, pool)
                if gap:
                    time.sleep(gap)
            for future in futures:
                future.result()
            time.sleep(later_s)
            later = [pool.submit(self.send, base_url, d) for d in [*self.deliveries, *self.renamed]]
            for future in later:
                future.result()


# --------------------------------------------------------------------------------------------- processes


def procfile_args(kind: str, port: int = 8000) -> list[str]:
    """The Procfile's command for ``kind`` as an argument list (``$PORT`` filled in)."""
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            return command.strip().replace("${PORT:-8000}", str(port)).split()
    raise LookupError(f"no {kind} process in the Procfile")


class ClusterStartError(RuntimeError):
    """A process of the cluster did not come up (its log's last lines are in the message)."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)


@dataclass(frozen=True)
class ClusterConfig:
    policy: str
    workers: int = 2
    threads: int = 4
    #: Clock shift (seconds) per worker index; missing = 0.
    skew_s: tuple[float, ...] = ()
    #: Workers reach Redis through a :class:`BlackholeProxy`.
    via_proxy: bool = False
    #: Redis is a Sentinel group (primary, replica, sentinel); the processes get ``REDIS_SENTINELS``.
    sentinel: bool = False
    extra_env: tuple[tuple[str, str], ...] = ()


class Cluster:
    """Redis, simulator, web and workers for one scenario run, all under ``workdir``."""

    def __init__(self, workdir: Path, config: ClusterConfig, links: dict[str, str]) -> None:
        self.workdir = workdir
        self.config = config
        self.group = SentinelGroup(workdir / "sentinel") if config.sentinel else None
        #: the private Redis; under Sentinel the group's first primary.
        self.redis = self.group.nodes[0] if self.group is not None else PrivateRedis(workdir)
        self.sim = WetbotSimulator(keys={API_KEY: GUILD}, limit=LIMIT, window_s=WINDOW_S)
        self.proxy: BlackholeProxy | None = None
        self.web_port = free_port()
        self.rewards_file = workdir / "rewards.toml"
        self.rewards_file.write_text(rewards_toml(links), encoding="utf-8")
        self.web: Proc | None = None
        self.workers: list[Proc | None] = [None] * config.workers
        self._started = 0
        self.keys = Keys(PREFIX)
        self._client: Redis | None = None
        self._client_port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self, *, redis_url: str | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WETBOT_", "REDIS_", "SENTRY_", "GRANTS_", "TWITCH_", "PATREON_"))
        }
        env.update(
            REDIS_URL=redis_url or self.redis.url,
            REDIS_KEY_PREFIX=PREFIX,
            WETBOT_API_URL=self.sim.url,
            WETBOT_API_KEY=API_KEY,
            WETBOT_RATE_LIMIT=f"{LIMIT}/{WINDOW_S:g}s",
            WETBOT_TIMEOUT_S=f"{TIMEOUT_S:g}",
            WETBOT_RETRY_BACKOFF_S="0.2",
            WETBOT_AUTH_PAUSE_S="1",
            AMBIGUOUS_POLICY=self.config.policy,
            GRANTS_API_TOKEN=TOKEN,
            TWITCH_WEBHOOK_SECRET=TWITCH_SECRET,
            PATREON_WEBHOOK_SECRET=PATREON_SECRET,
            REWARDS_FILE=str(self.rewards_file),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
        )
        if self.group is not None:
            env.update(self.group.env())
        env.update(dict(self.config.extra_env))
        return env

    def ledger(self) -> Ledger:
        """The ledger on the private Redis; under Sentinel on the node the sentinel names master *now*
        (a client that stayed on a demoted primary would read what the failover dropped).

        Raises:
          RedisError: under Sentinel, while no master is named.
        """
        if self.group is not None:
            port = self.group.master_port()
            if port is None:
                raise RedisError("the sentinel names no master right now")
            if port != self._client_port and self._client is not None:
                self._client.close()
                self._client = None
            self._client_port = port
        if self._client is None:
            self._client = self.group.node(self._client_port).client() if self.group else self.redis.client()
        return Ledger(self._client, self.keys)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self.group is not None:
            self.group.start()
        else:
            self.redis.start()
        self.sim.start()
        if self.config.via_proxy:
            self.proxy = BlackholeProxy(self.redis.port)
        self.web = self._spawn("web", procfile_args("web", self.web_port), self.env())
        for index in range(self.config.workers):
            self.workers[index] = self._spawn_worker(index)
        self._wait_web()
        for proc in self.workers:
            assert proc is not None
            self._wait_worker(proc)

    def stop(self) -> None:
        procs = [p for p in [self.web, *self.workers] if p is not None]
        for proc in procs:
            proc.signal_group(signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)
        if self._client is not None:
            self._client.close()
        if self.proxy is not None:
            self.proxy.stop()
        self.sim.stop()
        if self.group is not None:
            self.group.stop()
        else:
            self.redis.stop()

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        self._started += 1
        log = self.workdir / f"{name}.{self._started}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return Proc(name, popen, log)

    def _spawn_worker(self, index: int) -> Proc:
        args = procfile_args("worker")
        env = self.env(redis_url=self.proxy.url if self.proxy is not None else None)
        skew = self.config.skew_s[index] if index < len(self.config.skew_s) else 0.0
        if skew:
            # The Procfile runs ``python -m worker`` (Dramatiq's CLI for ``worker.actors``); the skewed clock
            # wraps Dramatiq's CLI itself, so it gets the same arguments after the module name.
            assert args[:3] == ["python", "-m", "worker"], args
            args = [sys.executable, "-m", "devtools.chaos.skewed_clock", "worker.actors", *args[3:]]
            env["WBR_CHAOS_CLOCK_SKEW_S"] = repr(skew)
        if self.config.threads != 4:
            args[args.index("--threads") + 1] = str(self.config.threads)
        return self._spawn(f"worker-{index}", args, env)

    def _wait_web(self) -> None:
        assert self.web is not None
        web = self.web

        def up() -> bool:
            if not web.alive():
                raise ClusterStartError(f"web exited: {web.text()[-2000:]}")
            try:
                return requests.get(self.base_url + "/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout_s=30, interval_s=0.1, what="web ready")

    def _wait_worker(self, proc: Proc) -> None:
        def up() -> bool:
            if not proc.alive():
                raise ClusterStartError(f"{proc.name} exited ({proc.popen.returncode}): {proc.text()[-2000:]}")
            return WORKER_READY in proc.text()

        wait_until(up, timeout_s=30, interval_s=0.1, what=f"{proc.name} ready")

    # ---------------------------------------------------------------- faults

    def worker(self, index: int) -> Proc:
        proc = self.workers[index]
        assert proc is not None
        return proc

    def kill_worker(self, index: int) -> None:
        """SIGKILL the worker's whole process group (master and worker process)."""
        proc = self.worker(index)
        proc.signal_group(signal.SIGKILL)
        proc.popen.wait(timeout=10)

    def double_sigterm(self, index: int, gap_s: float = 0.05) -> int:
        """SIGTERM the worker's process group twice (as Heroku does); returns its exit code."""
        proc = self.worker(index)
        proc.signal_group(signal.SIGTERM)
        time.sleep(gap_s)
        proc.signal_group(signal.SIGTERM)
        try:
            return proc.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.signal_group(signal.SIGKILL)
            return proc.popen.wait(timeout=10)

    def restart_worker(self, index: int, *, wait: bool = True) -> None:
        proc = self.worker(index)
        if proc.alive():
            proc.signal_group(signal.SIGKILL)
            proc.popen.wait(timeout=10)
        self.workers[index] = self._spawn_worker(index)
        if wait:
            self._wait_worker(self.worker(index))

    def restart_redis(self, down_s: float = 1.0) -> None:
        """SIGKILL Redis, wait ``down_s``, start it again on the same port from its append-only file."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self.redis.kill()
        time.sleep(down_s)
        self.redis.start()

    def cli(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``wetbot-rewards <args>`` with the service's environment (its own process group)."""
        return self._spawn("cli", [str(BIN / "wetbot-rewards"), *args], self.env()).popen

    # ---------------------------------------------------------------- observation

    def grants(self) -> list[Grant]:
        """Every grant in the ledger (raises ``RedisError`` while Redis is away)."""
        return self.ledger().list_grants(limit=1_000_000)

    def in_state(self, *states: GrantState) -> list[Grant]:
        try:
            return [g for g in self.grants() if g.state in states]
        except RedisError:
            return []

    def logs(self) -> str:
        return "\n".join(f"==> {p.name}: {p.log}" for p in [self.web, *self.workers] if p is not None)


def rewards_toml(links: dict[str, str]) -> str:
    lines = [
        f'guild_id = "{GUILD}"',
        "",
        "[[twitch.rules]]",
        'name = "chaos-cheer"',
        'event = "channel.cheer"',
        'items = [{ id = "chaos-gem", amount = 1 }]',
        "",
        "[[twitch.rules]]",
        'name = "chaos-redeem"',
        'event = "channel.channel_points_custom_reward_redemption.add"',
        f'reward_id = "{SAMPLE_REWARD_ID}"',
        'items = [{ id = "chaos-potion", amount = 2 }]',
        "",
        "[[patreon.rules]]",
        'name = "chaos-pledge"',
        'event = "members:pledge:create"',
        'items = [{ id = "chaos-crate", amount = 3 }]',
        "",
        "[twitch.links]",
        *(f'"{twitch}" = "{discord}"' for twitch, discord in sorted(links.items())),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- results


@dataclass
class Result:
    """One scenario run, measured against the expected grants."""

    scenario: str
    policy: str
    events_sent: int
    grants_expected: int
    #: expected grants applied at least once.
    applied: int
    #: expected grants never applied and not held ``unknown``.
    lost: int
    #: expected grants applied two or more times.
    doubled: int
    #: grants the ledger holds ``unknown`` (for an operator).
    unknown: int
    #: grants not in a final state when the drain deadline passed.
    stranded: int
    #: requests that reached the simulator minus grants applied.
    slots_wasted: int
    #: 429s the service caused (injected 429 bursts excluded).
    too_many: int
    drain_s: float
    drained: bool
    #: the ledger contradicts the simulator: ``delivered`` but never applied, or ``dead``/``cancelled`` but applied.
    ledger_wrong: int = 0
    #: outcomes the client could not know (``is_ambiguous`` requests that reached the simulator, grants in
    #: flight at a kill): how many ``unknown`` grants the faults can explain.
    ambiguous: int = 0
    injected_429: int = 0
    #: ``unknown`` is a right answer whatever the policy (the world moved: ``Scenario.unknown_allowed``).
    unknown_allowed: bool = False
    #: ``unknown`` grants whose maybe-applied request went out without a baseline (no spare rate slot, see
    #: ``worker/verify.py``): no read-back can judge them, so ``verify`` holds them too.
    unknown_unjudgeable: int = 0
    send_failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """What misses the targets (0 lost, 0 doubled, 0 stranded, 0 x 429, unknown only as the policy allows)."""
        out = []
        for name in ("lost", "doubled", "stranded", "too_many", "ledger_wrong"):
            if getattr(self, name):
                out.append(f"{name}={getattr(self, name)} {self.details.get(name, [])[:5]}")
        if self.policy == "hold" or self.unknown_allowed:
            allowed = self.ambiguous
        else:
            allowed = min(self.ambiguous, self.unknown_unjudgeable)
        if self.unknown > allowed:
            out.append(
                f"unknown={self.unknown} > {allowed} explained by the faults {self.details.get('unknown', [])[:5]}"
            )
        if self.send_failures:
            out.append(f"producers refused deliveries: {self.send_failures[:5]}")
        return out


TABLE_HEADER = (
    "| scenario | policy | events sent | grants expected | applied | lost | doubled | held unknown | stranded "
    "| slots wasted | 429s | time to drain | ledger wrong |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def table_row(result: Result) -> str:
    drain = f"{result.drain_s:.1f} s" + ("" if result.drained else " (deadline)")
    unknown = f"{result.unknown} (≤{result.ambiguous} ambiguous)" if result.unknown else "0"
    if result.unknown_unjudgeable:
        unknown += f", {result.unknown_unjudgeable} sent without a baseline"
    return (
        f"| {result.scenario} | {result.policy} | {result.events_sent} | {result.grants_expected} | {result.applied} "
        f"| {result.lost} | {result.doubled} | {unknown} | {result.stranded} | {result.slots_wasted} "
        f"| {result.too_many} | {drain} | {result.ledger_wrong} |"
    )


def print_table(results: list[Result]) -> None:
    print(TABLE_HEADER)
    for result in results:
        print(table_row(result))


def drain(cluster: Cluster, load: Load, *, deadline_s: float, started: float) -> tuple[float, bool]:
    """Wait until every expected grant is in the ledger and every grant is final; (seconds since ``started``, done)."""
    users = set(load.users())
    deadline = time.monotonic() + deadline_s

    def done() -> bool:
        try:
            grants = cluster.grants()
        except RedisError:
            return False
        present = {g.user_id for g in grants}
        return users <= present and all(g.state in FINAL_STATES for g in grants)

    while time.monotonic() < deadline:
        if done():
            return time.monotonic() - started, True
        time.sleep(0.2)
    return time.monotonic() - started, False


def is_ambiguous(record: RequestRecord) -> bool:
    """True when the client that sent ``record`` could not know whether it was applied: an ambiguous fault,
    a 5xx, no answer, an answer held past the client's timeout, or a POST's 200 in an ``AMBIGUOUS_SHAPES``."""
    return (
        record.fault in AMBIGUOUS_FAULTS
        or record.status >= 500
        or record.status == NO_RESPONSE
        or record.fault == "slow_after"
        or (record.method == "POST" and record.status == 200 and record.shape in AMBIGUOUS_SHAPES)
    )


def sent_without_baseline(grant: Grant) -> bool:
    """True when ``grant``'s last request went out without a baseline read before it: a read-back cannot
    judge a maybe-applied outcome of it (``worker/verify.py``)."""
    return grant.baseline_missing != ""


def measure(
    scenario: str, cluster: Cluster, load: Load, *, drain_s: float, drained: bool, disrupted_in_flight: int = 0
) -> Result:
    """Compare the simulator's applied changes and the ledger with ``load.expected``."""
    sim = cluster.sim
    applied = Counter(c.user_id for c in sim.applied() if c.kind == "inventory")
    requests_seen = sim.requests()
    grants: list[Grant] = []
    for _ in range(50):
        try:
            grants = cluster.grants()
            break
        except RedisError:
            time.sleep(0.2)
    by_user: dict[str, list[Grant]] = {}
    for grant in grants:
        by_user.setdefault(grant.user_id, []).append(grant)
    details: dict[str, list[str]] = {}

    def note(kind: str, text: str) -> None:
        details.setdefault(kind, []).append(text)

    lost = doubled = applied_once_or_more = ledger_wrong = 0
    for expected in load.expected:
        count = applied[expected.user_id]
        states = [g.state for g in by_user.get(expected.user_id, [])]
        label = f"{expected.source}:{expected.user_id[-4:]}={count}x/{','.join(states) or 'no grant'}"
        if count:
            applied_once_or_more += 1
        if count == 0 and GrantState.UNKNOWN not in states:
            lost += 1
            note("lost", label)
        if count >= 2:
            doubled += 1
            note("doubled", label)
        if count == 0 and GrantState.DELIVERED in states:
            ledger_wrong += 1
            note("ledger_wrong", label)
        if count >= 1 and any(s in (GrantState.DEAD, GrantState.CANCELLED) for s in states):
            ledger_wrong += 1
            note("ledger_wrong", label)
        if len(states) > 1:
            note("duplicate ledger entries", label)
    unknown = [g for g in grants if g.state == GrantState.UNKNOWN]
    for grant in unknown:
        note("unknown", f"{grant.user_id[-4:]}={applied[grant.user_id]}x: {grant.last_error[:80]}")
    stranded = [g for g in grants if g.state not in FINAL_STATES]
    for grant in stranded:
        note("stranded", f"{grant.user_id[-4:]}:{grant.state.value}")
    ambiguous = sum(1 for r in requests_seen if is_ambiguous(r))
    too_many = sum(1 for r in requests_seen if r.status == 429 and r.fault is None)
    injected_429 = sum(1 for r in requests_seen if r.status == 429 and r.fault is not None)
    return Result(
        scenario=scenario,
        policy=cluster.config.policy,
        events_sent=load.log.attempts,
        grants_expected=len(load.expected),
        applied=applied_once_or_more,
        lost=lost,
        doubled=doubled,
        unknown=len(unknown),
        stranded=len(stranded),
        slots_wasted=len(requests_seen) - applied_once_or_more,
        too_many=too_many,
        drain_s=drain_s,
        drained=drained,
        ledger_wrong=ledger_wrong,
        ambiguous=ambiguous + disrupted_in_flight,
        unknown_unjudgeable=sum(1 for g in unknown if sent_without_baseline(g)),
        injected_429=injected_429,
        send_failures=list(load.log.failures),
        details=details,
    )


@contextlib.contextmanager
def background(target: Callable[[], None], name: str) -> Iterator[threading.Thread]:
    """Run ``target`` in a thread; joined (and its exception re-raised) on exit."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
