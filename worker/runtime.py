"""Builds the worker's parts from settings: keys by guild, ledger, schedule, limiter, clients, deliverer, middleware.

Redis clients come from ``worker.connections``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dramatiq
from redis import Redis

from config.errors import ConfigError
from config.keyring import Keyring, check_rule_guilds
from config.rewards import load_rewards
from config.settings import DEFAULT_LEDGER_RETENTION_DAYS, SECONDS_PER_DAY, Settings
from worker.delivery import Deliverer
from worker.guild_clients import GuildClients
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter
from worker.replication import ReplicaAcks
from worker.retention import LedgerRetention
from worker.schedule import Backpressure, Reconciler, Schedule
from worker.timings import DEFAULT_TIMINGS, Timings

logger = logging.getLogger("wetbot_rewards.worker")


def worker_keyring(settings: Settings) -> Keyring:
    """The API key of every guild this worker delivers for, checked against the rewards file's rules.

    Raises:
      ConfigError: no key at all; the two key settings disagree; or a rule's guild has no key (one line
        naming the rule and the guild: its grants could never go out).
      RewardsFileError: the rewards file is invalid.
    """
    rewards = load_rewards(settings.rewards_file, missing_ok=settings.demo_mode)
    keyring = settings.keyring(rewards.guild_id)
    if keyring.empty:
        raise ConfigError(
            "WETBOT_API_KEY: not set (nor WETBOT_API_KEYS); the worker needs the guild's WetBot API key"
            " (`make run` without a key starts a demo simulator instead)",
            variables=("WETBOT_API_KEY",),
        )
    check_rule_guilds(keyring, rewards.rule_guilds(), source=str(settings.rewards_file))
    return keyring


def build_deliverer(
    settings: Settings,
    redis: Redis,
    *,
    keyring: Keyring | None = None,
    sleep: Callable[[float], None] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
) -> Deliverer:
    """The deliverer for every configured key (``worker_keyring`` unless ``keyring`` is given), waiting,
    holding and retrying as ``timings`` say."""
    keys = Keys(settings.redis_key_prefix)
    clients = GuildClients(keyring or worker_keyring(settings), settings.wetbot_api_url, settings.wetbot_timeout_s)
    extra = {} if sleep is None else {"sleep": sleep}
    return Deliverer(
        settings=settings,
        redis=redis,
        keys=keys,
        ledger=Ledger(redis, keys, acks=ReplicaAcks.from_settings(settings)),
        limiter=SlidingWindowLimiter(redis, keys, settings.wetbot_rate_limit, timings=timings),
        clients=clients,
        schedule=Schedule(
            redis, keys, backpressure=Backpressure(settings.wetbot_rate_limit, coalesce=settings.wetbot_coalesce)
        ),
        timings=timings,
        **extra,
    )


def key_parked_releaser(ledger: Ledger, keyring: Keyring) -> Callable[[], int]:
    """What releases grants parked for want of a key this worker has; returns how many moved.

    Guilds named in the keyring are released by name; with a fallback key
    (which serves every guild) every guild that has key-parked grants is.
    """

    def release() -> int:
        guilds = set(keyring.by_guild)
        if keyring.fallback is not None:
            guilds.update(ledger.key_parked_guilds())
        released = 0
        for guild in sorted(guilds):
            key_id = keyring.key_id_for(guild)
            if key_id is None:
                continue
            moved = ledger.release_key_parked(guild, key_id)
            if moved:
                logger.warning("guild %s has an API key again: %d parked grant(s) resume", guild, len(moved))
            released += len(moved)
        return released

    return release


def add_worker_middleware(
    broker: dramatiq.Broker,
    redis: Redis,
    keys: Keys,
    *,
    keyring: Keyring | None = None,
    schedule: Schedule | None = None,
    retention_s: float = DEFAULT_LEDGER_RETENTION_DAYS * SECONDS_PER_DAY,
    event_retention_s: float | None = None,
) -> None:
    """The worker's own middleware: the reconciler (due grants become messages, key-parked grants whose key
    is back resume) and retention of the ledger and (``event_retention_s``) the event inbox.

    ``schedule`` is the deliverer's: sharing it lets a hand-back wake the reconciler (``Schedule.wakeup``).
    """
    release = None if keyring is None else key_parked_releaser(Ledger(redis, keys), keyring)
    broker.add_middleware(Reconciler(schedule or Schedule(redis, keys), release_key_parked=release))
    broker.add_middleware(LedgerRetention(redis, keys, retention_s=retention_s, event_retention_s=event_retention_s))
