"""Grants in the console, driven like a streamer would: find a supporter, open their grant, fix it, once.

A real headless Chromium against the real app, with a real worker delivering to the WetBot
simulator, real signed Twitch webhooks and the grants API. The tests share one browser, server
and worker, in file order; each checks its own effects in the ledger and at the simulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from redis import Redis
from selenium import webdriver
from selenium.webdriver.common.by import By

from admin.console.context import COOKIE
from config.settings import load_settings
from producers.audit import AuditLog
from producers.links import LinkStore
from producers.twitch.samples import sample_event, sample_payload
from simulator.wetbot import WetbotSimulator
from tests.admin.console.conftest import ADMIN_TOKEN, RULES, TWITCH_SECRET, ConsoleServer
from tests.admin.console.test_console_browser import click, flash, log_in, one, session_cookie, shot
from tests.conftest import API_KEY, GUILD, OTHER_USER, TEST_REDIS_URL, TOKEN, USER, serve_app, start_worker, wait_for
from wetbot_rewards.app import create_app
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

FAN = "5151"
FAMILY = "6161"


@pytest.fixture(scope="module")
def sim() -> Iterator[WetbotSimulator]:
    simulator = WetbotSimulator(keys={API_KEY: GUILD}, limit=100, window_s=1.0)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def server(
    module_prefix: str, sim: WetbotSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleServer]:
    rewards = tmp_path_factory.mktemp("grants") / "rewards.toml"
    rewards.write_text(RULES, encoding="utf-8")
    settings = load_settings(
        _env_file=None,
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=module_prefix,
        wetbot_api_url=sim.url,
        wetbot_api_key=API_KEY,
        wetbot_rate_limit="100/1s",
        wetbot_timeout_s=2.0,
        wetbot_retry_backoff_s=0.05,
        rewards_file=rewards,
        twitch_webhook_secret=TWITCH_SECRET,
        admin_token=ADMIN_TOKEN,
        grants_api_token=TOKEN,
    )
    redis = Redis.from_url(TEST_REDIS_URL)
    keys = Keys(module_prefix)
    worker = start_worker(settings, threads=2)
    try:
        with serve_app(create_app(settings)) as url:
            yield ConsoleServer(
                url, settings, redis, keys, Ledger(redis, keys), LinkStore(redis, keys), AuditLog(redis, keys)
            )
    finally:
        worker.stop()
        redis.close()


def subscribe(server: ConsoleServer, twitch_id: str, login: str) -> str:
    """A signed channel.subscribe from an unlinked viewer: the grant parks. Returns its id."""
    event = sample_event("channel.subscribe", user_id=twitch_id)
    event.update(user_login=login, user_name=login.capitalize())
    message_id = server.deliver_twitch(sample_payload("channel.subscribe", event))
    (grant,) = [g for g in server.ledger.list_grants(limit=200) if g.source_ref == message_id]
    assert grant.state == GrantState.PARKED
    return grant.id


def api_grant(server: ConsoleServer, item: str, user: str = OTHER_USER) -> str:
    body = {"user_id": user, "items": [{"item_id": item, "amount": 3}]}
    answer = requests.post(f"{server.url}/grants", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def form_of(browser: webdriver.Chrome, css: str) -> tuple[str, dict[str, str]]:
    """The form ``css`` finds, as the browser would send it now: its action and its fields (a submit button's
    name and value included when ``css`` names the button)."""
    element = one(browser, css)
    form = element if element.tag_name == "form" else element.find_element(By.XPATH, "./ancestor::form")
    fields = {
        str(i.get_attribute("name")): str(i.get_attribute("value"))
        for i in form.find_elements(By.CSS_SELECTOR, "input[name]")
    }
    if element.tag_name == "button" and element.get_attribute("name"):
        fields[str(element.get_attribute("name"))] = str(element.get_attribute("value"))
    return str(form.get_attribute("action")), fields


def send_again(browser: webdriver.Chrome, form: tuple[str, dict[str, str]]) -> str:
    """Post ``form`` once more with this browser's session (a double click, a replayed form); the flash it left."""
    action, fields = form
    answer = requests.post(
        action, data=fields, cookies={COOKIE: session_cookie(browser)}, timeout=10, allow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    browser.get(
        answer.headers["location"]
        if answer.headers["location"].startswith("http")
        else action.split("/console")[0] + answer.headers["location"]
    )
    return flash(browser)


def state_of(server: ConsoleServer, grant_id: str) -> GrantState:
    grant = server.ledger.get(grant_id)
    assert grant is not None
    return grant.state


def states(server: ConsoleServer, grant_id: str) -> list[str]:
    return [step.to_state for step in server.ledger.history(grant_id)]


def test_a_supporter_is_found_by_twitch_login_and_their_grant_says_who_it_waits_for(
    browser: webdriver.Chrome, server: ConsoleServer, screenshot_dir: Path
) -> None:
    grant_id = subscribe(server, FAN, "streamfan")
    log_in(browser, server)
    browser.get(f"{server.url}/console/grants")
    one(browser, "[data-field=search]").send_keys("StreamFan")
    click(browser, "[data-action=filter]")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-grant-id]")
    assert [row.get_attribute("data-grant-id") for row in rows] == [grant_id]
    assert rows[0].get_attribute("data-state") == "parked"
    shot(browser, screenshot_dir, "grants")
    click(browser, f"tr[data-grant-id='{grant_id}'] [data-action=open-grant]")
    assert one(browser, "[data-field=waits-for]").text == f"Twitch user streamfan ({FAN})"
    assert one(browser, "[data-field=items]").text == "sub-chest \u00d7 1"
    made = server.ledger.get(grant_id)
    assert made is not None and made.event_id
    assert str(one(browser, "[data-action=open-event]").get_attribute("href")).endswith(
        f"/console/events/{made.event_id}"
    )
    shot(browser, screenshot_dir, "grant-parked")


