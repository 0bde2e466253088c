"""TokenVault against a real Redis (DB 15, the test's prefix) and the Twitch simulator over HTTP: encrypted
storage, the key missing or wrong, one refresher at a time, the state others read, validation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from redis import Redis

from config.errors import ConfigError
from config.settings import load_settings
from producers.twitch.oauth import InvalidRefreshToken, OAuthClient, OAuthUnavailable
from producers.twitch.tokens import (
    VALIDATE_EVERY_S,
    AuthState,
    NoEncryptionKey,
    NotConnected,
    StoredTokens,
    TokensUndecryptable,
    TokenVault,
    derive_fernet_key,
)
from simulator.twitch import DEFAULT_BROADCASTER, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from tests.conftest import TEST_REDIS_URL
from worker import redis_values as values
from worker.keys import Keys
from worker.scripts import load_script

KEY = SecretStr("test-token-key-6b1f0e9d8c7a5b4f3e2d1c0b")
OTHER_KEY = SecretStr("another-key-9a8b7c6d5e4f3a2b1c0d9e8f7a")
SCOPES = ("bits:read", "channel:manage:redemptions", "channel:read:redemptions")


@pytest.fixture
def sim() -> Iterator[TwitchSimulator]:
    simulator = TwitchSimulator(device_poll_interval_s=0.01, auto_approve_after_s=0.0).start()
    yield simulator
    simulator.stop()


def make_oauth(sim: TwitchSimulator) -> OAuthClient:
    return OAuthClient(
        auth_url=sim.auth_url, client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET, timeout_s=5.0
    )


@pytest.fixture
def oauth(sim: TwitchSimulator) -> Iterator[OAuthClient]:
    client = make_oauth(sim)
    yield client
    client.close()


@pytest.fixture
def vault(redis: Redis, keys: Keys, oauth: OAuthClient) -> TokenVault:
    return TokenVault(redis, keys, KEY, oauth)


def connect(vault: TokenVault, oauth: OAuthClient) -> StoredTokens:
    """What ``twitch connect`` does: a device flow (the simulator approves by itself), validate, store."""
    pair = oauth.poll_device_token(oauth.start_device_flow(SCOPES), SCOPES)
    return vault.store(pair, oauth.validate(pair.access_token))


def refreshes(sim: TwitchSimulator) -> int:
    """``/oauth2/token`` calls so far (after the connection, each is a refresh)."""
    return sum(1 for r in sim.requests() if r.path == "/oauth2/token")


def everything_stored(redis: Redis, keys: Keys) -> str:
    """Every key under the prefix with its value (the tokens hash, the state, a lock), as one text."""
    parts = []
    for key in redis.scan_iter(match=f"{keys.prefix}:*"):
        parts.append(repr(key))
        parts.append(repr(redis.dump(key)))
        parts += (
            [repr(item) for item in values.raw_map(redis.hgetall(key)).items()] if redis.type(key) == b"hash" else []
        )
    return "\n".join(parts)


# -- storage ------------------------------------------------------------------------------------------


def test_tokens_are_stored_encrypted_and_read_back(
    vault: TokenVault, oauth: OAuthClient, redis: Redis, keys: Keys
) -> None:
    assert vault.state().state is AuthState.NOT_CONNECTED
    stored = connect(vault, oauth)
    assert (stored.user_id, stored.login, stored.client_id) == (
        DEFAULT_BROADCASTER.id,
        DEFAULT_BROADCASTER.login,
        DEFAULT_CLIENT_ID,
    )
    assert stored.scopes == SCOPES and stored.version == 1
    assert vault.load() == stored
    raw = everything_stored(redis, keys)
    assert stored.access_token not in raw and stored.refresh_token not in raw
    assert stored.access_token not in repr(stored) and stored.refresh_token not in repr(stored)
    state = vault.state()
    assert state.state is AuthState.CONNECTED and state.login == DEFAULT_BROADCASTER.login
    assert state.user_id == DEFAULT_BROADCASTER.id and state.scopes == SCOPES and state.validation == "ok"


def test_the_cipher_key_is_derived_not_the_setting_itself() -> None:
    derived = derive_fernet_key(KEY.get_secret_value())
    assert derived == derive_fernet_key(KEY.get_secret_value()) != derive_fernet_key(OTHER_KEY.get_secret_value())
    assert KEY.get_secret_value().encode() not in derived and len(derived) == 44


def test_without_the_key_nothing_is_stored_or_read(
    vault: TokenVault, oauth: OAuthClient, redis: Redis, keys: Keys
) -> None:
    stored = connect(vault, oauth)
    for key in (None, SecretStr("too-short-for-a-key")):
        keyless = TokenVault(redis, keys, key, oauth)
        with pytest.raises(NoEncryptionKey, match="TOKEN_ENCRYPTION_KEY") as caught:
            keyless.load()
        with pytest.raises(NoEncryptionKey):
            keyless.refresh()
        with pytest.raises(NoEncryptionKey):
            keyless.validate()
        assert ("not set" if key is None else "at least 32 characters") in str(caught.value)
        assert keyless.state().state is AuthState.CONNECTED  # the state needs no key
    before = everything_stored(redis, keys)
    pair = oauth.poll_device_token(oauth.start_device_flow(SCOPES), SCOPES)
    with pytest.raises(NoEncryptionKey):
        TokenVault(redis, keys, None, oauth).store(pair, oauth.validate(pair.access_token))
    assert everything_stored(redis, keys) == before and vault.load() == stored


def test_a_wrong_key_is_a_clear_state_not_a_traceback(
    vault: TokenVault, oauth: OAuthClient, redis: Redis, keys: Keys
) -> None:
    stored = connect(vault, oauth)
    wrong = TokenVault(redis, keys, OTHER_KEY, oauth)
    with pytest.raises(TokensUndecryptable) as caught:
        wrong.load()
    text = str(caught.value)
    assert text.startswith("cannot decrypt the stored Twitch tokens: TOKEN_ENCRYPTION_KEY changed?")
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # no decrypt traceback rides along
    assert stored.access_token not in text and stored.refresh_token not in text
    state = vault.state()
    assert state.state is AuthState.UNDECRYPTABLE and "TOKEN_ENCRYPTION_KEY changed?" in state.reason
    assert wrong.validate().state is AuthState.UNDECRYPTABLE
    # The right key still reads them, and its next validation puts the state right.
    assert vault.load() == stored
    assert vault.validate().state is AuthState.CONNECTED


def test_a_damaged_record_is_undecryptable_too(vault: TokenVault, oauth: OAuthClient, redis: Redis, keys: Keys) -> None:
    connect(vault, oauth)
    redis.hset(keys.twitch_tokens(), "sealed", "gAAAAA-not-a-fernet-token")
    with pytest.raises(TokensUndecryptable):
        vault.load()


def test_nothing_stored_is_not_connected(vault: TokenVault) -> None:
    with pytest.raises(NotConnected, match="twitch connect"):
        vault.load()
    with pytest.raises(NotConnected):
        vault.refresh()
    assert vault.validate().state is AuthState.NOT_CONNECTED


# -- refresh -------------------------------------------------------------------------------------------


def test_refresh_stores_the_rotated_pair(
    vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator, keys: Keys, redis: Redis
) -> None:
    first = connect(vault, oauth)
    second = vault.refresh()
    assert second.version == 2 and second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token and vault.load() == second
    assert (second.user_id, second.login, second.scopes) == (first.user_id, first.login, first.scopes)
    assert oauth.validate(second.access_token).user_id == DEFAULT_BROADCASTER.id
    with pytest.raises(InvalidRefreshToken):  # Twitch rotated it: the old one is dead
        oauth.refresh(first.refresh_token)
    assert not redis.exists(keys.twitch_refresh_lock())
    assert vault.state().state is AuthState.CONNECTED and vault.state().refreshed_at > 0


def test_a_caller_with_a_stale_pair_gets_the_newer_one_without_a_refresh(
    vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator
) -> None:
    first = connect(vault, oauth)
    second = vault.refresh(stale=first)
    calls = refreshes(sim)
    assert vault.refresh(stale=first) == second  # another process' 401 with the old token
    assert refreshes(sim) == calls


def test_two_refreshers_at_once_make_one_refresh_and_both_get_the_new_token(
    vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator, redis: Redis, keys: Keys
) -> None:
    stale = connect(vault, oauth)
    before = refreshes(sim)
    # The first refresh is slow at Twitch, so the second caller surely arrives while it is under way.
    sim.inject("slow_before", path="/oauth2/token", delay_s=0.5)
    start = threading.Barrier(2)
    results: dict[int, StoredTokens] = {}
    errors: list[BaseException] = []

    def refresher(index: int) -> None:
        client = Redis.from_url(TEST_REDIS_URL)  # each its own connection and client, as two processes
        own_oauth = make_oauth(sim)
        try:
            own = TokenVault(client, keys, KEY, own_oauth)
            start.wait()
            results[index] = own.refresh(stale=stale)
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)
        finally:
            own_oauth.close()
            client.close()

    threads = [threading.Thread(target=refresher, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert refreshes(sim) - before == 1
    assert results[0] == results[1] == vault.load()
    assert results[0].version == stale.version + 1 and results[0].access_token != stale.access_token
    assert oauth.validate(results[0].access_token).user_id == DEFAULT_BROADCASTER.id
    assert not redis.exists(keys.twitch_refresh_lock())


def test_the_lock_is_released_only_by_its_holder(redis: Redis, keys: Keys) -> None:
    release = load_script(redis, "release_lock")
    lock = keys.twitch_refresh_lock()
    redis.set(lock, "theirs", px=5000)
    assert release(keys=[lock], args=["ours"]) == 0 and redis.get(lock) == b"theirs"
    assert release(keys=[lock], args=["theirs"]) == 1 and not redis.exists(lock)


def test_a_revoked_authorisation_is_the_revoked_state(
    vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator
) -> None:
    stored = connect(vault, oauth)
    sim.revoke_all()  # the broadcaster disconnected the app
    with pytest.raises(InvalidRefreshToken) as caught:
        vault.refresh()
    state = vault.state()
    assert state.state is AuthState.REVOKED and "twitch connect" in state.reason and state.since > 0
    assert stored.refresh_token not in str(caught.value) + state.reason
    assert vault.validate().state is AuthState.REVOKED


def test_twitch_out_of_reach_is_refresh_failed_and_keeps_the_pair(
    vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator
) -> None:
    stored = connect(vault, oauth)
    sim.inject("status", path="/oauth2/token", status=503)
    with pytest.raises(OAuthUnavailable):
        vault.refresh()
    state = vault.state()
    assert state.state is AuthState.REFRESH_FAILED and "503" in state.reason
    assert vault.load() == stored  # nothing lost: the next try uses the same refresh token
    assert vault.refresh().version == stored.version + 1
    assert vault.state().state is AuthState.CONNECTED and vault.state().reason == ""


# -- validation ----------------------------------------------------------------------------------------


def validations(sim: TwitchSimulator) -> int:
    return sum(1 for r in sim.requests() if r.path == "/oauth2/validate")


def test_validate_records_when_and_what_and_is_not_repeated_within_the_hour(
    vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator, redis: Redis, keys: Keys
) -> None:
    connect(vault, oauth)
    first = vault.validate()
    assert first.state is AuthState.CONNECTED and first.validation == "ok" and first.validated_at > 0
    calls = validations(sim)
    assert vault.validate_if_due().validated_at == first.validated_at
    assert validations(sim) == calls
    redis.hset(keys.twitch_auth_state(), "validated_at", repr(first.validated_at - VALIDATE_EVERY_S))
    assert vault.validate_if_due().validated_at > first.validated_at
    assert validations(sim) == calls + 1


def test_validate_refreshes_an_expired_token(vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator) -> None:
    stored = connect(vault, oauth)
    sim.expire_access_tokens()
    state = vault.validate()
    assert state.state is AuthState.CONNECTED and state.validation == "ok"
    assert vault.load().version == stored.version + 1


def test_a_failed_validation_is_recorded_without_changing_the_connection(
    vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator
) -> None:
    connect(vault, oauth)
    sim.inject("status", path="/oauth2/validate", status=500)
    state = vault.validate()
    assert state.state is AuthState.CONNECTED and "500" in state.validation


def test_no_token_reaches_a_log_line_or_an_error(
    vault: TokenVault,
    oauth: OAuthClient,
    sim: TwitchSimulator,
    redis: Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = [connect(vault, oauth)]
    seen.append(vault.refresh())
    texts = []
    sim.inject("status", path="/oauth2/token", status=503, message=f"echo {seen[-1].refresh_token}")
    with pytest.raises(OAuthUnavailable) as unavailable:
        vault.refresh()
    texts.append(str(unavailable.value))
    sim.expire_access_tokens()
    vault.validate()
    seen.append(vault.load())
    sim.revoke_all()
    with pytest.raises(InvalidRefreshToken) as refused:
        vault.refresh()
    texts.append(str(refused.value))
    with pytest.raises(TokensUndecryptable) as undecryptable:
        TokenVault(redis, keys, OTHER_KEY, oauth).load()
    texts.append(str(undecryptable.value))
    texts += [record.getMessage() for record in caplog.records]
    texts.append(repr(vault.state()))
    assert any("refresh" in text for text in texts)
    for tokens in seen:
        for secret in (tokens.access_token, tokens.refresh_token):
            assert not any(secret in text for text in texts)
    assert not any(KEY.get_secret_value() in text for text in texts)


def test_every_process_builds_the_same_vault_from_its_settings(
    vault: TokenVault, oauth: OAuthClient, sim: TwitchSimulator, redis: Redis, keys: Keys
) -> None:
    stored = connect(vault, oauth)
    settings = load_settings(
        _env_file=None,
        redis_key_prefix=keys.prefix,
        twitch_client_id=DEFAULT_CLIENT_ID,
        twitch_client_secret=DEFAULT_CLIENT_SECRET,
        twitch_auth_url=f"{sim.auth_url}/token",  # the older form of the setting
        token_encryption_key=KEY.get_secret_value(),
    )
    built = TokenVault.from_settings(settings, redis)
    assert built.load() == stored
    assert built.refresh().version == stored.version + 1
    with pytest.raises(ConfigError, match=r"^TWITCH_CLIENT_ID: "):
        TokenVault.from_settings(load_settings(_env_file=None), redis)
