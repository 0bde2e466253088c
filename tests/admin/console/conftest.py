"""The console under test: one app under uvicorn and one headless Chromium per module (both are slow to start).

The browser is Debian's ``chromium`` driven by its own ``chromedriver`` through Selenium, both
named by path, so Selenium Manager never looks for (or downloads) a browser or driver. A
machine without them fails here with what to install: CI must really drive a browser
(``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from redis import Redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from config.settings import Settings, load_settings
from producers.audit import AuditLog
from producers.links import LinkStore
from producers.twitch.samples import signed_request
from tests.conftest import API_KEY, GUILD, TEST_REDIS_URL, USER, own_prefix, serve_app
from wetbot_rewards.app import create_app
from worker.keys import Keys
from worker.ledger import Ledger

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN_TOKEN = "console-admin-token-93c1f0a2"
TWITCH_SECRET = "console-twitch-secret-71d2"
#: A Twitch user linked in the rewards file (a static, read-only link).
STATIC_TWITCH = "4242"
RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "sub"
event = "channel.subscribe"
gifted = "both"
items = [{{ id = "sub-chest", amount = 1 }}]

[twitch.links]
"{STATIC_TWITCH}" = "{USER}"
"""


@dataclass
class ConsoleServer:
    """The running app and direct handles on its Redis state (to arrange and to check)."""

    url: str
    settings: Settings
    redis: Redis
    keys: Keys
    ledger: Ledger
    links: LinkStore
    audit: AuditLog

    def deliver_twitch(self, payload: dict[str, object] | bytes, *, message_id: str | None = None) -> str:
        """A signed Twitch webhook delivery, as Twitch sends it; returns its message id."""
        message_id = message_id or str(uuid.uuid4())
        body, headers = signed_request(TWITCH_SECRET, payload, message_id=message_id)
        answer = requests.post(f"{self.url}/webhooks/twitch", data=body, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return message_id


@pytest.fixture(scope="module")
def module_prefix() -> Iterator[str]:
    """``prefix`` for a whole module (its server and browser outlive one test)."""
    with own_prefix() as value:
        yield value


@pytest.fixture(scope="module")
def console_server(module_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    rewards = tmp_path_factory.mktemp("console") / "rewards.toml"
    rewards.write_text(RULES, encoding="utf-8")
    settings = load_settings(
        _env_file=None,
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=module_prefix,
        wetbot_api_url="http://127.0.0.1:9",  # no worker runs here: nothing is sent
        wetbot_api_key=API_KEY,
        rewards_file=rewards,
        twitch_webhook_secret=TWITCH_SECRET,
        admin_token=ADMIN_TOKEN,
    )
    redis = Redis.from_url(TEST_REDIS_URL)
    keys = Keys(module_prefix)
    try:
        with serve_app(create_app(settings)) as url:
            yield ConsoleServer(
                url=url,
                settings=settings,
                redis=redis,
                keys=keys,
                ledger=Ledger(redis, keys),
                links=LinkStore(redis, keys, {"twitch": {STATIC_TWITCH: USER}}),
                audit=AuditLog(redis, keys),
            )
    finally:
        redis.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium; fails (never skips) when Debian's chromium or chromium-driver is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"the console's browser tests need {' and '.join(missing)}: apt-get install chromium chromium-driver"
            " (.ci/run does it)"
        )
    profile = tempfile.mkdtemp(prefix="wbr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$CONSOLE_SCREENSHOT_DIR`` when set (to look at the pages), else a temporary directory."""
    configured = os.environ.get("CONSOLE_SCREENSHOT_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("console-screenshots")
