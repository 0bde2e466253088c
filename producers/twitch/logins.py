"""Twitch users named by login: ``links add twitch:<login> <discord id>`` and the console's link form.

A login is resolved to the user id through Helix's Get Users as the connected broadcaster
(``BroadcasterHelix``). That client, not the app-token ``HelixClient``, because connecting the channel is
the one setup step every install makes (``wetbot-rewards twitch connect``), while an app token needs
``TWITCH_CLIENT_SECRET``, which a public client does not have. A numeric id needs no Helix at all.

Twitch's login rule: 4-25 characters from a-z, 0-9 and ``_``, compared case-insensitively (Twitch stores
them lowercase). What the lookup found is remembered next to the id (``LinkNames``) so the console shows
the login and display name beside it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from redis import Redis

from config.domain import is_platform_user_id
from config.errors import ConfigError, WetbotRewardsError
from config.settings import Settings
from producers.twitch.broadcaster_api import BroadcasterHelix, TwitchUser
from producers.twitch.helix import HelixError
from producers.twitch.oauth import TwitchAuthError
from worker import redis_values as values
from worker.keys import Keys

__all__ = ["LOGIN_RULE", "LinkNames", "LoginNotResolved", "TwitchTarget", "resolve_twitch_user", "twitch_login"]

LOGIN_RULE = "a Twitch login (4-25 characters a-z, 0-9, _) or a numeric user id"
_LOGIN = re.compile(r"[a-z0-9_]{4,25}")
#: Longest login or display name kept (Twitch's display names are the login with other casing, or CJK text).
MAX_NAME_CHARS = 60


class LoginNotResolved(WetbotRewardsError):
    """Raised when a login names no Twitch user, or cannot be looked up now; the message says which."""


@dataclass(frozen=True)
class TwitchTarget:
    """Who a link is for: the user id, and the account Helix found when named by login (None for an id)."""

    user_id: str
    user: TwitchUser | None = None

    @property
    def shown(self) -> str:
        """How messages name the user: ``login (id)``, or the id alone."""
        return f"{self.user.login} ({self.user_id})" if self.user is not None else self.user_id


def twitch_login(text: str) -> str | None:
    """``text`` as a Twitch login (lowercased, an ``@`` in front dropped), or None when it cannot be one."""
    login = text.strip().removeprefix("@").lower()
    return login if login.isascii() and _LOGIN.fullmatch(login) else None


def resolve_twitch_user(settings: Settings, redis: Redis, text: str) -> TwitchTarget:
    """The Twitch user ``text`` names: a numeric id as it is, a login through Helix.

    Raises:
      LoginNotResolved: not a login nor an id, no such login, or Helix cannot be asked (no channel
        connected, no key, Twitch out of reach).
    """
    if is_platform_user_id(text):
        return TwitchTarget(text)
    login = twitch_login(text)
    if login is None:
        raise LoginNotResolved(f"{text[:40]!r} is not {LOGIN_RULE}")
    try:
        helix = BroadcasterHelix.from_settings(settings, redis)
    except ConfigError as exc:
        raise LoginNotResolved(f"cannot look up the Twitch login {login!r}: {exc}") from None
    try:
        found = [user for user in helix.users(logins=[login]) if user.login.lower() == login]
    except (HelixError, TwitchAuthError) as exc:
        raise LoginNotResolved(f"cannot look up the Twitch login {login!r} ({exc}); give the numeric id") from None
    finally:
        helix.close()
    if not found or not is_platform_user_id(found[0].id):
        raise LoginNotResolved(f"no Twitch user has the login {login!r}")
    return TwitchTarget(found[0].id, found[0])


class LinkNames:
    """The login and display name of linked users, by platform and id (``Keys.link_names``)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def remember(self, platform: str, user: TwitchUser) -> None:
        names = {"login": user.login[:MAX_NAME_CHARS], "display_name": user.display_name[:MAX_NAME_CHARS]}
        self._redis.hset(self._keys.link_names(platform), user.id, json.dumps(names, ensure_ascii=False))

    def all(self, platform: str) -> dict[str, tuple[str, str]]:
        """External id -> (login, display name) of every user remembered."""
        found: dict[str, tuple[str, str]] = {}
        for user_id, value in values.text_map(self._redis.hgetall(self._keys.link_names(platform))).items():
            try:
                names = json.loads(value)
            except ValueError:
                continue
            if isinstance(names, dict):
                found[user_id] = (str(names.get("login", "")), str(names.get("display_name", "")))
        return found
