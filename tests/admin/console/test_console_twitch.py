"""The console's Twitch page: the real app (TestClient), a real Redis (the test's prefix) and the Twitch simulator
over HTTP. Not connected, connected (broadcaster, scopes, rewards and who may refund them, missed periods),
refresh failed, revoked, the encryption key missing or wrong."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from fastapi.testclient import TestClient
from redis import Redis

from config.rewards import load_rewards
from config.settings import Settings
from producers.twitch.broadcaster_api import BroadcasterHelix
from producers.twitch.oauth import InvalidAccessToken, InvalidRefreshToken, OAuthClient, OAuthUnavailable
from producers.twitch.reward_catalogue import RewardCatalogue, RewardSync
from producers.twitch.runner import TwitchRunner
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_BROADCASTER, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from tests.admin.console.test_console_http import ADMIN, log_in
from tests.conftest import GUILD, TEST_REDIS_URL, SettingsFactory
from tests.producers.twitch.test_tokens import KEY, OTHER_KEY, connect
from wetbot_rewards.app import create_app
from worker.keys import Keys

REDEMPTION = "channel.channel_points_custom_reward_redemption.add"
RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "chest"
event = "{REDEMPTION}"
reward = "Daily chest"
items = [{{ id = "chest", amount = 1 }}]

[[twitch.rules]]
name = "water"
event = "{REDEMPTION}"
reward = "Hydrate"
items = [{{ id = "water", amount = 1 }}]

[[twitch.rules]]
name = "nowhere"
event = "{REDEMPTION}"
reward = "No such reward"
items = [{{ id = "gem", amount = 1 }}]

[[twitch.rules]]
name = "bits"
event = "channel.cheer"
items = [{{ id = "gem", amount = 1 }}]

[[twitch.rewards]]
title = "Daily chest"
cost = 100
"""
NEEDED = ("bits:read", "channel:manage:redemptions", "channel:read:redemptions")


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "twitch-rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return path


@pytest.fixture
def page_settings(make_settings: SettingsFactory, twitch: TwitchSimulator, rules_file: Path) -> SettingsFactory:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "admin_token": ADMIN,
            "rewards_file": rules_file,
            "twitch_client_id": DEFAULT_CLIENT_ID,
            "twitch_client_secret": DEFAULT_CLIENT_SECRET,
            "twitch_auth_url": twitch.auth_url,
            "twitch_api_url": twitch.api_url,
            "token_encryption_key": KEY.get_secret_value(),
        }
        return make_settings(**(values | overrides))

    return factory


def console(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings))
    client.__enter__()
    log_in(client)
    return client


@pytest.fixture
def client(page_settings: SettingsFactory) -> Iterator[TestClient]:
    test_client = console(page_settings())
    yield test_client
    test_client.__exit__(None, None, None)


def panel(page: str, name: str) -> str:
    match = re.search(rf'<section class="panel" data-panel="{name}".*?</section>', page, re.S)
    assert match is not None, page
    return match[0]


def token_state(page: str) -> str:
    found = re.search(r'data-field="token-state">([^<]+)<', page)
    assert found is not None, page
    return found[1]


def test_not_connected_shows_the_scopes_needed_and_how_to_connect(client: TestClient) -> None:
    page = client.get("/console/twitch")
    assert page.status_code == 200
    assert 'data-nav="twitch" class="active"' in page.text
    assert token_state(page.text) == "not connected"
    assert 'data-state="not_connected"' in page.text and "No channel is connected" in page.text
    needed = panel(page.text, "scopes")
    assert re.findall(r"<code>([^<]+)</code>", needed.split('data-field="scopes-granted"')[0]) == list(NEEDED)
    assert "scopes-missing" not in needed, "nothing is missing from a connection not made"
    assert "wetbot-rewards twitch connect" in panel(page.text, "connection")
    assert "Not listed yet" in panel(page.text, "rewards")


