"""One WetBot client per configured API key, found by the guild a grant goes to.

The worker delivers for every key it is given (``config.keyring``); each key
keeps its own rate window, 401/403 pause and metrics because everything per
key is named by the key's fingerprint (``WetbotClient.key_id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from config.keyring import Keyring
from worker.client import WetbotClient

__all__ = ["GuildClients"]


@dataclass(frozen=True)
class GuildClients:
    """The clients of a keyring; guilds that share a key share its client."""

    keyring: Keyring
    base_url: str
    timeout_s: float
    _by_key: dict[str, WetbotClient] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        keys = [*self.keyring.by_guild.values()]
        if self.keyring.fallback is not None:
            keys.append(self.keyring.fallback)
        for key in keys:
            client = WetbotClient(self.base_url, key.get_secret_value(), self.timeout_s)
            self._by_key.setdefault(client.key_id, client)

    def for_guild(self, guild_id: str) -> WetbotClient | None:
        """The client holding ``guild_id``'s key, or None when no key serves that guild."""
        key_id = self.keyring.key_id_for(guild_id)
        return None if key_id is None else self._by_key[key_id]

    def all(self) -> list[WetbotClient]:
        """Every client, one per distinct key."""
        return list(self._by_key.values())