def test_a_parked_grant_is_cancelled_with_a_reason_once_and_never_goes_out(
    browser: webdriver.Chrome, server: ConsoleServer
) -> None:
    grant_id = subscribe(server, "7171", "wrongperson")
    browser.get(f"{server.url}/console/grants/{grant_id}")
    one(browser, "[data-form=cancel] input[name=reason]").send_keys("sent to the wrong person")
    form = form_of(browser, "[data-action=cancel]")
    click(browser, "[data-action=cancel]")
    assert "cancelled" in flash(browser)
    assert one(browser, "[data-grant-id]").get_attribute("data-state") == "cancelled"
    assert "already cancelled" in send_again(browser, form)
    assert states(server, grant_id) == ["parked", "cancelled"]
    assert "sent to the wrong person" in server.ledger.history(grant_id)[-1].reason
    assert server.ledger.release_parked("twitch", "7171", USER) == [], "a cancelled grant is never released"


def test_linking_from_a_parked_grant_releases_every_grant_parked_for_them_once(
    browser: webdriver.Chrome, server: ConsoleServer, sim: WetbotSimulator, screenshot_dir: Path
) -> None:
    first, second = subscribe(server, FAMILY, "family"), subscribe(server, FAMILY, "family")
    browser.get(f"{server.url}/console/grants/{first}")
    one(browser, "[data-form=link] input[name=discord_user_id]").send_keys(USER)
    form = form_of(browser, "[data-action=link]")
    click(browser, "[data-action=link]")
    assert "2 parked grant(s) queued" in flash(browser)
    assert "0 parked grant(s) queued" in send_again(browser, form)
    wait_for(lambda: state_of(server, first) == state_of(server, second) == GrantState.DELIVERED, timeout_s=15)
    assert sim.inventory(GUILD, USER).get("sub-chest") == 2
    browser.get(f"{server.url}/console/grants/{first}")
    assert one(browser, "[data-grant-id]").get_attribute("data-state") == "delivered"
    assert one(browser, "[data-field=result]").text.startswith("sub-chest: 2")
    assert [row.text for row in browser.find_elements(By.CSS_SELECTOR, "[data-list=attempts] tr[data-attempt]")]
    shot(browser, screenshot_dir, "grant-delivered")
    assert states(server, first) == ["parked", "queued", "sending", "delivered"]


def test_a_dead_grant_is_replayed_once_and_delivered_at_the_simulator(
    browser: webdriver.Chrome, server: ConsoleServer, sim: WetbotSimulator, screenshot_dir: Path
) -> None:
    sim.set_items(GUILD, ["sub-chest"])  # WetBot does not know "ghost-gem" yet
    grant_id = api_grant(server, "ghost-gem")
    wait_for(lambda: state_of(server, grant_id) == GrantState.DEAD, timeout_s=15)
    browser.get(f"{server.url}/console/grants?state=dead")
    click(browser, f"tr[data-grant-id='{grant_id}'] [data-action=open-grant]")
    assert "404" in one(browser, "[data-field=last-error]").text
    shot(browser, screenshot_dir, "grant-dead")
    sim.set_items(GUILD, None)  # the item now exists
    form = form_of(browser, "[data-action=replay]")
    click(browser, "[data-action=replay]")
    assert "queued again" in flash(browser)
    wait_for(lambda: state_of(server, grant_id) == GrantState.DELIVERED, timeout_s=15)
    assert sim.inventory(GUILD, OTHER_USER).get("ghost-gem") == 3
    assert "Nothing done" in send_again(browser, form)  # a double submit
    assert states(server, grant_id).count("queued") == 2  # created, replayed once
    assert sim.inventory(GUILD, OTHER_USER).get("ghost-gem") == 3


