"""Many guilds: a key per guild, each with its own window and pause; a guild without a key parks, never loops."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from config.errors import ConfigError
from config.keyring import key_fingerprint
from simulator.wetbot import WetbotSimulator
from tests.conftest import API_KEY, GUILD, TOKEN, USER, DelivererFactory, ScheduleDriver, SettingsFactory
from tests.schedule_view import due_in_s
from wetbot_rewards.app import create_app
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.runtime import key_parked_releaser, worker_keyring

OTHER_GUILD = "444444444444444444"
OTHER_KEY = "test-other-key-91c2d7e0a4"


def grant_for(guild: str, key: str, *, user: str = USER) -> NewGrant:
    return NewGrant(guild, user, (GrantItem("gem", 2),), source="test", idempotency_key=f"t:{key}")


@pytest.fixture
def two_guild_sim(sim: WetbotSimulator) -> WetbotSimulator:
    sim.add_key(OTHER_KEY, OTHER_GUILD)
    return sim


def test_each_guild_goes_out_with_its_own_key_and_window(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    two_guild_sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    two_guild_sim.set_limit(1, 60.0)
    settings = make_settings(wetbot_rate_limit="1/60s", wetbot_api_keys=f"{OTHER_GUILD}={OTHER_KEY}")
    deliverer = make_deliverer(settings)
    home = ledger.create(grant_for(GUILD, "home")).grant
    throttled = ledger.create(grant_for(GUILD, "home-2", user="555555555555555555")).grant
    away = ledger.create(grant_for(OTHER_GUILD, "away")).grant
    deliverer.deliver(home.id)
    deliverer.deliver(throttled.id)
    # The home key used its one request of the minute: its next grant waits (no attempt, no failure) ...
    waiting = ledger.get(throttled.id)
    assert waiting is not None and waiting.state == GrantState.QUEUED and waiting.attempts == 0
    due_in = due_in_s(driver.redis, driver.keys, throttled.id)
    assert due_in is not None and due_in > 50
    # ... and the other guild's grant still goes out at once, with its own key.
    deliverer.deliver(away.id)
    assert ledger.get(home.id).state == GrantState.DELIVERED  # type: ignore[union-attr]
    assert ledger.get(away.id).state == GrantState.DELIVERED  # type: ignore[union-attr]
    assert [r.key for r in two_guild_sim.requests()] == [key_fingerprint(API_KEY), key_fingerprint(OTHER_KEY)]
    assert two_guild_sim.inventory(OTHER_GUILD, USER) == {"gem": 2}
    assert two_guild_sim.count_status(429) == 0


def test_a_guild_without_a_key_parks_visibly_and_resumes_when_the_key_comes_back(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    two_guild_sim: WetbotSimulator,
    driver: ScheduleDriver,
    keys: Keys,
) -> None:
    # Queued while a worker had the other guild's key; that key has since been removed from the settings.
    grant = ledger.create(grant_for(OTHER_GUILD, "orphan")).grant
    without = make_deliverer(make_settings())
    driver.run(without)
    parked = ledger.get(grant.id)
    assert parked is not None and parked.state == GrantState.PARKED
    assert f"no WetBot API key for guild {OTHER_GUILD}" in parked.last_error
    assert "WETBOT_API_KEYS" in parked.last_error
    assert two_guild_sim.requests() == [], "no request goes out without the guild's key"
    assert due_in_s(driver.redis, driver.keys, grant.id) is None, "a parked grant is off the schedule: it never loops"
    assert driver.ran(grant.id) == 1
    assert ledger.key_parked_guilds() == [OTHER_GUILD]
    # A worker without the key releases nothing; one with it releases the grant once.
    assert key_parked_releaser(ledger, without.clients.keyring)() == 0
    with_key = make_deliverer(make_settings(wetbot_api_keys=f"{OTHER_GUILD}={OTHER_KEY}"))
    release = key_parked_releaser(ledger, with_key.clients.keyring)
    assert release() == 1
    assert release() == 0, "releasing twice moves nothing twice"
    assert ledger.key_parked_guilds() == []
    driver.run(with_key)
    done = ledger.get(grant.id)
    assert done is not None and done.state == GrantState.DELIVERED and done.user_id == USER
    assert two_guild_sim.inventory(OTHER_GUILD, USER) == {"gem": 2}
    assert [t.to_state for t in ledger.history(grant.id)] == ["queued", "parked", "queued", "sending", "delivered"]


def test_a_fallback_key_releases_any_guild_parked_by_another_worker(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    tmp_path: Path,
) -> None:
    grant = ledger.create(grant_for(OTHER_GUILD, "elsewhere")).grant
    driver.run(make_deliverer(make_settings()))
    assert ledger.get(grant.id).state == GrantState.PARKED  # type: ignore[union-attr]
    # No rewards file guild: WETBOT_API_KEY is unbound and serves every guild.
    no_default = tmp_path / "none.toml"
    no_default.write_text("", encoding="utf-8")
    fallback = make_deliverer(make_settings(rewards_file=no_default))
    assert fallback.clients.keyring.fallback is not None
    assert key_parked_releaser(ledger, fallback.clients.keyring)() == 1


def test_a_rule_for_a_guild_without_a_key_stops_the_start(make_settings: SettingsFactory, tmp_path: Path) -> None:
    rewards = tmp_path / "rewards.toml"
    rewards.write_text(
        f'guild_id = "{GUILD}"\n[[twitch.rules]]\nevent = "channel.raid"\nguild_id = "{OTHER_GUILD}"\n'
        'items = [{ id = "gem", amount = 1 }]\n',
        encoding="utf-8",
    )
    settings = make_settings(rewards_file=rewards)
    with pytest.raises(ConfigError) as raised:
        worker_keyring(settings)
    message = str(raised.value)
    assert "twitch.rules[0] (channel.raid)" in message and OTHER_GUILD in message and "WETBOT_API_KEYS" in message
    assert API_KEY not in message
    with pytest.raises(ConfigError, match=r"twitch\.rules\[0\].*444444444444444444"):
        create_app(settings)
    # With the guild's key both start.
    good = make_settings(rewards_file=rewards, wetbot_api_keys=f"{OTHER_GUILD}={OTHER_KEY}")
    assert worker_keyring(good).covers(OTHER_GUILD)
    create_app(good)


def test_post_grants_for_a_guild_without_a_key_is_422_naming_guild_id(
    make_settings: SettingsFactory, ledger: Ledger
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"guild_id": OTHER_GUILD, "user_id": USER, "items": [{"item_id": "gem", "amount": 1}]}
    with TestClient(create_app(make_settings())) as client:
        answer = client.post("/grants", json=body, headers=auth)
        assert answer.status_code == 422
        assert answer.json()["error"].startswith("guild_id: no WetBot API key for guild 444444444444444444")
    assert ledger.counts()[GrantState.QUEUED] == 0, "nothing was queued"
    with TestClient(create_app(make_settings(wetbot_api_keys=f"{OTHER_GUILD}={OTHER_KEY}"))) as client:
        assert client.post("/grants", json=body, headers=auth).status_code == 202


def test_the_two_key_settings_must_agree_on_the_default_guild(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigError, match="WETBOT_API_KEYS: gives guild 111111111111111111") as raised:
        worker_keyring(make_settings(wetbot_api_keys=f"{GUILD}={OTHER_KEY}"))
    assert OTHER_KEY not in str(raised.value) and API_KEY not in str(raised.value)
    same = worker_keyring(make_settings(wetbot_api_keys=f"{GUILD}={API_KEY}"))
    assert same.key_id_for(GUILD) == key_fingerprint(API_KEY)
    only_list = worker_keyring(make_settings(wetbot_api_key=None, wetbot_api_keys=f"{GUILD}={OTHER_KEY}"))
    assert only_list.key_id_for(GUILD) == key_fingerprint(OTHER_KEY) and not only_list.covers(OTHER_GUILD)
    with pytest.raises(ConfigError, match="WETBOT_API_KEY: not set"):
        worker_keyring(make_settings(wetbot_api_key=None))


def test_metrics_show_each_key_by_fingerprint_with_its_own_window_and_pause(
    make_settings: SettingsFactory, make_deliverer: DelivererFactory, ledger: Ledger, two_guild_sim: WetbotSimulator
) -> None:
    settings = make_settings(wetbot_rate_limit="5/60s", wetbot_api_keys=f"{OTHER_GUILD}={OTHER_KEY}")
    deliverer = make_deliverer(settings)
    two_guild_sim.revoke_key(OTHER_KEY)
    for n in range(2):
        deliverer.deliver(ledger.create(grant_for(GUILD, f"home-{n}", user=f"55555555555555555{n}")).grant.id)
    refused = ledger.create(grant_for(OTHER_GUILD, "refused")).grant
    deliverer.deliver(refused.id)
    assert ledger.get(refused.id).state == GrantState.QUEUED  # type: ignore[union-attr]
    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics").text
    home, away = key_fingerprint(API_KEY), key_fingerprint(OTHER_KEY)
    # Home: two POSTs, and a baseline read before each that found a spare slot; the metrics count every one.
    sent_home = [r for r in two_guild_sim.requests() if r.key == home]
    assert [r.method for r in sent_home].count("POST") == 2 and all(r.status == 200 for r in sent_home)
    assert f'wetbot_rewards_key_requests_in_window{{key="{home}"}} {len(sent_home)}' in text
    assert f'wetbot_rewards_key_requests_total{{key="{home}",outcome="delivered"}} {len(sent_home)}' in text
    # Away: one refused call (the baseline read) pauses the key; nothing follows it.
    assert f'wetbot_rewards_key_requests_in_window{{key="{away}"}} 1' in text
    assert f'wetbot_rewards_key_requests_total{{key="{away}",outcome="unauthorised"}} 1' in text
    assert f'wetbot_rewards_key_paused{{key="{home}",guild="{GUILD}"}} 0' in text
    assert f'wetbot_rewards_key_paused{{key="{away}",guild="{OTHER_GUILD}"}} 1' in text
    assert API_KEY not in text and OTHER_KEY not in text


def test_one_key_for_two_guilds_is_refused_at_start(make_settings: SettingsFactory) -> None:
    """README "Many guilds": WetBot keys belong to one guild. A copy-paste slip
    (``WETBOT_API_KEYS=<other guild>=<the home key>``) used to be accepted: every grant for the other guild
    then got 403, paused the key for that guild and re-probed it for ever (``queued``, no failure, never
    dead or parked) while ``POST /grants`` kept accepting more. Now it stops the start, naming both guilds.
    """
    settings = make_settings(wetbot_api_keys=f"{OTHER_GUILD}={API_KEY}")
    for start in (worker_keyring, create_app):
        with pytest.raises(ConfigError) as raised:
            start(settings)
        message = str(raised.value)
        assert f"guilds {GUILD} and {OTHER_GUILD} are given the same key" in message
        assert API_KEY not in message
