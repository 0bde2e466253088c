"""Which WetBot API key serves which guild: ``WETBOT_API_KEY`` and ``WETBOT_API_KEYS`` as one map.

WetBot keys belong to one guild (docs/wetbot-api.md), so a grant can only
go out with its guild's key. ``WETBOT_API_KEYS`` (``<guild id>=<key>,...``)
names a key per guild; ``WETBOT_API_KEY`` is the key of the rewards file's
default ``guild_id``. Without a default guild (no rewards file, or one without
a top-level ``guild_id``) that key has no guild to be bound to and serves any
guild ``WETBOT_API_KEYS`` does not name, as it did before there were several.

Keys are ``SecretStr`` throughout; what leaves this module for logs, metrics,
Redis key names and errors is the key's fingerprint (``key_fingerprint``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import SecretStr

from config.domain import is_discord_id
from config.errors import ConfigError

__all__ = ["Keyring", "RuleGuild", "check_rule_guilds", "key_fingerprint", "parse_api_keys"]

_HAS_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
API_KEYS_FORMAT = "expected <guild id>=<key>,<guild id>=<key> (guild ids are 17-20 digits 0-9, not starting with 0)"


def key_fingerprint(api_key: str) -> str:
    """A short, stable, non-reversible name for an API key, safe for Redis keys, logs and metrics."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def parse_api_keys(text: str) -> dict[str, SecretStr]:
    """Parse ``<guild id>=<key>,...`` (spaces around entries are ignored, an empty text is no keys).

    Raises:
      ValueError: with a message naming the entry's position or guild, never a key.
    """
    keys: dict[str, SecretStr] = {}
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        guild, sep, key = entry.partition("=")
        guild = guild.strip()
        key = key.strip()
        if not sep or not is_discord_id(guild):
            raise ValueError(f"entry {position}: {API_KEYS_FORMAT}")
        if not key or _HAS_SPACE_OR_CONTROL.search(key):
            raise ValueError(f"entry {position} (guild {guild}): the key must be set, without spaces")
        if guild in keys:
            raise ValueError(f"guild {guild} is named twice")
        keys[guild] = SecretStr(key)
    return keys


@dataclass(frozen=True)
class Keyring:
    """The API key for each guild.

    Parameters:
      by_guild: guild id -> its key.
      fallback: the key for every other guild (an unbound ``WETBOT_API_KEY``), or None.
    """

    by_guild: Mapping[str, SecretStr] = field(default_factory=dict)
    fallback: SecretStr | None = None

    @classmethod
    def build(cls, api_key: SecretStr | None, api_keys: Mapping[str, SecretStr], default_guild: str | None) -> Keyring:
        """Combine ``WETBOT_API_KEY`` (bound to ``default_guild`` when there is one) with ``WETBOT_API_KEYS``.

        Raises:
          ConfigError: both name the default guild with different keys.
        """
        by_guild = dict(api_keys)
        _check_one_guild_per_key(by_guild, api_key, default_guild)
        if api_key is None or default_guild is None:
            return cls(by_guild, api_key)
        listed = by_guild.get(default_guild)
        if listed is not None and listed.get_secret_value() != api_key.get_secret_value():
            raise ConfigError(
                f"WETBOT_API_KEYS: gives guild {default_guild} (the rewards file's default guild) a different key"
                " than WETBOT_API_KEY; set it in one place",
                variables=("WETBOT_API_KEYS", "WETBOT_API_KEY"),
            )
        by_guild[default_guild] = api_key
        return cls(by_guild)

    @property
    def empty(self) -> bool:
        """True when no key is configured at all (demo mode, or a web process given no keys)."""
        return not self.by_guild and self.fallback is None

    def key_for(self, guild_id: str) -> SecretStr | None:
        """The key that may send to ``guild_id``, or None."""
        return self.by_guild.get(guild_id, self.fallback)

    def key_id_for(self, guild_id: str) -> str | None:
        """The fingerprint of ``guild_id``'s key, or None."""
        key = self.key_for(guild_id)
        return None if key is None else key_fingerprint(key.get_secret_value())

    def covers(self, guild_id: str) -> bool:
        return self.key_for(guild_id) is not None

    def guilds(self) -> list[str]:
        """The guilds named with a key (not the ones only the fallback covers)."""
        return sorted(self.by_guild)

    def fingerprints(self) -> dict[str, str]:
        """Guild id (``*`` for the fallback) -> key fingerprint: what may be shown of the keys."""
        shown = {guild: key_fingerprint(key.get_secret_value()) for guild, key in sorted(self.by_guild.items())}
        if self.fallback is not None:
            shown["*"] = key_fingerprint(self.fallback.get_secret_value())
        return shown

    def missing_key_problem(self, guild_id: str) -> str:
        """Why ``guild_id`` cannot be served, for errors and grant histories."""
        return f"no WetBot API key for guild {guild_id}: add {guild_id}=<key> to WETBOT_API_KEYS"


def _check_one_guild_per_key(
    by_guild: Mapping[str, SecretStr], api_key: SecretStr | None, default_guild: str | None
) -> None:
    """A WetBot key belongs to one guild: the same key for two guilds would get 403s for ever for one of them.

    Raises:
      ConfigError: naming both guilds, never the key.
    """
    seen: dict[str, str] = {}
    named = list(by_guild.items())
    if api_key is not None and default_guild is not None and default_guild not in by_guild:
        named.insert(0, (default_guild, api_key))
    for guild, key in named:
        other = seen.setdefault(key.get_secret_value(), guild)
        if other != guild:
            raise ConfigError(
                f"WETBOT_API_KEYS: guilds {other} and {guild} are given the same key; a WetBot API key belongs"
                " to one guild (each guild's own key is in its /manager-settings -> API)",
                variables=("WETBOT_API_KEYS",),
            )


@dataclass(frozen=True)
class RuleGuild:
    """A rule and the guild its grants go to (``config.rewards`` gives these)."""

    locator: str
    guild_id: str


def check_rule_guilds(keyring: Keyring, rules: Iterable[RuleGuild], *, source: str) -> None:
    """Stop at start when a rule's guild has no key: its grants could never be delivered.

    Raises:
      ConfigError: one line naming the file, the rule and the guild (the first such rule).
    """
    if keyring.empty:
        return
    for rule in rules:
        if not keyring.covers(rule.guild_id):
            raise ConfigError(
                f"{source}: {rule.locator}: guild_id: {keyring.missing_key_problem(rule.guild_id)}",
                variables=("WETBOT_API_KEYS",),
            )
