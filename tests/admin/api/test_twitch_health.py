"""``/readyz`` warns, and ``/metrics`` shows, when the Twitch connection needs attention (real app, real Redis,
the Twitch simulator over HTTP). Readiness itself stays 200: grants still queue without Twitch."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from producers.twitch.oauth import InvalidRefreshToken, OAuthClient, OAuthUnavailable
from producers.twitch.tokens import TokensUndecryptable, TokenVault
from simulator.twitch import DEFAULT_CLIENT_ID, TwitchSimulator
from tests.conftest import SettingsFactory
from tests.producers.twitch.test_tokens import OTHER_KEY, connect
from wetbot_rewards.app import create_app
from worker.keys import Keys


def health(make_settings: SettingsFactory, **settings: object) -> tuple[list[str], str]:
    """``/readyz``'s warnings about Twitch and ``/metrics``' Twitch lines."""
    with TestClient(create_app(make_settings(**settings))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = client.get("/metrics").text
    twitch = [line for line in ready.json()["warnings"] if line.startswith("twitch:")]
    return twitch, "\n".join(line for line in metrics.splitlines() if "twitch_auth{" in line)


def current(metric_lines: str) -> str:
    [state] = [line.split('"')[1] for line in metric_lines.splitlines() if line.endswith(" 1")]
    return state


def test_a_connected_channel_has_no_warning_and_its_gauge_says_connected(
    make_settings: SettingsFactory, vault: TokenVault, oauth: OAuthClient
) -> None:
    connect(vault, oauth)
    warnings, metrics = health(make_settings, twitch_client_id=DEFAULT_CLIENT_ID)
    assert warnings == [] and current(metrics) == "connected"


def test_a_revoked_token_is_a_warning_and_the_gauge_moves(
    make_settings: SettingsFactory, twitch: TwitchSimulator, vault: TokenVault, oauth: OAuthClient
) -> None:
    connect(vault, oauth)
    twitch.revoke_all()
    with pytest.raises(InvalidRefreshToken):
        vault.refresh()
    warnings, metrics = health(make_settings, twitch_client_id=DEFAULT_CLIENT_ID)
    assert len(warnings) == 1 and "connect again" in warnings[0]
    assert current(metrics) == "revoked"


def test_a_failed_refresh_is_a_warning_with_its_reason_and_no_token(
    make_settings: SettingsFactory, twitch: TwitchSimulator, vault: TokenVault, oauth: OAuthClient
) -> None:
    stored = connect(vault, oauth)
    twitch.inject("status", path="/oauth2/token", status=503)
    with pytest.raises(OAuthUnavailable):
        vault.refresh()
    warnings, metrics = health(make_settings, twitch_client_id=DEFAULT_CLIENT_ID)
    assert len(warnings) == 1 and "could not be refreshed" in warnings[0] and "503" in warnings[0]
    assert stored.access_token not in warnings[0] and stored.refresh_token not in warnings[0]
    assert current(metrics) == "refresh_failed"


def test_tokens_another_key_cannot_open_are_a_warning(
    make_settings: SettingsFactory, redis: Redis, keys: Keys, vault: TokenVault, oauth: OAuthClient
) -> None:
    connect(vault, oauth)
    with pytest.raises(TokensUndecryptable):
        TokenVault(redis, keys, OTHER_KEY, oauth).load()  # a process started with another key marks it
    warnings, metrics = health(make_settings, twitch_client_id=DEFAULT_CLIENT_ID)
    assert len(warnings) == 1 and "TOKEN_ENCRYPTION_KEY" in warnings[0]
    assert current(metrics) == "undecryptable"


def test_no_channel_is_a_warning_only_where_twitch_is_set_up(make_settings: SettingsFactory) -> None:
    warnings, metrics = health(make_settings, twitch_client_id=DEFAULT_CLIENT_ID)
    assert warnings == ["twitch: no channel connected (wetbot-rewards twitch connect)"]
    assert current(metrics) == "not_connected"
    assert health(make_settings)[0] == [], "a service without Twitch has nothing to fix"