def test_connected_shows_the_broadcaster_rewards_refunds_and_missed_periods(
    client: TestClient,
    twitch: TwitchSimulator,
    vault: TokenVault,
    oauth: OAuthClient,
    redis: Redis,
    keys: Keys,
    rules_file: Path,
) -> None:
    connect(vault, oauth)
    other = twitch.create_reward_as_other_app("Hydrate", 50)
    helix = BroadcasterHelix(api_url=twitch.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault, timeout_s=5.0)
    try:
        # The Twitch process' reward sync, on the rules file the app reads.
        section = load_rewards(rules_file).twitch
        assert RewardSync(helix, section, RewardCatalogue(redis, keys)).run_once().ok
    finally:
        helix.close()
    runner = TwitchRunner(redis, keys, tasks=[], ready=lambda: None)
    runner.gap("the Twitch process restarted", since=1_700_000_000.0)
    runner.gap("the WebSocket dropped", since=None)

    page = client.get("/console/twitch").text
    assert token_state(page) == "valid"
    connection = panel(page, "connection")
    assert DEFAULT_BROADCASTER.login in connection and f">{DEFAULT_BROADCASTER.id}</code>" in connection
    assert "scopes-missing" not in page
    rewards = panel(page, "rewards")
    ours = next(r for r in twitch.rewards() if r["title"] == "Daily chest")
    row_ours = re.search(rf'<tr data-reward="{ours["id"]}" data-refundable="yes">.*?</tr>', rewards, re.S)
    assert row_ours is not None and "this service" in row_ours[0] and "chest" in row_ours[0]
    row_other = re.search(rf'<tr data-reward="{other["id"]}" data-refundable="no">.*?</tr>', rewards, re.S)
    assert row_other is not None and "another app" in row_other[0]
    assert "only the client id that created a reward update its redemptions" in row_other[0]
    titles = re.findall(r'<tr data-title="([^"]+)">.*?</tr>', rewards, re.S)
    assert titles == ["Daily chest", "Hydrate", "No such reward"]
    assert f'data-field="resolved">{ours["id"]}<' in rewards
    assert re.search(r'data-title="No such reward">.*?matches no reward', rewards, re.S)
    missed = re.findall(r"<li data-missed=[^>]*>([^<]+)</li>", panel(page, "missed"))
    assert missed[0].startswith("cheers, subs and follows may have been missed from an unknown time to ")
    assert missed[0].endswith("(the WebSocket dropped)")
    assert missed[1].startswith("cheers, subs and follows may have been missed from 2023-11-14 22:13:20 UTC to ")
    assert missed[1].endswith("(the Twitch process restarted)")
    overview = client.get("/console").text
    assert token_state(panel(overview, "twitch")) == "valid" and DEFAULT_BROADCASTER.login in overview


def test_a_missing_scope_is_named_with_what_to_do(client: TestClient, vault: TokenVault, oauth: OAuthClient) -> None:
    scopes = ("channel:read:redemptions",)
    pair = oauth.poll_device_token(oauth.start_device_flow(scopes), scopes)
    vault.store(pair, oauth.validate(pair.access_token))
    missing = panel(client.get("/console/twitch").text, "scopes")
    assert re.search(
        r'data-field="scopes-missing">The token lacks <code>bits:read</code>, '
        r"<code>channel:manage:redemptions</code>.*Connect again",
        missing,
        re.S,
    )


def test_a_refresh_that_failed_shows_with_its_reason(
    client: TestClient, twitch: TwitchSimulator, vault: TokenVault, oauth: OAuthClient
) -> None:
    connect(vault, oauth)
    twitch.inject("status", path="/oauth2/token", status=503)
    with pytest.raises(OAuthUnavailable):
        vault.refresh()
    page = client.get("/console/twitch").text
    assert token_state(page) == "refresh failed"
    assert 'data-state="refresh_failed"' in page and "503" in page and "the next use tries again" in page


def test_a_revoked_token_says_connect_again(
    client: TestClient, twitch: TwitchSimulator, vault: TokenVault, oauth: OAuthClient
) -> None:
    connect(vault, oauth)
    twitch.revoke_all()
    with pytest.raises(InvalidRefreshToken):
        vault.refresh()
    page = client.get("/console/twitch").text
    assert token_state(page) == "revoked" and "Connect again" in page


def test_a_wrong_key_shows_as_such_and_changes_nothing_others_see(
    page_settings: SettingsFactory, vault: TokenVault, oauth: OAuthClient
) -> None:
    connect(vault, oauth)
    web = console(page_settings(token_encryption_key=OTHER_KEY.get_secret_value()))
    try:
        page = web.get("/console/twitch").text
    finally:
        web.__exit__(None, None, None)
    assert token_state(page) == "wrong key" and "Set the key they were stored with" in page
    assert vault.state().state.value == "connected", "the page only looked"
    assert vault.load().login == DEFAULT_BROADCASTER.login


def test_a_missing_key_shows_as_such(page_settings: SettingsFactory, vault: TokenVault, oauth: OAuthClient) -> None:
    connect(vault, oauth)
    web = console(page_settings(token_encryption_key=None))
    try:
        page = web.get("/console/twitch").text
    finally:
        web.__exit__(None, None, None)
    assert token_state(page) == "missing encryption key" and "TOKEN_ENCRYPTION_KEY is not set" in page


def test_the_page_is_drawn_without_a_client_id(page_settings: SettingsFactory) -> None:
    web = console(page_settings(twitch_client_id=None, twitch_client_secret=None))
    try:
        page = web.get("/console/twitch")
    finally:
        web.__exit__(None, None, None)
    assert page.status_code == 200 and 'data-field="no-client-id"' in page.text