def test_bulk_replay_shows_the_count_first_and_replays_each_dead_grant_once(
    browser: webdriver.Chrome, server: ConsoleServer, sim: WetbotSimulator, screenshot_dir: Path
) -> None:
    sim.set_items(GUILD, ["sub-chest"])
    dead = [api_grant(server, "bulk-gem", user) for user in (USER, OTHER_USER)]
    wait_for(lambda: all(state_of(server, g) == GrantState.DEAD for g in dead), timeout_s=15)
    browser.get(f"{server.url}/console/grants?state=dead&q=bulk-gem")  # no grant is found by item id
    assert not browser.find_elements(By.CSS_SELECTOR, "tr[data-grant-id]")
    browser.get(f"{server.url}/console/grants?state=dead&source=api")
    click(browser, "[data-action=bulk-replay]")
    assert one(browser, "[data-field=count]").text == "2"
    assert all(state_of(server, g) == GrantState.DEAD for g in dead), "counting does nothing"
    shot(browser, screenshot_dir, "bulk-replay")
    sim.set_items(GUILD, None)
    form = form_of(browser, "[data-action=confirm-bulk-replay]")
    click(browser, "[data-action=confirm-bulk-replay]")
    assert "2 dead grant(s) queued again" in flash(browser)
    wait_for(lambda: all(state_of(server, g) == GrantState.DELIVERED for g in dead), timeout_s=15)
    assert "0 dead grant(s) queued again" in send_again(browser, form)
    assert [states(server, g).count("queued") for g in dead] == [2, 2]


def test_an_unknown_grant_is_resolved_once(browser: webdriver.Chrome, server: ConsoleServer) -> None:
    new = NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="cli", idempotency_key="cli:unsure")
    grant_id = server.ledger.create(new).grant.id
    wait_for(lambda: state_of(server, grant_id) == GrantState.DELIVERED, timeout_s=15)
    assert server.ledger.transition(grant_id, GrantState.UNKNOWN, "arranged: a timeout after sending")
    browser.get(f"{server.url}/console/grants/{grant_id}")
    one(browser, "[data-form=resolve] input[name=note]").send_keys("checked their inventory")
    resend = form_of(browser, "[data-action=resolve-resend]")
    click(browser, "[data-action=resolve-delivered]")
    assert "marked delivered" in flash(browser)
    assert "Nothing done" in send_again(browser, resend)  # the other button of the same form, late
    assert states(server, grant_id)[-2:] == ["unknown", "delivered"]


def test_a_grant_action_with_a_bad_csrf_token_or_no_session_does_nothing(
    browser: webdriver.Chrome, server: ConsoleServer
) -> None:
    grant_id = subscribe(server, "8181", "keepme")
    url = f"{server.url}/console/grants/{grant_id}/cancel"
    cookies = {COOKIE: session_cookie(browser)}
    forged = requests.post(
        url, data={"csrf": "forged", "reason": "x"}, cookies=cookies, timeout=10, allow_redirects=False
    )
    anonymous = requests.post(url, data={"reason": "x"}, timeout=10, allow_redirects=False)
    assert (forged.status_code, anonymous.status_code) == (403, 403)
    assert state_of(server, grant_id) == GrantState.PARKED


def test_the_overview_counts_each_guilds_grants_and_links_to_them(
    browser: webdriver.Chrome, server: ConsoleServer, screenshot_dir: Path
) -> None:
    browser.get(f"{server.url}/console")
    row = one(browser, f"tr[data-guild='{GUILD}']")
    parked = int(server.redis.zcard(server.keys.guild_state(GUILD, "parked")))  # type: ignore[arg-type]
    assert row.find_element(By.CSS_SELECTOR, "[data-count=parked]").text == str(parked) and parked >= 2
    assert int(row.find_element(By.CSS_SELECTOR, "[data-count=delivered-today]").text) >= 5
    assert row.get_attribute("data-key-status") == "ok"
    assert one(browser, "[data-traffic=twitch] [data-outcome=parked]").text == "5"
    shot(browser, screenshot_dir, "overview")
    click(browser, f"tr[data-guild='{GUILD}'] [data-count=parked] a")
    shown = {row.get_attribute("data-state") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-grant-id]")}
    assert shown == {"parked"}
