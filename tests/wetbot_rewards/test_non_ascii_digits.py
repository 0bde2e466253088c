"""Every way in refuses ids and numbers that are not plain ASCII digits: the API with a 422/400 JSON body, the
console with a 400 page of its own, the command line with one line and exit status 1, the rewards file with
its one-line error. Never a 500, never a grant or a link.

``str.isdigit()`` accepts ``'²'`` and Arabic-Indic digits and ``int()`` accepts ``' 12'``, ``'+5'`` and
``'1_000'``: each surface is driven with those forms (``config.domain`` holds the rules).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from config.errors import RewardsFileError
from config.keyring import parse_api_keys
from config.rewards import parse_rewards
from config.settings import Settings
from tests.conftest import GUILD, TOKEN, USER, SettingsFactory
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main
from worker.grant import GrantItem, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

ADMIN = "admin-token-non-ascii-digits-7731"
AS_SUPPLIER = {"Authorization": f"Bearer {TOKEN}"}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}

#: Discord ids no one sent on purpose, each 17-20 characters long.
BAD_DISCORD_IDS = {
    "arabic-indic": "\u0662" * 18,
    "superscript": "²" * 18,
    "full-width": "\uff12" * 18,
    "leading-space": " " + USER[1:],
    "trailing-newline": USER + "\n",
    "plus-sign": "+" + USER[1:],
    "underscore": USER[:9] + "_" + USER[10:],
}
#: Numbers (counts, cursors, versions, platform ids) no one sent on purpose.
BAD_NUMBERS = {"superscript": "²", "arabic-indic": "\u0661\u0662", "space": " 12", "plus": "+5", "underscore": "1_0"}


@pytest.fixture
def app_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(admin_token=ADMIN)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as test_client:
        yield test_client


def links_of(redis: Redis, keys: Keys) -> list[bytes]:
    return list(redis.scan_iter(match=f"{keys.prefix}:link*"))


# --- the HTTP API ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["user_id", "guild_id"])
@pytest.mark.parametrize("bad", BAD_DISCORD_IDS.values(), ids=BAD_DISCORD_IDS.keys())
def test_post_grants_refuses_them_with_422_and_queues_nothing(
    client: TestClient, ledger: Ledger, field: str, bad: str
) -> None:
    body = {"guild_id": GUILD, "user_id": USER, "items": [{"item_id": "gem", "amount": 1}], field: bad}
    answer = client.post("/grants", json=body, headers=AS_SUPPLIER)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith(f"{field}: expected a Discord id")
    assert ledger.list_grants() == []


@pytest.mark.parametrize("bad", ["k²", "k\n", " k", "", "k" * 201])
def test_post_grants_refuses_an_idempotency_key_the_command_line_refuses(
    client: TestClient, ledger: Ledger, bad: str
) -> None:
    body = {"user_id": USER, "items": [{"item_id": "gem", "amount": 1}], "idempotency_key": bad}
    answer = client.post("/grants", json=body, headers=AS_SUPPLIER)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith("idempotency_key: expected 1-200 printable ASCII characters")
    assert ledger.list_grants() == []


@pytest.mark.parametrize("bad", BAD_DISCORD_IDS.values(), ids=BAD_DISCORD_IDS.keys())
def test_post_links_refuses_a_bad_discord_id(client: TestClient, redis: Redis, keys: Keys, bad: str) -> None:
    answer = client.post(
        "/links", json={"platform": "twitch", "external_id": "42", "discord_user_id": bad}, headers=AS_SUPPLIER
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith("discord_user_id: expected a Discord id")
    assert links_of(redis, keys) == []


@pytest.mark.parametrize("bad", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_links_refuse_a_platform_id_that_is_not_ascii_digits(
    client: TestClient, redis: Redis, keys: Keys, bad: str
) -> None:
    answer = client.post(
        "/links", json={"platform": "twitch", "external_id": bad, "discord_user_id": USER}, headers=AS_SUPPLIER
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith("external_id: expected a numeric user id")
    assert links_of(redis, keys) == []
    assert client.delete(f"/links/twitch/{bad}", headers=AS_SUPPLIER).status_code == 422


@pytest.mark.parametrize(
    "query",
    [
        *(f"/admin/events?limit={bad}" for bad in BAD_NUMBERS.values()),
        *(f"/admin/grants?limit={bad}" for bad in BAD_NUMBERS.values()),
        "/admin/grants?limit=12.0",
    ],
)
def test_operator_api_page_sizes_refuse_them_with_422_json(client: TestClient, query: str) -> None:
    answer = client.get(query, headers=AS_ADMIN)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith("limit: ")


@pytest.mark.parametrize("name", ["cursor", "before_ms"])  # before_ms: the old name, for one release
@pytest.mark.parametrize("bad", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_operator_api_event_cursor_refuses_them_with_400_json(client: TestClient, name: str, bad: str) -> None:
    answer = client.get("/admin/events", params={name: bad}, headers=AS_ADMIN)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("cursor: expected a whole number")


@pytest.mark.parametrize("bad", BAD_DISCORD_IDS.values(), ids=BAD_DISCORD_IDS.keys())
def test_operator_api_guild_filter_refuses_them_with_400_json(client: TestClient, bad: str) -> None:
    answer = client.get("/admin/grants", params={"guild_id": bad}, headers=AS_ADMIN)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("guild: expected a Discord id")


# --- the console ---------------------------------------------------------------------------------------------------
def logged_in(client: TestClient) -> str:
    """Log in with the admin token; returns the csrf token of the session's pages."""
    page = client.get("/console/login")
    login_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    answer = client.post("/console/login", data={"csrf": login_csrf, "token": ADMIN}, follow_redirects=False)
    assert answer.status_code == 303
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/console/links").text)[1]  # type: ignore[index]


