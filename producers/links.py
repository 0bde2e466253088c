"""Who is who: links from a platform's user id (Twitch, Patreon) to a Discord user id.

Static links come from the rewards file (``[twitch.links]``); run-time links
(``POST /links``, ``wetbot-rewards links add``) live in Redis and take
precedence, so a viewer can be re-linked without editing the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import cast

from redis import Redis

from config.rewards import RewardsConfig
from worker.keys import Keys

#: Platforms whose users can be linked.
PLATFORMS = ("twitch", "patreon")
#: A Discord user id (a snowflake).
DISCORD_ID = re.compile(r"^[0-9]{17,20}$")
#: A platform user id as Twitch and Patreon issue them (digits).
EXTERNAL_ID = re.compile(r"^[0-9]{1,32}$")


class LinkStore:
    """Reads and writes links.

    Parameters:
      redis: client for the service's Redis.
      keys: key layout.
      static: platform -> {external id: Discord id} from the rewards file.
    """

    def __init__(self, redis: Redis, keys: Keys, static: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._static = {platform: dict(links) for platform, links in (static or {}).items()}

    @classmethod
    def for_rewards(cls, redis: Redis, keys: Keys, rewards: RewardsConfig) -> LinkStore:
        """The store with the rewards file's static links (``[twitch.links]``)."""
        return cls(redis, keys, {"twitch": rewards.twitch.links})

    def resolve(self, platform: str, external_id: str) -> str | None:
        """The Discord user linked to ``external_id`` on ``platform``, if any."""
        found = cast(bytes | None, self._redis.hget(self._keys.links(platform), external_id))
        if found is not None:
            return found.decode()
        return self._static.get(platform, {}).get(external_id)

    def static_user(self, platform: str, external_id: str) -> str | None:
        """The rewards file's link only (a run-time link, looked up in Redis, wins over it)."""
        return self._static.get(platform, {}).get(external_id)

    def add(self, platform: str, external_id: str, discord_user_id: str) -> None:
        """Link (or re-link) ``external_id`` to ``discord_user_id``. Raises ``ValueError`` on a malformed id."""
        check_link(platform, external_id, discord_user_id)
        self._redis.hset(self._keys.links(platform), external_id, discord_user_id)

    def remove(self, platform: str, external_id: str) -> bool:
        """Forget a run-time link; True when there was one. Static links stay (edit the rewards file)."""
        return bool(self._redis.hdel(self._keys.links(platform), external_id))

    def all(self, platform: str) -> dict[str, tuple[str, str]]:
        """Every link of ``platform``: external id -> (Discord id, ``"runtime"`` or ``"static"``)."""
        out = {ext: (discord, "static") for ext, discord in self._static.get(platform, {}).items()}
        runtime = cast(dict[bytes, bytes], self._redis.hgetall(self._keys.links(platform)))
        out.update({ext.decode(): (discord.decode(), "runtime") for ext, discord in runtime.items()})
        return out


def check_link(platform: str, external_id: str, discord_user_id: str) -> None:
    """Raise ``ValueError`` naming the field when a link is malformed."""
    if platform not in PLATFORMS:
        raise ValueError(f"platform: must be one of {', '.join(PLATFORMS)}")
    if not EXTERNAL_ID.match(external_id):
        raise ValueError("external_id: must be the platform's numeric user id")
    if not DISCORD_ID.match(discord_user_id):
        raise ValueError("discord_user_id: must be a Discord id of 17-20 digits")
