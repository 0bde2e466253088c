"""K guilds with a key each, one strict simulator serving them all, and real worker processes: what
``bench/drain.py`` and its isolation scenario (``bench/drain_isolation.py``) drain backlogs through.

A :class:`Fleet` boots its ``dramatiq worker.actors`` processes **before** any grant exists and waits until
each has polled the queue (its Dramatiq heartbeat is in Redis); the caller then writes its whole backlog in
one atomic create call (:meth:`Fleet.create`, the producers' own script). So every worker sees the whole
backlog at once, as if it had been waiting there, while neither a worker's boot (imports, about a CPU
second each) nor one process starting before the other is counted in a drain time or a CPU figure.

Every figure is taken on the simulator's side, from its request log and the arrival times its limiter uses
(``RequestRecord.mono``, this process's monotonic clock, so creation times compare directly).
"""

from __future__ import annotations

import math
import secrets
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO

from bench.rig import BOOT_TIMEOUT_S, GUILD, dramatiq_workers, service_env, stop, wetbot_simulator
from config.settings import RateLimit, load_settings
from simulator.wetbot import RequestRecord, key_fingerprint
from worker import redis_values as values
from worker.broker import QUEUE_NAME
from worker.connections import connect_redis
from worker.creation import Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SAFETY_MARGIN_FRACTION, SAFETY_MARGIN_S

#: Item ids the backlogs draw from: few, so a merged request stays far below WETBOT_MAX_ITEMS_PER_REQUEST.
ITEMS = ("gem", "coin", "star")


@dataclass(frozen=True)
class FleetConfig:
    """What every drain of one invocation shares."""

    limit: int
    window_s: float
    processes: int
    threads: int
    redis_url: str
    http_timeout_s: float

    @property
    def effective_window_s(self) -> float:
        """The window our limiter spaces slots by: W plus ``SAFETY_MARGIN_S`` and ``SAFETY_MARGIN_FRACTION`` of W
        (``worker/limiter.py``), so the fastest drain it allows is this many seconds per window, not W."""
        return self.window_s + SAFETY_MARGIN_S + SAFETY_MARGIN_FRACTION * self.window_s

    def ideal_s(self, requests: int, *, strict: bool = False) -> float:
        """Seconds from a key's first request to the start of its last, for ``requests`` at full rate: the last
        one starts ``floor((R-1)/L)`` windows after the first (the margin-free W with ``strict``)."""
        window = self.window_s if strict else self.effective_window_s
        return math.floor(max(requests - 1, 0) / self.limit) * window


def guild_ids(count: int) -> list[str]:
    """``count`` distinct 18-digit guild ids, ``bench.rig.GUILD`` first, the same in every run."""
    return [GUILD] + [str(222_222_222_222_222_000 + index) for index in range(1, count)]


def api_keys_setting(keys_by_guild: Mapping[str, str]) -> str:
    """``WETBOT_API_KEYS`` for a guild -> key mapping: ``<guild id>=<key>,...``."""
    return ",".join(f"{guild}={key}" for guild, key in keys_by_guild.items())


def user_id(guild_index: int, user_index: int) -> str:
    """A distinct 18-digit Discord user id per (guild, user) of a backlog."""
    return str(700_000_000_000_000_000 + guild_index * 1_000_000 + user_index)


def backlog(
    guilds: Sequence[str], users_per_guild: int, grants_per_user: int, *, tag: str, first_user: int = 0
) -> list[NewGrant]:
    """Grants interleaved round-robin over the guilds, then over each guild's users (queue order is mixed, as
    live traffic would be); the j-th grant of a user carries ``ITEMS[j % 3]`` x (j + 1)."""
    grants: list[NewGrant] = []
    for round_ in range(grants_per_user):
        for user in range(first_user, first_user + users_per_guild):
            for index, guild in enumerate(guilds):
                grants.append(
                    NewGrant(
                        guild_id=guild,
                        user_id=user_id(index, user),
                        items=(GrantItem(ITEMS[round_ % len(ITEMS)], float(round_ + 1)),),
                        source="bench",
                        idempotency_key=f"bench:{tag}:{guild}:{user}:{round_}",
                    )
                )
    return grants


def probe_grant(fleet: Fleet, index: int) -> NewGrant:
    """The ``index``-th one-gem grant for the fleet's second guild (B): the probe whose pickup an isolation
    figure times while the first guild (A) drains its backlog."""
    return NewGrant(
        guild_id=fleet.guilds[1],
        user_id=user_id(1, index),
        items=(GrantItem("gem", 1.0),),
        source="bench",
        idempotency_key=f"bench:{fleet.prefix}:b:{index}",
    )


@dataclass
class KeyFigures:
    """One key's requests as the simulator saw them."""

    guild: str
    requests: int = 0
    #: every request but a POST answered 200 (a 429, a read-back GET, an error), as "<method> <status>"
    unusual: Counter[str] = field(default_factory=Counter)
    first_mono: float = math.inf
    last_mono: float = -math.inf
    max_in_window: int = 0