def assert_console_page(answer: object, status: int) -> None:
    assert getattr(answer, "status_code", None) == status, getattr(answer, "text", "")
    headers = getattr(answer, "headers", {})
    assert headers["content-type"].startswith("text/html")
    assert 'data-page="message"' in getattr(answer, "text", "")


@pytest.mark.parametrize(
    "path",
    [
        *(f"/console/events?before_ms={bad}" for bad in ["%C2%B2", "%D9%A1%D9%A2", "%2012", "%2B5", "1_0"]),
        *(f"/console/grants?guild={bad}" for bad in ["%C2%B2" * 18, "%D9%A2" * 18, "%2B" + USER[1:]]),
    ],
)
def test_console_queries_refuse_them_with_its_own_400_page(client: TestClient, path: str) -> None:
    logged_in(client)
    answer = client.get(path)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert '"detail"' not in answer.text  # the console's page, not the API's JSON body


def test_console_grants_list_with_an_unknown_state_is_its_400_page(client: TestClient) -> None:
    logged_in(client)
    answer = client.get("/console/grants", params={"state": "\u00b2"})
    assert answer.status_code == 400 and "state: not a grant state" in answer.text


def test_console_audit_paging_with_a_non_ascii_cursor_shows_the_first_page(client: TestClient) -> None:
    logged_in(client)
    answer = client.get("/console/audit", params={"before": "²-0"})
    assert answer.status_code == 200, answer.text  # was Redis's "invalid stream ID": a 503 page


@pytest.mark.parametrize("bad", ["²", "\u0661\u0662", "+5", "1_0"])  # (a form's fields are stripped: " 12" is 12)
def test_console_action_with_a_non_ascii_version_is_a_400_page_and_does_nothing(
    client: TestClient, ledger: Ledger, bad: str
) -> None:
    grant = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:v")).grant
    csrf = logged_in(client)
    answer = client.post(f"/console/grants/{grant.id}/cancel", data={"csrf": csrf, "reason": "r", "version": bad})
    assert_console_page(answer, 400)
    assert "version: expected a whole number" in answer.text
    assert ledger.get(grant.id) == grant


#: What a console form still holds after its fields are stripped.
UNSTRIPPED = {name: bad for name, bad in BAD_DISCORD_IDS.items() if bad == bad.strip()}


@pytest.mark.parametrize("bad", UNSTRIPPED.values(), ids=UNSTRIPPED.keys())
def test_console_link_form_refuses_a_bad_discord_id(client: TestClient, redis: Redis, keys: Keys, bad: str) -> None:
    csrf = logged_in(client)
    form = {"csrf": csrf, "platform": "twitch", "external_id": "42", "discord_user_id": bad}
    answer = client.post("/console/links", data=form)
    assert answer.status_code == 200 and "Not linked: discord_user_id: expected a Discord id" in answer.text
    assert links_of(redis, keys) == []


