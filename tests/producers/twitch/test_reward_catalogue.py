"""Rewards by name: the reward sync against the Twitch simulator over HTTP and a real Redis (create, update only
what changed, another app's reward with the same title, titles resolved, none or several matching, a rename, a
429), and a real signed webhook into the real app matching a renamed reward by the id the sync stored."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from redis import Redis

from config.rewards import OwnedReward, TwitchSection, parse_rewards
from config.settings import Settings
from producers.twitch.broadcaster_api import BroadcasterHelix, ChannelReward
from producers.twitch.oauth import OAuthClient
from producers.twitch.reward_catalogue import AMBIGUOUS, RewardCatalogue, RewardSync, reward_changes
from producers.twitch.samples import sample_payload, signed_request
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from tests.admin.console.test_console_http import console_settings, log_in
from tests.conftest import API_KEY, GUILD, TEST_REDIS_URL, SettingsFactory, wait_for
from tests.producers.twitch.test_tokens import KEY, connect, make_oauth
from wetbot_rewards.app import create_app
from worker.keys import Keys

SECRET = "twitch-test-secret-4b8c2d"
REWARDS_PATH = "/helix/channel_points/custom_rewards"
REDEMPTION = "channel.channel_points_custom_reward_redemption.add"


class SentBodies:
    """The JSON bodies of the reward PATCHes and POSTs sent (a response hook on the client's session)."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.posts: list[dict[str, Any]] = []

    def hook(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        request = response.request
        if request.url is None or REWARDS_PATH + "?" not in request.url or request.body is None:
            return
        body = json.loads(request.body)
        (self.patches if request.method == "PATCH" else self.posts).append(body)


@pytest.fixture
def sent() -> SentBodies:
    return SentBodies()


@pytest.fixture
def helix(
    twitch: TwitchSimulator, redis: Redis, keys: Keys, oauth: OAuthClient, sent: SentBodies
) -> Iterator[BroadcasterHelix]:
    vault = TokenVault(redis, keys, KEY, oauth)
    connect(vault, oauth)
    session = requests.Session()
    session.hooks["response"].append(sent.hook)
    client = BroadcasterHelix(
        api_url=twitch.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault, timeout_s=5.0, session=session
    )
    yield client
    client.close()


@pytest.fixture
def catalogue(redis: Redis, keys: Keys) -> RewardCatalogue:
    return RewardCatalogue(redis, keys)


def section(text: str) -> TwitchSection:
    import tomllib

    return parse_rewards(tomllib.loads(f'guild_id = "{GUILD}"\n' + text)).twitch


def rule(name: str, title: str) -> str:
    return f"""
[[twitch.rules]]
name = "{name}"
event = "{REDEMPTION}"
reward = "{title}"
items = [{{ id = "chest", amount = 1 }}]
"""


def table(title: str, cost: int, extra: str = "") -> str:
    return f'\n[[twitch.rewards]]\ntitle = "{title}"\ncost = {cost}\n{extra}\n'


def on_twitch(twitch: TwitchSimulator, title: str) -> list[dict[str, object]]:
    return [r for r in twitch.rewards() if r["title"] == title]


def test_missing_tables_are_created_then_left_alone(
    twitch: TwitchSimulator, helix: BroadcasterHelix, catalogue: RewardCatalogue, sent: SentBodies
) -> None:
    rules = section(
        table("Daily chest", 100, 'prompt = "Your Discord id"\nuser_input_required = true\ncooldown_s = 300')
        + table("Hydrate", 50)
        + rule("daily", "daily chest")
    )
    done = RewardSync(helix, rules, catalogue).run_once()
    assert done.ok and done.created == ("Daily chest", "Hydrate") and not done.problems
    [chest] = on_twitch(twitch, "Daily chest")
    assert chest["client_id"] == DEFAULT_CLIENT_ID and chest["cost"] == 100
    assert chest["prompt"] == "Your Discord id" and chest["is_user_input_required"] is True
    assert chest["global_cooldown_setting"] == {"is_enabled": True, "global_cooldown_seconds": 300}
    assert chest["should_redemptions_skip_request_queue"] is False, "a skipped queue could never be refunded"
    stored = catalogue.load()
    assert stored.ids == {"daily chest": chest["id"]}, "the rule's title resolves to the reward made"
    assert stored.reward_ids()["Daily Chest"] == chest["id"]
    assert {(r.title, r.ours) for r in stored.rewards} == {("Daily chest", True), ("Hydrate", True)}
    assert stored.is_ours(str(chest["id"]))

    again = RewardSync(helix, rules, catalogue).run_once()
    assert again.ok and again.created == () and again.updated == (), "in line already: nothing sent"
    assert len(sent.posts) == 2 and sent.patches == []
    assert len(twitch.rewards()) == 2


def test_a_changed_table_sends_only_what_changed(
    twitch: TwitchSimulator, helix: BroadcasterHelix, catalogue: RewardCatalogue, sent: SentBodies
) -> None:
    RewardSync(helix, section(table("Daily chest", 100, "max_per_stream = 5")), catalogue).run_once()
    [before] = on_twitch(twitch, "Daily chest")
    changed = section(table("Daily chest", 150, "max_per_stream = 5\ncooldown_s = 60"))
    done = RewardSync(helix, changed, catalogue).run_once()
    assert done.updated == ("Daily chest",)
    assert sent.patches == [{"cost": 150, "is_global_cooldown_enabled": True, "global_cooldown_seconds": 60}]
    [after] = on_twitch(twitch, "Daily chest")
    assert after["id"] == before["id"] and after["cost"] == 150
    assert after["max_per_stream_setting"] == {"is_enabled": True, "max_per_stream": 5}

    RewardSync(helix, section(table("Daily chest", 150)), catalogue).run_once()
    assert sent.patches[-1] == {"is_max_per_stream_enabled": False, "is_global_cooldown_enabled": False}
    [cleared] = on_twitch(twitch, "Daily chest")
    assert cleared["max_per_stream_setting"]["is_enabled"] is False  # type: ignore[index]


def test_our_reward_renamed_on_the_dashboard_is_renamed_back_not_duplicated(
    twitch: TwitchSimulator, helix: BroadcasterHelix, catalogue: RewardCatalogue
) -> None:
    rules = section(table("Daily chest", 100) + rule("daily", "Daily chest"))
    RewardSync(helix, rules, catalogue).run_once()
    [made] = twitch.rewards()
    twitch.rename_reward(str(made["id"]), "Chest of the day")
    done = RewardSync(helix, rules, catalogue).run_once()
    assert done.created == () and done.updated == ("Daily chest",)
    [kept] = twitch.rewards()
    assert kept["id"] == made["id"] and kept["title"] == "Daily chest"
    assert catalogue.load().ids == {"daily chest": made["id"]}


def test_another_apps_reward_with_the_title_is_reported_not_duplicated(
    twitch: TwitchSimulator, helix: BroadcasterHelix, catalogue: RewardCatalogue
) -> None:
    theirs = twitch.create_reward_as_other_app("Daily Chest", 300)
    rules = section(table("Daily chest", 100) + table("Hydrate", 50) + rule("daily", "Daily chest"))
    done = RewardSync(helix, rules, catalogue).run_once()
    assert done.created == ("Hydrate",), "the other tables are still made"
    assert len(on_twitch(twitch, "Daily Chest")) == 1 and on_twitch(twitch, "Daily chest") == []
    [problem] = done.problems
    assert problem.startswith('[[twitch.rewards]] "Daily chest": a reward with this title')
    assert "another app" in problem and str(theirs["id"]) in problem and "\n" not in problem
    stored = catalogue.load()
    assert stored.problems == (problem,), "kept for the console"
    assert stored.ids == {"daily chest": theirs["id"]}, "the rule still matches the reward that has the title"
    assert not stored.is_ours(str(theirs["id"]))
    assert {(r.title, r.ours) for r in stored.rewards} == {("Daily Chest", False), ("Hydrate", True)}


def test_a_title_matching_no_reward_or_several_is_one_line_naming_the_rule(
    twitch: TwitchSimulator, helix: BroadcasterHelix, catalogue: RewardCatalogue
) -> None:
    twitch.create_reward_as_other_app("Hydrate", 50)
    twitch.create_reward_as_other_app("Raid!", 500)
    twitch.create_reward_as_other_app("raid! ", 600)
    rules = section(rule("water", "Hydrate") + rule("missing", "Golden goose") + rule("raid", "RAID!"))
    done = RewardSync(helix, rules, catalogue).run_once()
    assert done.ok, "the pass finishes; the other rules keep working"
    none, several = done.problems
    assert none.startswith('twitch rule "missing": reward = "Golden goose" matches no reward on the channel')
    assert several.startswith('twitch rule "raid": reward = "RAID!" matches 2 rewards on the channel')
    assert "\n" not in none + several
    ids = catalogue.load().ids
    assert ids["hydrate"] == on_twitch(twitch, "Hydrate")[0]["id"]
    assert ids["raid!"] == AMBIGUOUS and "golden goose" not in ids
    assert catalogue.load().problems == (none, several)


def test_a_rate_limited_pass_keeps_the_last_catalogue_and_waits_for_the_bucket(
    twitch: TwitchSimulator, helix: BroadcasterHelix, catalogue: RewardCatalogue
) -> None:
    rules = section(table("Daily chest", 100) + rule("daily", "Daily chest"))
    assert RewardSync(helix, rules, catalogue).run_once().ok
    resolved = catalogue.load().ids
    twitch.set_rate_limit(1, 60.0)
    sync = RewardSync(helix, rules, catalogue)
    limited = sync.run_once()
    assert limited.waiting_until > 0 and "429" in limited.error
    stored = catalogue.load()
    assert stored.ids == resolved and "429" in stored.error, "the last resolution stays in use"
    calls = len(twitch.requests())
    assert sync.run_once().waiting_until == limited.waiting_until
    assert len(twitch.requests()) == calls, "no call before Helix's bucket refills"


def test_an_unconnected_channel_is_recorded_not_raised(redis: Redis, keys: Keys, twitch: TwitchSimulator) -> None:
    oauth = make_oauth(twitch)
    vault = TokenVault(redis, keys, KEY, oauth)
    client = BroadcasterHelix(api_url=twitch.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault, timeout_s=5.0)
    catalogue = RewardCatalogue(redis, keys)
    done = RewardSync(client, section(table("Daily chest", 100)), catalogue).run_once()
    assert "twitch connect" in done.error and twitch.rewards() == []
    assert "twitch connect" in catalogue.load().error
    oauth.close()


def test_reward_changes_compares_with_what_twitch_lists() -> None:
    wanted = OwnedReward.model_validate({"title": "Daily chest", "cost": 100, "max_per_user_per_stream": 2})
    listed = ChannelReward.from_json(
        {
            "id": "r1",
            "title": "Daily chest",
            "cost": 100,
            "prompt": "old prompt",
            "is_enabled": True,
            "is_user_input_required": False,
            "should_redemptions_skip_request_queue": True,
            "max_per_stream_setting": {"is_enabled": False, "max_per_stream": 0},
            "max_per_user_per_stream_setting": {"is_enabled": True, "max_per_user_per_stream": 3},
            "global_cooldown_setting": {"is_enabled": False, "global_cooldown_seconds": 0},
        },
        ours=True,
    )
    assert reward_changes(wanted, listed) == {
        "prompt": "",
        "should_redemptions_skip_request_queue": False,
        "is_max_per_user_per_stream_enabled": True,
        "max_per_user_per_stream": 2,
    }


# -- the webhook matches by the stored ids -----------------------------------------------------


def redeemed(client: TestClient, event: dict[str, object]) -> dict[str, Any]:
    body, headers = signed_request(SECRET, sample_payload(REDEMPTION, dict(event)))
    response = client.post("/webhooks/twitch", content=body, headers=headers)
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture
def app_settings(make_settings: SettingsFactory, tmp_path: Path) -> Settings:
    path = tmp_path / "rules.toml"
    path.write_text(f'guild_id = "{GUILD}"\n' + rule("stream", "Stream shout-out"), encoding="utf-8")
    return make_settings(rewards_file=path, twitch_webhook_secret=SECRET)


def test_a_renamed_reward_keeps_matching_its_rule_through_the_webhook(
    twitch: TwitchSimulator, helix: BroadcasterHelix, catalogue: RewardCatalogue, app_settings: Settings
) -> None:
    reward = twitch.create_reward_as_other_app("Stream shout-out", 200)
    other = twitch.create_reward_as_other_app("Hydrate", 50)
    rules = section(rule("stream", "Stream shout-out"))
    RewardSync(helix, rules, catalogue).run_once()
    twitch.rename_reward(str(reward["id"]), "Shout-out on stream")
    done = RewardSync(helix, rules, catalogue).run_once()
    assert done.problems == (), "a rename is a note, not a problem"
    assert catalogue.load().ids == {"stream shout-out": reward["id"]}
    [note] = catalogue.load().notes
    assert 'renamed on Twitch to "Shout-out on stream"' in note

    with TestClient(create_app(app_settings)) as client:
        answer = redeemed(client, twitch.redeem(str(reward["id"]), "cooler_user"))
        assert answer["outcome"] != "ignored" and len(answer.get("granted", []) + answer.get("parked", [])) == 1, answer
        lookalike = twitch.redeem(str(other["id"]), "cooler_user")
        lookalike["reward"] = {**lookalike["reward"], "title": "Stream shout-out"}  # type: ignore[dict-item]
        ignored = redeemed(client, lookalike)
        assert ignored["outcome"] == "ignored", "once resolved, the id decides, not the title"


def test_the_console_shows_the_rewards_who_made_them_and_the_problems(
    twitch: TwitchSimulator,
    helix: BroadcasterHelix,
    catalogue: RewardCatalogue,
    prefix: str,
    rewards_file: Path,
) -> None:
    theirs = twitch.create_reward_as_other_app("Daily chest", 300)
    RewardSync(helix, section(table("Daily chest", 100) + table("Hydrate", 50)), catalogue).run_once()
    with TestClient(create_app(console_settings(prefix, rewards_file))) as client:
        log_in(client)
        page = client.get("/console/twitch").text
    panel = page[page.index('data-panel="rewards"') :]
    row = panel[panel.index(f'data-reward="{theirs["id"]}"') :]
    assert 'data-refundable="no"' in row[:80] and "another app" in row[: row.index("</tr>")]
    assert "this service" in panel and "Hydrate" in panel
    assert 'data-field="reward-problem">[[twitch.rewards]] &#34;Daily chest&#34;: a reward with this title' in panel


def test_the_twitch_process_syncs_the_rewards_at_its_start(
    twitch: TwitchSimulator, redis: Redis, keys: Keys, oauth: OAuthClient, prefix: str, tmp_path: Path
) -> None:
    connect(TokenVault(redis, keys, KEY, oauth), oauth)
    rules = tmp_path / "rules.toml"
    rules.write_text(f'guild_id = "{GUILD}"\n' + table("Daily chest", 100) + rule("daily", "Daily chest"))
    env = {
        **os.environ,  # the conftest cleared every setting from it
        "WETBOT_API_KEY": API_KEY,
        "TWITCH_CLIENT_ID": DEFAULT_CLIENT_ID,
        "TWITCH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "TWITCH_AUTH_URL": twitch.auth_url,
        "TWITCH_API_URL": twitch.api_url,
        "TOKEN_ENCRYPTION_KEY": KEY.get_secret_value(),
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "REWARDS_FILE": str(rules),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "wetbot_rewards.cli", "twitch", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: bool(catalogue_ids(redis, keys)) or process.poll() is not None, timeout_s=20.0)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    [made] = twitch.rewards()
    assert made["title"] == "Daily chest" and made["client_id"] == DEFAULT_CLIENT_ID, err
    assert catalogue_ids(redis, keys) == {"daily chest": made["id"]}


def catalogue_ids(redis: Redis, keys: Keys) -> dict[str, str]:
    return dict(RewardCatalogue(redis, keys).load().ids)


def test_a_problem_is_logged_once_while_it_lasts(
    helix: BroadcasterHelix, catalogue: RewardCatalogue, caplog: pytest.LogCaptureFixture
) -> None:
    rules = section(rule("missing", "Golden goose"))
    with caplog.at_level(logging.INFO, logger="wetbot_rewards.twitch"):
        for _ in range(3):
            assert RewardSync(helix, rules, catalogue).run_once().problems
    logged = [r.getMessage() for r in caplog.records if "Golden goose" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith('twitch rewards: twitch rule "missing"'), logged
    assert len(catalogue.load().problems) == 1, "still on the console"