@dataclass
class Fleet:
    """A context manager: the simulator serves and the workers run inside the block.

    ``coalesce`` is ``WETBOT_COALESCE`` for the workers. ``on_request`` sees every request (from the
    simulator's handler threads). ``module`` is what the workers run.
    """

    config: FleetConfig
    keys: int
    prefix: str
    log: IO[bytes]
    coalesce: bool = True
    on_request: Callable[[RequestRecord], None] | None = None
    #: more settings for the workers (e.g. ``AMBIGUOUS_POLICY``).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: the module the ``dramatiq`` workers run (``bench/backlog_counted_actors.py`` also counts the actor's runs)
    module: str = "worker.actors"
    guilds: list[str] = field(init=False)
    api_keys: dict[str, str] = field(init=False)
    _processes: list[subprocess.Popen[bytes]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.guilds = guild_ids(self.keys)
        self.api_keys = {guild: secrets.token_hex(16) for guild in self.guilds}  # fresh: no credential written
        self.sim = wetbot_simulator(
            {key: guild for guild, key in self.api_keys.items()},
            limit=self.config.limit,
            window_s=self.config.window_s,
            on_request=self.on_request,
        )

    def __enter__(self) -> Fleet:
        config = self.config
        self.sim.start()
        rate = str(RateLimit(config.limit, config.window_s))
        settings = load_settings(
            _env_file=None, redis_url=config.redis_url, redis_key_prefix=self.prefix, wetbot_rate_limit=rate
        )
        self.redis = connect_redis(settings)
        self.ledger = Ledger(self.redis, Keys(self.prefix))
        env = service_env(
            config.redis_url,
            self.prefix,
            {
                "WETBOT_API_URL": self.sim.url,
                "WETBOT_API_KEYS": api_keys_setting(self.api_keys),
                "WETBOT_RATE_LIMIT": rate,
                "WETBOT_TIMEOUT_S": str(config.http_timeout_s),
                "WETBOT_COALESCE": "true" if self.coalesce else "false",
                **self.extra_env,
            },
        )
        self._processes = dramatiq_workers(
            self.module, QUEUE_NAME, processes=config.processes, threads=config.threads, env=env, log=self.log
        )
        try:
            self._wait_booted()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        stop(self._processes)
        self._processes = []
        self.sim.stop()
        self.redis.close()

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The ``dramatiq`` masters; each leads the process group of its worker process."""
        return tuple(process.pid for process in self._processes)

    def _wait_booted(self) -> None:
        """Until every worker process's consumer has polled the queue once (a heartbeat per process)."""
        heartbeats = f"{Keys(self.prefix).dramatiq_namespace}:__heartbeats__"
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while values.integer(self.redis.zcard(heartbeats)) < self.config.processes:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not poll the queue within {BOOT_TIMEOUT_S:g} s")
            time.sleep(0.05)

    def check_alive(self) -> None:
        """Raises RuntimeError when a worker process has exited."""
        dead = [p for p in self._processes if p.poll() is not None]
        if dead:
            status = dead[0].returncode
            raise RuntimeError(f"{len(dead)} worker process(es) exited (status {status}; log {self.log.name})")

    def create(self, grants: Sequence[NewGrant]) -> float:
        """Queue ``grants`` (ledger entries, schedule entries, queue messages) in one atomic step; returns the
        ``time.monotonic()`` just before it."""
        started = time.monotonic()
        self.ledger.create_many([Planned(grant, Mode.ENQUEUE) for grant in grants])
        return started

    def wait_delivered(self, count: int, timeout_s: float) -> bool:
        """Until ``count`` grants are ``delivered`` (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self.ledger.counts()[GrantState.DELIVERED] < count:
            self.check_alive()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def api_records(self) -> list[RequestRecord]:
        """Every ``/api`` request the simulator answered, by arrival."""
        return [record for record in self.sim.requests() if record.path.startswith("/api/")]

    def per_key(self) -> list[KeyFigures]:
        """Requests per key (in guild order), with first and last arrival and the most in any W."""
        by_fp = {key_fingerprint(key): KeyFigures(guild) for guild, key in self.api_keys.items()}
        for record in self.api_records():
            figures = by_fp[record.key or ""]
            figures.requests += 1
            if (record.method, record.status) != ("POST", 200):
                figures.unusual[f"{record.method} {record.status}"] += 1
            figures.first_mono = min(figures.first_mono, record.mono)
            figures.last_mono = max(figures.last_mono, record.mono)
        for key in self.api_keys.values():
            by_fp[key_fingerprint(key)].max_in_window = self.sim.max_in_window(self.config.window_s, key=key)
        return [by_fp[key_fingerprint(self.api_keys[guild])] for guild in self.guilds]

    def exactly_once(self, grants: Sequence[NewGrant]) -> list[str]:
        """Problems, if any: a grant not ``delivered``, or a simulator total that differs from the ledger's sum
        of the grants' items for that (guild, user, item) (a lost or a doubled grant)."""
        expected: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for grant in grants:
            for item in grant.items:
                expected[(grant.guild_id, grant.user_id)][item.item_id] += item.amount
        problems: list[str] = []
        counts = self.ledger.counts()
        if counts[GrantState.DELIVERED] != len(grants):
            others = {state.value: n for state, n in counts.items() if n}
            problems.append(f"ledger states {others}, expected {len(grants)} delivered")
        for (guild, user), items in expected.items():
            have = self.sim.inventory(guild, user)
            if any(abs(have.get(item, 0.0) - amount) > 1e-9 for item, amount in items.items()):
                problems.append(f"{guild}/{user}: simulator has {have}, ledger sums {dict(items)}")
        return problems
