"""What the web app holds for its lifetime: settings, Redis, ledger, rewards, keys by guild, links, audit log."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from config.keyring import Keyring, check_rule_guilds
from config.rewards import RewardsConfig, load_rewards
from config.settings import Settings
from producers.audit import AuditLog
from producers.creation_batcher import CreationBatcher
from producers.inbox import EventInbox
from producers.links import LinkStore
from producers.twitch.redemptions import RedemptionBook
from producers.twitch.reward_catalogue import RewardIdsCache
from worker.connections import connect_redis, connect_redis_async
from worker.eta import EtaEstimator
from worker.keys import Keys
from worker.ledger import Ledger
from worker.redis_checks import CachedRedisCheck
from worker.replication import ReplicaAcks


@dataclass(frozen=True)
class AppState:
    """Shared parts, opened in the lifespan and reached through ``app_state(request)``."""

    settings: Settings
    redis: Redis
    #: the same Redis for asyncio routes (webhooks), so the hot path needs no thread hop.
    aredis: AsyncRedis
    #: creates webhook events' grants on ``aredis``, concurrent events in one call.
    creator: CreationBatcher
    keys: Keys
    ledger: Ledger
    rewards: RewardsConfig
    #: the API key of each guild (``POST /grants`` refuses a guild without one; empty: the web was given none).
    keyring: Keyring
    #: when a waiting grant is expected to go out (``GET /grants/{id}``).
    eta: EtaEstimator
    links: LinkStore
    #: persistence/eviction check for ``GET /readyz``, cached so probes cost no CONFIG call.
    redis_check: CachedRedisCheck
    #: every verified webhook delivery with what handling it did.
    inbox: EventInbox
    #: operator actions (console, later API and CLI): who, what, when.
    audit: AuditLog
    #: the channel-point redemptions whose fate Twitch is told (``producers.twitch.redemptions``).
    redemptions: RedemptionBook
    #: the reward titles the last reward sync resolved to ids, re-read every few seconds (the event path).
    reward_ids: RewardIdsCache = field(default_factory=RewardIdsCache)


def checked_rewards(settings: Settings) -> tuple[RewardsConfig, Keyring]:
    """The rewards file and the keys by guild, checked as the web app checks them at start.

    Raises:
      ConfigError: the rewards file is invalid or missing (outside demo mode), or a rule's guild has no key.
    """
    rewards = load_rewards(settings.rewards_file, missing_ok=settings.demo_mode)
    keyring = settings.keyring(rewards.guild_id)
    check_rule_guilds(keyring, rewards.rule_guilds(), source=str(settings.rewards_file))
    return rewards, keyring


def open_state(settings: Settings, rewards: RewardsConfig, keyring: Keyring) -> AppState:
    """Connect and build the parts (the web app's lifespan, and the CLI's ``events reprocess``)."""
    redis = connect_redis(settings)
    aredis = connect_redis_async(settings)
    keys = Keys(settings.redis_key_prefix)
    acks = ReplicaAcks.from_settings(settings)
    return AppState(
        settings=settings,
        redis=redis,
        aredis=aredis,
        creator=CreationBatcher(aredis, keys, acks=acks),
        keys=keys,
        ledger=Ledger(redis, keys, acks=acks),
        rewards=rewards,
        keyring=keyring,
        eta=EtaEstimator.build(redis, settings, keyring),
        links=LinkStore.for_rewards(redis, keys, rewards, acks=acks),
        redis_check=CachedRedisCheck(redis),
        inbox=EventInbox(redis, aredis, keys),
        audit=AuditLog(redis, keys),
        redemptions=RedemptionBook(redis, keys),
    )


async def close_state(state: AppState) -> None:
    state.redis.close()
    await state.aredis.aclose()


def app_state(request: Request) -> AppState:
    """The running app's ``AppState`` (a FastAPI dependency)."""
    state: AppState = request.app.state.wetbot
    return state
