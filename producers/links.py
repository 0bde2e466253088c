"""Who is who: links from a platform's user id (Twitch, Patreon) to a Discord user id.

Static links come from the rewards file (``[twitch.links]``); run-time links
live in Redis and take precedence, so a viewer can be re-linked without editing
the file. A run-time link is an operator's (``POST /links``, ``wetbot-rewards
links add``, a patron's connected Discord account) or self-made (a viewer's
link-reward redemption, ``add_self``). Anyone can redeem, so a self-made link
never replaces a static or operator link, is never moved by another
redemption, and one Discord id takes at most ``max_twitch_accounts`` of them
(``[twitch]`` in the rewards file): otherwise a viewer could take the
streamer's rewards, or farm one Discord account with many Twitch accounts.
Every change is one script (``worker/lua/set_link.lua``), so two redemptions at
once cannot both pass the cap. Links stored before origins were kept count as
operator links. With replicas to wait for (``acks``, ``worker.replication``)
every change is confirmed like a create: a link a failover could lose raises
``NotReplicated`` instead of standing only on the primary.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from redis import Redis

from config.domain import InvalidInput, discord_id, platform_user_id
from config.rewards import RewardsConfig
from worker import redis_values as values
from worker.keys import Keys
from worker.replication import NO_ACKS, ReplicaAcks, run_confirmed
from worker.scripts import load_script

#: Platforms whose users can be linked.
PLATFORMS = ("twitch", "patreon")
#: ``worker/lua/set_link.lua``
SCRIPT = "set_link"


class SelfLink(StrEnum):
    """What a self-made link request (``LinkStore.add_self``) came to: made, there already, or why not."""

    LINKED = "linked"
    ALREADY = "already"
    STATIC = "static"
    OPERATOR = "operator"
    SELF_MADE = "self-made"
    FULL = "full"

    @property
    def refused(self) -> bool:
        return self not in (SelfLink.LINKED, SelfLink.ALREADY)

    @property
    def why(self) -> str:
        """The refusal in words, for logs (empty when the link stands)."""
        return _WHY.get(self, "")


_WHY = {
    SelfLink.STATIC: "the rewards file links this user to another Discord id",
    SelfLink.OPERATOR: "an operator linked this user to another Discord id",
    SelfLink.SELF_MADE: "an earlier redemption linked this user to another Discord id; only an operator moves it",
    SelfLink.FULL: "that Discord id has as many self-made links as max_twitch_accounts allows",
}


class LinkStore:
    """Reads and writes links.

    Parameters:
      redis: client for the service's Redis.
      keys: key layout.
      static: platform -> {external id: Discord id} from the rewards file.
      acks: the replicas every change must reach (``worker.replication``); none by default.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        static: Mapping[str, Mapping[str, str]] | None = None,
        *,
        acks: ReplicaAcks = NO_ACKS,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._static = {platform: dict(links) for platform, links in (static or {}).items()}
        self._script = load_script(redis, SCRIPT)
        self._acks = acks

    @property
    def redis(self) -> Redis:
        """The client the links are read and written on."""
        return self._redis

    @classmethod
    def for_rewards(cls, redis: Redis, keys: Keys, rewards: RewardsConfig, *, acks: ReplicaAcks = NO_ACKS) -> LinkStore:
        """The store with the rewards file's static links (``[twitch.links]``)."""
        return cls(redis, keys, {"twitch": rewards.twitch.links}, acks=acks)

    def resolve(self, platform: str, external_id: str) -> str | None:
        """The Discord user linked to ``external_id`` on ``platform``, if any."""
        found = values.optional_raw(self._redis.hget(self._keys.links(platform), external_id))
        if found is not None:
            return found.decode()
        return self._static.get(platform, {}).get(external_id)

    def static_user(self, platform: str, external_id: str) -> str | None:
        """The rewards file's link only (a run-time link, looked up in Redis, wins over it)."""
        return self._static.get(platform, {}).get(external_id)

    def add(self, platform: str, external_id: str, discord_user_id: str) -> None:
        """An operator's link: link (or re-link) ``external_id``, whoever made the old link.

        Raises ``ValueError`` on a malformed id; ``NotReplicated`` when too few replicas confirmed the link
        (it may stand on the primary only; linking again is safe).
        """
        check_link(platform, external_id, discord_user_id)
        self._run(platform, external_id, "operator", discord_user_id)

    def add_self(self, platform: str, external_id: str, discord_user_id: str, *, max_accounts: int) -> SelfLink:
        """A self-made link (a link reward), made only where it takes nothing from anyone (module docstring).

        Raises ``ValueError`` on a malformed id; ``NotReplicated`` as ``add`` (for a refusal too: it rests on
        links the replicas may not have).
        """
        check_link(platform, external_id, discord_user_id)
        static = self.static_user(platform, external_id) or ""
        return SelfLink(self._run(platform, external_id, "self", discord_user_id, static, str(max_accounts)))

    def remove(self, platform: str, external_id: str) -> bool:
        """Forget a run-time link; True when there was one. Static links stay (edit the rewards file).

        Raises ``NotReplicated`` as ``add`` (also for "there was none": an earlier, unconfirmed removal may
        have made it so).
        """
        return self._run(platform, external_id, "remove") == "removed"

    def all(self, platform: str) -> dict[str, tuple[str, str]]:
        """Every link of ``platform``: external id -> (Discord id, ``"runtime"``, ``"self"`` or ``"static"``).

        ``runtime`` is an operator's link, ``self`` one a viewer made by redemption.
        """
        out = {ext: (discord, "static") for ext, discord in self._static.get(platform, {}).items()}
        runtime = list(values.text_map(self._redis.hgetall(self._keys.links(platform))).items())
        pipe = self._redis.pipeline(transaction=False)
        for ext, discord in runtime:
            pipe.sismember(self._keys.self_links(platform, discord), ext)
        made_by_self = pipe.execute() if runtime else []
        for (ext, discord), by_self in zip(runtime, made_by_self, strict=True):
            out[ext] = (discord, "self" if by_self else "runtime")
        return out

    def _run(self, platform: str, external_id: str, mode: str, *args: str) -> str:
        """One ``set_link.lua`` change, confirmed by ``acks`` (the barrier: an answer that wrote nothing too)."""
        reply = run_confirmed(
            self._redis,
            self._script,
            self._acks,
            args=[self._keys.prefix, platform, external_id, mode, *args],
            barrier=self._keys.replication_barrier(),
        )
        return reply.decode() if isinstance(reply, bytes) else str(reply)


def check_link(platform: str, external_id: str, discord_user_id: str) -> None:
    """Raise ``InvalidInput`` naming the field when a link is malformed (``config.domain``'s rules)."""
    if platform not in PLATFORMS:
        raise InvalidInput("platform", f"must be one of {', '.join(PLATFORMS)}")
    platform_user_id(external_id, field="external_id")
    discord_id(discord_user_id, field="discord_user_id")
