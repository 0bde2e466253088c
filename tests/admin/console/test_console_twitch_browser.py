"""Connect with Twitch in headless Chromium: the console's button, the (simulated) Twitch consent page, the
callback and the page it moves on to. The browser enforces what TestClient does not (the page's security
headers, SameSite cookies, a redirect after a form), so the round trip is driven here once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from redis import Redis
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from config.settings import Settings
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_BROADCASTER, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from tests.admin.console.test_console_browser import click, flash, one, shot
from tests.admin.console.test_console_http import ADMIN
from tests.admin.console.test_console_twitch import NEEDED, RULES
from tests.conftest import SettingsFactory, wait_for
from tests.producers.twitch.test_tokens import KEY
from wetbot_rewards.app import create_app


@pytest.fixture
def twitch() -> Iterator[TwitchSimulator]:
    simulator = TwitchSimulator().start()  # authorize="ask": the consent page, clicked below
    yield simulator
    simulator.stop()


@pytest.fixture
def served(make_settings: SettingsFactory, twitch: TwitchSimulator, tmp_path: Path) -> Iterator[Settings]:
    """The app under uvicorn, its PUBLIC_URL its own address (the port is bound first, so it is known)."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    settings = make_settings(
        admin_token=ADMIN,
        rewards_file=rules,
        twitch_client_id=DEFAULT_CLIENT_ID,
        twitch_client_secret=DEFAULT_CLIENT_SECRET,
        twitch_auth_url=twitch.auth_url,
        twitch_api_url=twitch.api_url,
        token_encryption_key=KEY.get_secret_value(),
        public_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
    )
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=10, interval_s=0.02)
        yield settings
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_connect_with_twitch_round_trip_in_a_browser(
    browser: webdriver.Chrome, served: Settings, twitch: TwitchSimulator, screenshot_dir: Path
) -> None:
    url = served.public_url
    assert url is not None
    browser.delete_all_cookies()
    browser.get(f"{url}/console/login")
    one(browser, "#token").send_keys(ADMIN)
    click(browser, "[data-action=login]")
    browser.get(f"{url}/console/twitch")
    assert one(browser, "[data-field=token-state]").text == "not connected"
    shot(browser, screenshot_dir, "twitch-not-connected")
    click(browser, "[data-action=twitch-connect]")
    assert browser.current_url.startswith(f"{twitch.auth_url}/authorize?"), browser.current_url
    assert " ".join(NEEDED) in browser.page_source
    click(browser, "button[value=approve]")
    WebDriverWait(browser, 10).until(lambda b: b.current_url == f"{url}/console/twitch")
    WebDriverWait(browser, 10).until(lambda b: b.find_elements("css selector", "[data-flash]"))
    assert flash(browser) == f"Connected as {DEFAULT_BROADCASTER.login} ({DEFAULT_BROADCASTER.id})."
    assert one(browser, "[data-field=token-state]").text == "valid"
    shot(browser, screenshot_dir, "twitch-connected")
    redis = Redis.from_url(served.redis_url)
    try:
        assert TokenVault.from_settings(served, redis).state().login == DEFAULT_BROADCASTER.login
    finally:
        redis.close()