# --- the command line ----------------------------------------------------------------------------------------------
def cli_cases() -> Iterator[object]:
    for name, bad in BAD_DISCORD_IDS.items():
        yield pytest.param(
            ["grants", "create", "--user", bad, "--item", "gem=1"], "--user: expected a Discord id", id=f"user-{name}"
        )
        guild = ["grants", "create", "--user", USER, "--guild", bad, "--item", "gem=1"]
        yield pytest.param(guild, "--guild: expected a Discord id", id=f"guild-{name}")
        yield pytest.param(["grants", "list", "--guild", bad], "--guild: expected a Discord id", id=f"filter-{name}")
        yield pytest.param(["grants", "list", "--user", bad], "--user: expected a Discord id", id=f"list-user-{name}")
        yield pytest.param(
            ["grants", "replay", "--all", "--user", bad], "--user: expected a Discord id", id=f"replay-user-{name}"
        )
        yield pytest.param(
            ["links", "add", "twitch", "42", bad], "discord_user_id: expected a Discord id", id=f"link-{name}"
        )
    for name, bad in {"superscript": "k²", "trailing-newline": "k\n", "leading-space": " k", "empty": ""}.items():
        yield pytest.param(  # as POST /grants refuses them in idempotency_key
            ["grants", "create", "--user", USER, "--item", "gem=1", "--key", bad],
            "--key: expected 1-200 printable ASCII characters",
            id=f"key-{name}",
        )
    create = ["grants", "create", "--user", USER, "--item", "gem=1", "--guild", ""]  # "" is not the default guild
    yield pytest.param(create, "--guild: expected a Discord id", id="create-empty-guild")
    for option in ("--twitch", "--patreon", "--search", "--source"):  # "" is not "every grant", as with --guild
        replay = ["grants", "replay", "--all", option, ""]
        yield pytest.param(replay, f"{option}: must not be empty", id=f"replay-empty-{option[2:]}")
    for noun in (["grants", "list"], ["grants", "replay", "--all"]):  # "" is not "every guild"
        yield pytest.param([*noun, "--guild", ""], "--guild: expected a Discord id", id=f"{noun[1]}-empty-guild")
        yield pytest.param([*noun, "--user", ""], "--user: expected a Discord id", id=f"{noun[1]}-empty-user")
    for name, bad in BAD_NUMBERS.items():
        if name != "plus":  # +5 is an amount
            yield pytest.param(
                ["grants", "create", "--user", USER, "--item", f"gem={bad}"],
                "amount is not a number",
                id=f"amount-{name}",
            )
        yield pytest.param(["grants", "list", "--limit", bad], "--limit: expected a whole number", id=f"limit-{name}")
        yield pytest.param(
            ["grants", "list", "--state", "dead", "--limit", bad], "--limit: expected a whole number", id=f"dead-{name}"
        )
        yield pytest.param(["events", "list", "--limit", bad], "--limit: expected a whole number", id=f"events-{name}")
        yield pytest.param(
            ["links", "add", "twitch", bad, USER], "external_id: expected a numeric user id", id=f"external-{name}"
        )


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(("argv", "message"), list(cli_cases()))
def test_the_command_line_refuses_them_in_one_line_with_exit_1(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wetbot-rewards: ") and message in err, err
    assert ledger.list_grants() == []
    assert links_of(redis, keys) == []


# --- the rewards file ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", BAD_DISCORD_IDS.values(), ids=BAD_DISCORD_IDS.keys())
def test_the_rewards_file_refuses_them_as_a_guild_id(bad: str) -> None:
    with pytest.raises(RewardsFileError, match="guild_id: must be a Discord id"):
        parse_rewards({"guild_id": bad}, source="rewards.toml")


@pytest.mark.parametrize("bad", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_the_rewards_file_refuses_them_as_a_twitch_link(bad: str) -> None:
    with pytest.raises(RewardsFileError, match="must be a Twitch user id"):
        parse_rewards({"guild_id": GUILD, "twitch": {"links": {bad: USER}}}, source="rewards.toml")


#: Item ids ``POST /grants`` refuses (``config.domain.item_id``): the rewards file must refuse them too.
BAD_ITEM_IDS = {
    "trailing-newline": "gem\n",
    "leading-space": " gem",
    "nul": "g\x00m",
    "slash": "a/b",
    "bidi": "g\u202em",
}


@pytest.mark.parametrize("bad", BAD_ITEM_IDS.values(), ids=BAD_ITEM_IDS.keys())
def test_the_rewards_file_refuses_an_item_id_the_api_refuses(bad: str) -> None:
    rule = {"name": "cheer", "event": "channel.cheer", "per_bits": 100, "items": [{"item_id": bad, "amount": 1}]}
    with pytest.raises(RewardsFileError, match=r"items\[0\]\.item_id: expected 1-100 printable|must be printable"):
        parse_rewards({"guild_id": GUILD, "twitch": {"rules": [rule]}}, source="rewards.toml")


# --- the environment -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", UNSTRIPPED.values(), ids=UNSTRIPPED.keys())  # entries are stripped
def test_wetbot_api_keys_refuse_them_as_a_guild_id(bad: str) -> None:
    with pytest.raises(ValueError, match="guild ids are 17-20 digits 0-9"):
        parse_api_keys(f"{bad}=some-key")