def test_the_page_needs_a_login(page_settings: SettingsFactory) -> None:
    with TestClient(create_app(page_settings())) as anonymous:
        answer = anonymous.get("/console/twitch", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"


# -- Connect with Twitch (authorization code flow) and Disconnect --------------------------------------

PUBLIC = "https://bot.example.test"
CALLBACK = f"{PUBLIC}/console/twitch/callback"


@pytest.fixture
def public_client(page_settings: SettingsFactory) -> Iterator[TestClient]:
    test_client = console(page_settings(public_url=PUBLIC))
    yield test_client
    test_client.__exit__(None, None, None)


def page_csrf(client: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/twitch").text)
    assert found is not None
    return found[1]


def press_connect(client: TestClient) -> dict[str, str]:
    """The button: the console's redirect to Twitch's /authorize, its query returned."""
    answer = client.post("/console/twitch/connect", data={"csrf": page_csrf(client)}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith(f"{client.app.state.wetbot.settings.twitch_auth_url}/authorize?")  # type: ignore[attr-defined]
    return dict(parse_qsl(urlsplit(location).query)) | {"_url": location}


def twitch_answers(authorize_url: str) -> str:
    """What Twitch's /authorize does with the browser (the simulator's mode decides): the callback's path+query."""
    answer = requests.get(authorize_url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK + "?"), location
    return location.removeprefix(PUBLIC)


def test_connect_with_twitch_asks_exactly_the_scopes_and_stores_the_tokens_once(
    public_client: TestClient,
    twitch: TwitchSimulator,
    vault: TokenVault,
    redis: Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shown = public_client.get("/console/twitch")
    page = shown.text
    assert 'data-action="twitch-connect"' in page and CALLBACK in page
    origin = twitch.root_url  # the button's form is answered with a redirect there: the page's CSP lets it go
    assert f"form-action 'self' {origin};" in shown.headers["content-security-policy"]
    assert "form-action 'self';" in public_client.get("/console").headers["content-security-policy"]
    twitch.set_authorize("approve")
    query = press_connect(public_client)
    assert query["client_id"] == DEFAULT_CLIENT_ID and query["response_type"] == "code"
    assert query["redirect_uri"] == CALLBACK and query["scope"] == " ".join(NEEDED)
    assert len(query["state"]) >= 32
    callback = twitch_answers(query["_url"])
    code = dict(parse_qsl(urlsplit(callback).query))["code"]

    done = public_client.get(callback)
    assert done.status_code == 200, done.text
    assert '<meta http-equiv="refresh" content="0;url=/console/twitch">' in done.text
    assert f"Connected as {DEFAULT_BROADCASTER.login} ({DEFAULT_BROADCASTER.id})" in done.text
    stored = vault.load()
    assert stored.login == DEFAULT_BROADCASTER.login and stored.scopes == NEEDED and stored.version == 1
    page = public_client.get("/console/twitch").text
    assert 'data-flash="ok"' in page and f"Connected as {DEFAULT_BROADCASTER.login}" in page
    assert token_state(page) == "valid"
    assert not list(redis.scan_iter(match=f"{keys.prefix}:console:twitch-state:*")), "the state is used up"

    replayed = public_client.get(callback)
    assert replayed.status_code == 400 and "not one the console is waiting for" in replayed.text
    assert vault.load().version == 1, "a replayed callback stores nothing"
    for secret in (code, stored.access_token, stored.refresh_token, DEFAULT_CLIENT_SECRET):
        assert secret not in done.text + replayed.text + caplog.text
    audit = public_client.get("/console/audit").text
    assert "twitch connect" in audit and "connected" in audit


def test_a_state_from_another_browser_is_refused_and_nothing_is_stored(
    public_client: TestClient, page_settings: SettingsFactory, twitch: TwitchSimulator, vault: TokenVault
) -> None:
    twitch.set_authorize("approve")
    press_connect(public_client)  # this browser's own pending connect (its binding cookie)
    other = console(page_settings(public_url=PUBLIC))
    try:
        foreign = twitch_answers(press_connect(other)["_url"])
    finally:
        other.__exit__(None, None, None)
    answer = public_client.get(foreign)
    assert answer.status_code == 400 and "started in another browser or login" in answer.text
    assert vault.state().state.value == "not_connected"
    forged = public_client.get("/console/twitch/callback?code=abc&state=made-up-state")
    assert forged.status_code == 400 and vault.state().state.value == "not_connected"


def test_a_cancel_on_twitch_is_a_clear_page_and_stores_nothing(
    public_client: TestClient, twitch: TwitchSimulator, vault: TokenVault
) -> None:
    twitch.set_authorize("deny")
    callback = twitch_answers(press_connect(public_client)["_url"])
    assert "error=access_denied" in callback
    answer = public_client.get(callback)
    assert answer.status_code == 400 and "authorization was declined" in answer.text
    assert vault.state().state.value == "not_connected"
    assert "authorization was declined" in public_client.get("/console/twitch").text


def test_a_bad_code_or_twitch_failing_is_a_clear_page(
    public_client: TestClient, twitch: TwitchSimulator, vault: TokenVault
) -> None:
    twitch.set_authorize("approve")
    callback = twitch_answers(press_connect(public_client)["_url"])
    bad = re.sub(r"code=[0-9a-f]+", "code=0badc0de", callback)
    answer = public_client.get(bad)
    assert answer.status_code == 400 and "refused the authorization code" in answer.text

    callback = twitch_answers(press_connect(public_client)["_url"])
    twitch.inject("status", path="/oauth2/token", status=503)
    answer = public_client.get(callback)
    assert answer.status_code == 502 and "could not be reached or failed (HTTP 503)" in answer.text
    assert vault.state().state.value == "not_connected"


def test_without_a_public_url_or_a_secret_the_page_shows_the_device_flow(
    client: TestClient, page_settings: SettingsFactory
) -> None:
    shown = client.get("/console/twitch")
    page = shown.text
    assert 'data-connect="device"' in page and "PUBLIC_URL is not set" in page
    assert "form-action 'self';" in shown.headers["content-security-policy"]
    assert 'data-action="twitch-connect"' not in page
    public = console(page_settings(public_url=PUBLIC, twitch_client_secret=None))
    try:
        page = public.get("/console/twitch").text
        refused = public.post("/console/twitch/connect", data={"csrf": page_csrf(public)}, follow_redirects=False)
    finally:
        public.__exit__(None, None, None)
    assert "TWITCH_CLIENT_SECRET is not set" in page and "wetbot-rewards twitch connect" in page
    assert refused.status_code == 303 and refused.headers["location"] == "/console/twitch"


def test_the_connect_button_needs_the_forms_csrf_token(public_client: TestClient, redis: Redis, keys: Keys) -> None:
    answer = public_client.post("/console/twitch/connect", data={"csrf": "forged"}, follow_redirects=False)
    assert answer.status_code == 403
    assert not list(redis.scan_iter(match=f"{keys.prefix}:console:twitch-state:*"))


def test_disconnect_revokes_at_twitch_and_is_safe_twice(
    client: TestClient, vault: TokenVault, oauth: OAuthClient
) -> None:
    stored = connect(vault, oauth)
    page = client.get("/console/twitch").text
    assert 'data-action="twitch-disconnect"' in page
    client.post("/console/twitch/disconnect", data={"csrf": page_csrf(client)}, follow_redirects=False)
    page = client.get("/console/twitch").text
    assert token_state(page) == "not connected" and "its tokens were revoked at Twitch" in page
    with pytest.raises(InvalidAccessToken):
        oauth.validate(stored.access_token)
    with pytest.raises(InvalidRefreshToken):
        oauth.refresh(stored.refresh_token)
    answer = client.post("/console/twitch/disconnect", data={"csrf": page_csrf(client)}, follow_redirects=False)
    assert answer.status_code == 303
    assert "No channel was connected: nothing to do" in client.get("/console/twitch").text


def test_the_cli_disconnects_twice(
    vault: TokenVault, oauth: OAuthClient, twitch: TwitchSimulator, prefix: str, rules_file: Path
) -> None:
    stored = connect(vault, oauth)
    env = {
        **os.environ,
        "TWITCH_CLIENT_ID": DEFAULT_CLIENT_ID,
        "TWITCH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "TWITCH_AUTH_URL": twitch.auth_url,
        "TOKEN_ENCRYPTION_KEY": KEY.get_secret_value(),
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "REWARDS_FILE": str(rules_file),
    }

    def disconnect() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "wetbot_rewards.cli", "twitch", "disconnect"]
        return subprocess.run(command, env=env, cwd=rules_file.parent, capture_output=True, text=True, timeout=60)

    first = disconnect()
    assert first.returncode == 0, first.stderr
    assert f"disconnected {DEFAULT_BROADCASTER.login} ({DEFAULT_BROADCASTER.id})" in first.stdout
    with pytest.raises(InvalidAccessToken):
        oauth.validate(stored.access_token)
    assert vault.state().state.value == "not_connected"
    second = disconnect()
    assert second.returncode == 0 and "no Twitch channel was connected: nothing to do" in second.stdout
    for secret in (stored.access_token, stored.refresh_token):
        assert secret not in first.stdout + first.stderr + second.stdout + second.stderr
    assert connect(vault, oauth).version == 2, "a connection after a disconnect writes a newer version"
