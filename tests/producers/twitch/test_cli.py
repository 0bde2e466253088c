"""``twitch send-test`` against the app under uvicorn, and ``twitch subscribe`` against the Twitch simulator, over
real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from config.rewards import parse_rewards
from producers.twitch.cli import WantedSubscription, wanted_subscriptions
from producers.twitch.helix import HelixClient
from producers.twitch.samples import SAMPLE_REWARD_ID
from simulator.twitch import DEFAULT_CLIENT_ID as CLIENT_ID
from simulator.twitch import DEFAULT_CLIENT_SECRET as CLIENT_SECRET
from simulator.twitch import TwitchSimulator
from tests.conftest import GUILD, USER, SettingsFactory, serve_app
from tests.producers.twitch.test_webhook import LINK_REWARD, LINKED_TWITCH, RULES, SECRET
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main
from worker.grant import GrantState
from worker.ledger import Ledger

CALLBACK = "https://rewards.example.com/webhooks/twitch"
BROADCASTER = "1337"
REDEMPTION = "channel.channel_points_custom_reward_redemption.add"


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "twitch-rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return path


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_settings: SettingsFactory, rules_file: Path) -> None:
    settings = make_settings()
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", settings.redis_key_prefix)
    monkeypatch.setenv("REWARDS_FILE", str(rules_file))
    monkeypatch.setenv("TWITCH_WEBHOOK_SECRET", SECRET)


# -- twitch send-test -----------------------------------------------------------------------------


@pytest.fixture
def served(make_settings: SettingsFactory, rules_file: Path) -> Iterator[str]:
    """The real app under uvicorn on a loopback port; yields its base URL."""
    with serve_app(create_app(make_settings(rewards_file=rules_file, twitch_webhook_secret=SECRET))) as url:
        yield url


@pytest.mark.usefixtures("cli_env")
def test_send_test_posts_a_signed_sample_and_prints_the_answer(
    served: str, ledger: Ledger, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["twitch", "send-test", "channel.cheer", "--url", served, "--user-id", LINKED_TWITCH]) == 0
    out = capsys.readouterr().out
    assert "answer: 200 OK" in out and SECRET not in out
    [grant] = ledger.list_grants()
    assert (grant.state, grant.user_id, grant.rule, grant.items[0].amount) == (GrantState.QUEUED, USER, "cheer", 10)

    # Without --url it uses $PORT; the reward id defaults to the rules file's first redemption rule.
    monkeypatch.setenv("PORT", served.rsplit(":", 1)[1])
    assert main(["twitch", "send-test", "channel.channel_points_custom_reward_redemption.add"]) == 0
    assert "answer: 200" in capsys.readouterr().out
    assert {g.rule for g in ledger.list_grants()} == {"cheer", "potion"}

    assert main(["twitch", "send-test", "channel.follow", "--message-type", "webhook_callback_verification"]) == 0
    out = capsys.readouterr().out
    assert "answer: 200 OK" in out and "challenge-" in out


@pytest.mark.usefixtures("cli_env")
def test_send_test_link_reward(served: str, ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "twitch",
        "send-test",
        "channel.channel_points_custom_reward_redemption.add",
        "--url",
        served,
        "--user-id",
        "808",
        "--reward-id",
        LINK_REWARD,
        "--user-input",
        USER,
    ]
    assert main(args) == 0
    [grant] = ledger.list_grants()
    assert grant.user_id == USER and grant.rule == "link"


@pytest.mark.usefixtures("cli_env")
def test_send_test_names_the_reward_a_title_rule_names(
    make_settings: SettingsFactory, rules_file: Path, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    rules_file.write_text(
        f'guild_id = "{GUILD}"\n[[twitch.rules]]\nname = "chest"\nevent = "{REDEMPTION}"\nreward = "Daily chest"\n'
        'items = [{ id = "chest", amount = 1 }]\n',
        encoding="utf-8",
    )
    with serve_app(create_app(make_settings(rewards_file=rules_file, twitch_webhook_secret=SECRET))) as url:
        assert main(["twitch", "send-test", REDEMPTION, "--url", url]) == 0
        assert "answer: 200" in capsys.readouterr().out
    assert [g.rule for g in ledger.list_grants()] == ["chest"]


@pytest.mark.usefixtures("cli_env")
def test_send_test_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert main(["twitch", "send-test", "channel.cheer", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert "cannot reach" in capsys.readouterr().err
    assert main(["twitch", "send-test", "channel.cheer", "--user-id", "abc"]) == 1
    assert "--user-id" in capsys.readouterr().err
    monkeypatch.delenv("TWITCH_WEBHOOK_SECRET")
    assert main(["twitch", "send-test", "channel.cheer"]) == 1
    assert "TWITCH_WEBHOOK_SECRET is not set" in capsys.readouterr().err


@pytest.mark.usefixtures("cli_env")
def test_send_test_reports_a_refusal(
    make_settings: SettingsFactory,
    rules_file: Path,
    served: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWITCH_WEBHOOK_SECRET", "a-different-secret-xyz")
    assert main(["twitch", "send-test", "channel.raid", "--url", served]) == 1
    out = capsys.readouterr().out
    assert "answer: 403 Forbidden" in out and "signature" in out and "a-different-secret-xyz" not in out


# -- twitch subscribe ----------------------------------------------------------------------------------


#: What the broadcaster granted our app: every scope the rules' subscription types need.
GRANTED = ["channel:read:subscriptions", "bits:read", "channel:read:redemptions", "moderator:read:followers"]


@pytest.fixture
def helix(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwitchSimulator]:
    with TwitchSimulator() as sim:
        sim.set_subscription_page_size(2)
        monkeypatch.setenv("TWITCH_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("TWITCH_CLIENT_SECRET", CLIENT_SECRET)
        monkeypatch.setenv("TWITCH_API_URL", sim.api_url)
        monkeypatch.setenv("TWITCH_AUTH_URL", f"{sim.auth_url}/token")  # the older spelling keeps working
        yield sim


def connect(sim: TwitchSimulator, scopes: list[str] = GRANTED) -> None:
    """The broadcaster authorised our app for ``scopes`` (webhook subscriptions check that grant)."""
    sim.issue_user_token(scopes=scopes)


def arrange(
    sim: TwitchSimulator, kind: str, version: str, condition: dict[str, str], callback: str, status: str = "enabled"
) -> str:
    """An existing subscription, made through Helix with its own app token; returns its id."""
    body = {
        "type": kind,
        "version": version,
        "condition": condition,
        "transport": {"method": "webhook", "callback": callback, "secret": "arranged-secret"},
    }
    headers = {"Authorization": f"Bearer {sim.issue_app_token()}", "Client-Id": CLIENT_ID}
    with requests.Session() as session:
        session.trust_env = False
        response = session.post(f"{sim.api_url}/eventsub/subscriptions", json=body, headers=headers)
    assert response.status_code == 202, response.text
    sub_id = str(response.json()["data"][0]["id"])
    sim.set_subscription_status(sub_id, status)
    return sub_id


def creates(sim: TwitchSimulator) -> int:
    return sum(1 for r in sim.requests() if r.method == "POST" and r.path == "/helix/eventsub/subscriptions")


def created(sim: TwitchSimulator) -> list[tuple[str, str, dict[str, str], str, str]]:
    """(type, version, condition, callback, secret) of every subscription, in creation order."""
    return [(s.type, s.version, s.condition, s.callback, s.secret) for s in sim.eventsub.subscriptions]


SUBSCRIBE = ["twitch", "subscribe", "--callback", CALLBACK, "--broadcaster-id", BROADCASTER]
EXPECTED = [
    ("channel.subscribe", "1", {"broadcaster_user_id": BROADCASTER}),
    ("channel.subscription.gift", "1", {"broadcaster_user_id": BROADCASTER}),
    ("channel.subscription.message", "1", {"broadcaster_user_id": BROADCASTER}),
    ("channel.cheer", "1", {"broadcaster_user_id": BROADCASTER}),
    (
        "channel.channel_points_custom_reward_redemption.add",
        "1",
        {"broadcaster_user_id": BROADCASTER, "reward_id": SAMPLE_REWARD_ID},
    ),
    (
        "channel.channel_points_custom_reward_redemption.add",
        "1",
        {"broadcaster_user_id": BROADCASTER, "reward_id": LINK_REWARD},
    ),
    ("channel.follow", "2", {"broadcaster_user_id": BROADCASTER, "moderator_user_id": BROADCASTER}),
    ("channel.raid", "1", {"to_broadcaster_user_id": BROADCASTER}),
]


def outputs(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.mark.usefixtures("cli_env")
def test_subscribe_creates_what_the_rules_need_once(helix: TwitchSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    connect(helix)
    assert main(SUBSCRIBE) == 0
    first = outputs(capsys)
    assert [(kind, version, condition) for kind, version, condition, _, _ in created(helix)] == EXPECTED
    assert all((callback, secret) == (CALLBACK, SECRET) for _, _, _, callback, secret in created(helix))
    assert "8 created, 0 already there, 0 failed" in first
    token_requests = [r for r in helix.requests() if r.path == "/oauth2/token"]
    assert len(token_requests) == 1
    assert all(r.client_id == CLIENT_ID for r in helix.requests() if r.path.startswith("/helix"))

    assert main(SUBSCRIBE) == 0  # the listing spans 4 pages of 2
    second = outputs(capsys)
    assert creates(helix) == 8
    assert "0 created, 8 already there, 0 failed" in second
    for text in (first, second):
        assert SECRET not in text and CLIENT_SECRET not in text
        assert not any(token in text for token in helix.oauth.tokens)


@pytest.mark.usefixtures("cli_env")
def test_subscribe_replaces_dead_ones_and_counts_broader_ones(
    helix: TwitchSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    connect(helix)
    revoked = arrange(
        helix, "channel.cheer", "1", {"broadcaster_user_id": BROADCASTER}, CALLBACK, status="authorization_revoked"
    )
    arrange(
        helix,
        "channel.channel_points_custom_reward_redemption.add",
        "1",
        {"broadcaster_user_id": BROADCASTER},
        CALLBACK,
    )  # every reward
    arrange(helix, "channel.raid", "1", {"to_broadcaster_user_id": BROADCASTER}, CALLBACK)  # "" from listed
    arrange(
        helix,
        "channel.follow",
        "2",
        {"broadcaster_user_id": BROADCASTER, "moderator_user_id": BROADCASTER},
        "https://elsewhere.example/cb",
    )
    assert main(SUBSCRIBE) == 0
    out = outputs(capsys)
    assert "removing channel.cheer v1 (broadcaster_user_id=1337): authorization_revoked" in out
    assert revoked not in {s["id"] for s in helix.subscriptions()}
    # The three arranged ones still there, then the CLI's; its follow create met a 409 (5 creates, 4 stored).
    assert [kind for kind, *_ in created(helix)][3:] == [
        "channel.subscribe",
        "channel.subscription.gift",
        "channel.subscription.message",
        "channel.cheer",
    ]
    assert creates(helix) == 4 + 5
    # The follow subscription with another callback blocks a second one (409), and the output says where it sends.
    assert "already exists, sending to https://elsewhere.example/cb" in out
    assert "4 created, 4 already there, 0 failed" in out


@pytest.mark.usefixtures("cli_env")
def test_subscribe_reports_refusals_and_carries_on(helix: TwitchSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    connect(helix, [scope for scope in GRANTED if scope != "bits:read"])  # cheers not authorised
    assert main(SUBSCRIBE) == 1
    out = outputs(capsys)
    assert "FAILED   channel.cheer v1" in out and "missing proper authorization" in out
    assert "7 created, 0 already there, 1 failed" in out


@pytest.mark.usefixtures("cli_env")
def test_subscribe_dry_run_creates_nothing(helix: TwitchSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SUBSCRIBE, "--dry-run"]) == 0
    assert outputs(capsys).count("would create") == 8 and creates(helix) == 0


@pytest.mark.usefixtures("cli_env")
def test_subscribe_input_errors(
    helix: TwitchSimulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["twitch", "subscribe", "--callback", "http://plain.example/cb", "--broadcaster-id", "1"]) == 1
    assert "https" in outputs(capsys)
    assert main(["twitch", "subscribe", "--callback", CALLBACK, "--broadcaster-id", "me"]) == 1
    assert "--broadcaster-id" in outputs(capsys)
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", "wrong-client-secret")
    assert main(SUBSCRIBE) == 1
    out = outputs(capsys)
    assert "refused the app credentials" in out and "wrong-client-secret" not in out
    monkeypatch.delenv("TWITCH_CLIENT_ID")
    monkeypatch.delenv("TWITCH_CLIENT_SECRET")
    assert main(SUBSCRIBE) == 1
    assert "TWITCH_CLIENT_ID, TWITCH_CLIENT_SECRET must be set" in outputs(capsys)
    monkeypatch.setenv("TWITCH_API_URL", "http://127.0.0.1:1/helix")
    monkeypatch.setenv("TWITCH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", CLIENT_SECRET)
    assert main(SUBSCRIBE) == 1
    assert "cannot reach Twitch" in outputs(capsys)


def test_a_title_rule_subscribes_to_every_reward_once() -> None:
    """A title rule's reward id is unknown here: one subscription for every reward replaces the per-reward ones."""

    def redemption(name: str, **reward: str) -> dict[str, object]:
        return {"event": REDEMPTION, "name": name, "items": [{"id": "a", "amount": 1}], **reward}

    by_id = redemption("by-id", reward_id=SAMPLE_REWARD_ID)
    rules = [by_id, redemption("by-title", reward="Daily chest"), redemption("other", reward="Potion")]
    twitch = parse_rewards({"guild_id": GUILD, "twitch": {"rules": rules}}).twitch
    assert wanted_subscriptions(twitch, BROADCASTER) == [
        WantedSubscription(REDEMPTION, "1", {"broadcaster_user_id": BROADCASTER})
    ]
    only_ids = parse_rewards({"guild_id": GUILD, "twitch": {"rules": [by_id]}}).twitch
    assert wanted_subscriptions(only_ids, BROADCASTER) == [
        WantedSubscription(REDEMPTION, "1", {"broadcaster_user_id": BROADCASTER, "reward_id": SAMPLE_REWARD_ID})
    ]


def test_helix_client_fetches_a_new_token_after_a_401(helix: TwitchSimulator) -> None:
    connect(helix)
    client = HelixClient(
        api_url=helix.api_url,
        auth_url=helix.auth_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    try:
        assert client.list_subscriptions() == []
        helix.expire_access_tokens()  # the app token died
        arrange(helix, "channel.cheer", "1", {"broadcaster_user_id": BROADCASTER}, CALLBACK)
        [listed] = client.list_subscriptions()
        assert listed.type == "channel.cheer" and listed.active
        client.delete_subscription(listed.id)
        client.delete_subscription(listed.id)  # already gone: fine
        assert helix.subscriptions() == []
    finally:
        client.close()
    assert len([r for r in helix.requests() if r.path == "/oauth2/token"]) == 2
