"""TokenVault.connect and disconnect against a real Redis and the Twitch simulator over HTTP: a pair refreshed
while a disconnect revokes the old one is revoked and forgotten too; a wrong key forgets without revoking;
another app's token is not stored."""

from __future__ import annotations

import pytest
from redis import Redis

from producers.twitch.oauth import OAuthClient
from producers.twitch.tokens import AuthState, TokenVault, WrongClient
from simulator.twitch import DEFAULT_BROADCASTER, OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, TwitchSimulator
from tests.producers.twitch.test_tokens import KEY, OTHER_KEY, SCOPES, connect, oauth, sim, vault
from worker.keys import Keys

__all__ = ["oauth", "sim", "vault"]  # the fixtures, shared with test_tokens


class RefreshedMeanwhile(OAuthClient):
    """An OAuth client whose first revoke finds the pair refreshed by another process just before."""

    def __init__(self, other: TokenVault, sim: TwitchSimulator) -> None:
        super().__init__(auth_url=sim.auth_url, client_id=other.oauth.client_id, timeout_s=5.0)
        self.other = other
        self.revoked: list[str] = []

    def revoke(self, token: str) -> None:
        if not self.revoked:
            self.other.refresh()
        self.revoked.append(token)
        super().revoke(token)


def test_a_pair_refreshed_during_a_disconnect_is_revoked_and_forgotten_too(
    sim: TwitchSimulator, redis: Redis, keys: Keys, vault: TokenVault, oauth: OAuthClient
) -> None:
    first = connect(vault, oauth)
    racing = RefreshedMeanwhile(vault, sim)
    gone = TokenVault(redis, keys, KEY, racing).disconnect()
    racing.close()
    assert gone is not None and gone.revoked and gone.login == DEFAULT_BROADCASTER.login
    assert vault.state().state is AuthState.NOT_CONNECTED
    assert racing.revoked[:2] == [first.access_token, first.refresh_token]
    assert len(racing.revoked) == 4, "the refreshed pair was revoked as well, not dropped unrevoked"
    assert vault.disconnect() is None


def test_tokens_another_key_sealed_are_forgotten_without_revoking(
    redis: Redis, keys: Keys, vault: TokenVault, oauth: OAuthClient
) -> None:
    stored = connect(vault, oauth)
    gone = TokenVault(redis, keys, OTHER_KEY, oauth).disconnect()
    assert gone is not None and not gone.revoked
    assert vault.state().state is AuthState.NOT_CONNECTED
    assert oauth.validate(stored.access_token).login == DEFAULT_BROADCASTER.login, "Twitch was not asked"


def test_another_apps_token_is_not_stored(sim: TwitchSimulator, vault: TokenVault) -> None:
    other = OAuthClient(auth_url=sim.auth_url, client_id=OTHER_CLIENT_ID, client_secret=OTHER_CLIENT_SECRET)
    try:
        pair = other.poll_device_token(other.start_device_flow(SCOPES), SCOPES)
    finally:
        other.close()
    with pytest.raises(WrongClient):
        vault.connect(pair)
    assert vault.state().state is AuthState.NOT_CONNECTED
