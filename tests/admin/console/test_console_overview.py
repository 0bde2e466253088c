"""The overview page: a key WetBot refused shows as paused with WetBot's message; a 429 as throttled until;
Twitch revocations are listed. A real worker against the simulator, the real app, signed webhooks."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from admin.overview import KeyState, KeyStatus, backlog_eta_s, overview
from config.keyring import key_fingerprint
from config.settings import Settings
from producers.inbox import EventInbox
from producers.twitch.samples import sample_payload, signed_request
from simulator.wetbot import WetbotSimulator
from tests.admin.console.test_console_http import ADMIN, log_in
from tests.conftest import API_KEY, GUILD, USER, RunningWorker, SettingsFactory, wait_for
from wetbot_rewards.app import create_app
from worker import key_health
from worker.eta import EtaEstimator
from worker.grant import GrantItem, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter

SECRET = "overview-twitch-secret-5510"


@pytest.fixture
def overview_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(admin_token=ADMIN, twitch_webhook_secret=SECRET, wetbot_auth_pause_s=30.0)


@pytest.fixture
def client(overview_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(overview_settings)) as test_client:
        log_in(test_client)
        yield test_client


def guild_row(client: TestClient) -> str:
    page = client.get("/console")
    assert page.status_code == 200
    match = re.search(rf'<tr data-guild="{GUILD}".*?</tr>', page.text, re.S)
    assert match is not None, page.text
    return match[0]


def test_a_key_wetbot_refuses_shows_paused_with_wetbots_message(
    client: TestClient,
    overview_settings: Settings,
    ledger: Ledger,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
) -> None:
    assert 'data-key-status="ok"' in guild_row(client)
    sim.revoke_key(API_KEY)
    workers(overview_settings, threads=1)
    ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="cli", idempotency_key="cli:refused"))
    wait_for(lambda: 'data-key-status="paused"' in guild_row(client), timeout_s=10)
    row = guild_row(client)
    assert "401" in row and key_fingerprint(API_KEY) in row
    assert re.search(r'data-count="queued">.*?>1<', row, re.S), "the grant waits, counted as queued"


def test_a_429_shows_throttled_until_the_block_ends(client: TestClient, redis: Redis, keys: Keys) -> None:
    # The worker records a 429 as the key's block (microseconds, Redis clock): arranged here as it writes it.
    until_us = int((time.time() + 30) * 1_000_000)
    redis.set(keys.rate_block(key_fingerprint(API_KEY)), str(until_us))
    row = guild_row(client)
    assert 'data-key-status="throttled"' in row and "WetBot answered 429" in row


def test_a_revoked_twitch_subscription_is_listed(client: TestClient) -> None:
    payload = sample_payload("channel.cheer", message_type="revocation")
    body, headers = signed_request(SECRET, payload, message_type="revocation")
    assert client.post("/webhooks/twitch", content=body, headers=headers).json()["outcome"] == "revocation"
    page = client.get("/console").text
    panel = page[page.index('data-panel="revocations"') :]
    assert "<code>channel.cheer</code>" in panel and "authorization_revoked" in panel
    assert re.search(r'data-traffic="twitch".*?data-outcome="revocation"><a [^>]*>1<', page, re.S)


def test_the_backlog_eta_counts_the_windows_slots_as_they_free_then_a_window_per_limit() -> None:
    key = KeyState("k", KeyStatus.OK, used=4, limit=10, slots=(70.0, 75.0, 80.0, 85.0))
    assert backlog_eta_s(6, key, now=100.0, window_s=60.0) == 0  # 6 free slots: all go now
    assert backlog_eta_s(7, key, now=100.0, window_s=60.0) == 30  # the 7th takes the slot of 70 at 130
    assert backlog_eta_s(10, key, now=100.0, window_s=60.0) == 45
    assert backlog_eta_s(26, key, now=100.0, window_s=60.0) == 120  # two rounds of 10 after the first
    paused = KeyState("k", KeyStatus.PAUSED, until=130.0, used=0, limit=10, ready_at=130.0)
    assert backlog_eta_s(5, paused, now=100.0, window_s=60.0) == 30  # after the pause
    assert backlog_eta_s(0, paused, now=100.0, window_s=60.0) == 0


def test_the_overview_backlog_and_the_last_grants_eta_are_one_estimate(
    overview_settings: Settings, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    limiter = SlidingWindowLimiter(redis, keys, overview_settings.wetbot_rate_limit)
    key_id = key_fingerprint(API_KEY)
    for _ in range(3):
        assert limiter.try_acquire(key_id).granted  # three requests already out in the window
    key_health.pause(redis, keys, key_id, GUILD, "HTTP 401", 20)
    ids = []
    for n in range(28):
        new = NewGrant(GUILD, f"5{n:017d}", (GrantItem("gem", 1),), source="test", idempotency_key=f"b:{n}")
        ids.append(ledger.create(new).grant.id)
    keyring = overview_settings.keyring(GUILD)
    seen = overview(redis, keys, overview_settings, keyring, EventInbox(redis, None, keys), [GUILD])
    backlog = next(row for row in seen.guilds if row.guild_id == GUILD).backlog_eta_s
    last = ledger.get(ids[-1])
    assert last is not None and backlog is not None
    eta = EtaEstimator.build(redis, overview_settings, keyring).for_grants([last])[last.id]
    assert eta.requests_ahead == 27 and eta.at is not None
    first_slot = limiter.held_slots(key_id, eta.now)[0]
    window_s = limiter.effective_window_s
    assert eta.at == pytest.approx(first_slot + 3 * window_s, abs=0.01), "the first slot's turn, two windows on"
    assert seen.now + backlog == pytest.approx(eta.at, abs=0.01)
