"""People by login: ``links add twitch:<login>`` and the console's link form resolve a Twitch login through Helix
(the Twitch simulator over HTTP, as the connected broadcaster) to the id, remember the login and display name
next to it, refuse an unknown login in one line, and keep numeric ids working without Helix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from producers.twitch.logins import LinkNames, twitch_login
from producers.twitch.oauth import OAuthClient
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from tests.admin.console.test_console_http import console_settings, log_in, page_csrf
from tests.conftest import USER
from tests.producers.twitch.test_tokens import KEY, connect
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main
from worker.keys import Keys

#: The simulator's viewer ``cooler_user`` (display name Cooler_User).
VIEWER_ID = "9001"


@pytest.fixture
def connected(redis: Redis, keys: Keys, oauth: OAuthClient) -> None:
    connect(TokenVault(redis, keys, KEY, oauth), oauth)


@pytest.fixture
def twitch_env(cli_env: None, monkeypatch: pytest.MonkeyPatch, twitch: TwitchSimulator) -> None:
    monkeypatch.setenv("TWITCH_CLIENT_ID", DEFAULT_CLIENT_ID)
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
    monkeypatch.setenv("TWITCH_API_URL", twitch.api_url)
    monkeypatch.setenv("TWITCH_AUTH_URL", twitch.auth_url)
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", KEY.get_secret_value())


def links_of(redis: Redis, keys: Keys) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(keys.links("twitch")).items()}  # type: ignore[union-attr]


def users_calls(twitch: TwitchSimulator) -> int:
    return sum(1 for r in twitch.requests() if r.path == "/helix/users")


@pytest.mark.parametrize(
    ("text", "login"),
    [("Cooler_User", "cooler_user"), ("@cooler_user", "cooler_user"), (" abcd ", "abcd"), ("a" * 25, "a" * 25)],
)
def test_a_login_follows_twitchs_rule_case_insensitively(text: str, login: str) -> None:
    assert twitch_login(text) == login


@pytest.mark.parametrize(
    "text", ["abc", "a" * 26, "cool-user", "cööl_user", "cool user", "", "\uff11\uff12\uff13\uff14"]
)
def test_what_cannot_be_a_login(text: str) -> None:
    assert twitch_login(text) is None


@pytest.mark.usefixtures("twitch_env", "connected")
def test_links_add_by_login_links_the_id_and_remembers_the_names(
    redis: Redis, keys: Keys, twitch: TwitchSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["links", "add", "twitch:Cooler_User", USER]) == 0
    out = capsys.readouterr().out
    assert f"twitch user cooler_user ({VIEWER_ID}) linked to Discord user {USER}" in out
    assert links_of(redis, keys) == {VIEWER_ID: USER}
    assert LinkNames(redis, keys).all("twitch") == {VIEWER_ID: ("cooler_user", "Cooler_User")}
    assert users_calls(twitch) == 1


@pytest.mark.usefixtures("twitch_env", "connected")
def test_an_unknown_login_is_one_line_and_links_nothing(
    redis: Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["links", "add", "twitch:nobody_here", USER]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Twitch user has the login 'nobody_here'" in err, err
    assert main(["links", "add", "twitch:no", USER]) == 1
    assert "is not a Twitch login (4-25 characters" in capsys.readouterr().err
    assert links_of(redis, keys) == {}


@pytest.mark.usefixtures("twitch_env")
def test_numeric_ids_need_no_helix_and_a_login_without_a_channel_says_so(
    redis: Redis, keys: Keys, twitch: TwitchSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["links", "add", "twitch", "4242", USER]) == 0
    assert main(["links", "add", "twitch:77", USER]) == 0
    assert links_of(redis, keys) == {"4242": USER, "77": USER}
    assert users_calls(twitch) == 0
    assert main(["links", "add", "twitch:cooler_user", USER]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "twitch connect" in err, err
    with pytest.raises(SystemExit) as usage:
        main(["links", "add", "twitch:cooler_user"])  # no Discord id: argparse's usage error
    assert usage.value.code == 2
    capsys.readouterr()
    assert main(["links", "add", "twitch:cooler_user", USER, USER]) == 1
    assert "expected 2 arguments" in capsys.readouterr().err


@pytest.fixture
def console(prefix: str, rewards_file: Path, twitch: TwitchSimulator, connected: None) -> Iterator[TestClient]:
    settings = console_settings(
        prefix,
        rewards_file,
        twitch_client_id=DEFAULT_CLIENT_ID,
        twitch_client_secret=DEFAULT_CLIENT_SECRET,
        twitch_api_url=twitch.api_url,
        twitch_auth_url=twitch.auth_url,
        token_encryption_key=KEY,
    )
    with TestClient(create_app(settings)) as client:
        log_in(client)
        yield client


def test_the_console_links_by_login_and_shows_the_names(console: TestClient, redis: Redis, keys: Keys) -> None:
    form = {"platform": "twitch", "external_id": "@Cooler_User", "discord_user_id": USER}
    page = console.post("/console/links", data={"csrf": page_csrf(console), **form})
    assert page.status_code == 200 and f"Linked twitch user {VIEWER_ID} to Discord {USER}" in page.text
    assert links_of(redis, keys) == {VIEWER_ID: USER}
    row = re.search(rf'<tr data-link="twitch:{VIEWER_ID}".*?</tr>', page.text, re.S)
    assert row is not None and 'data-field="link-name">Cooler_User<' in row[0]
    found = console.get("/console/links", params={"q": "cooler"}).text
    assert f'data-link="twitch:{VIEWER_ID}"' in found, "the search finds a link by login"

    unknown = {"platform": "twitch", "external_id": "nobody_here", "discord_user_id": USER}
    refused = console.post("/console/links", data={"csrf": page_csrf(console), **unknown})
    assert "Not linked: no Twitch user has the login &#39;nobody_here&#39;" in refused.text
    assert links_of(redis, keys) == {VIEWER_ID: USER}
