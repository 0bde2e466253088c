"""A full failing run leaks no secret: not into Sentry events, log records, stdout/stderr or HTTP answers.

Every secret setting gets a distinctive value; the real app and a real worker then go through as many failure
paths as one test can drive: wrong and missing tokens, bad signatures, malformed bodies, signed events the
rules cannot use, a WetBot key refused (401) and one whose requests fail (500, reset), and a Redis (with a
password) killed under both. A leak is any 6-character piece of a secret (``MIN_SCRUB_LENGTH``): a key logged
whole is scrubbed, but its first ten characters would not be, and count as a leak here.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from fastapi.testclient import TestClient
from httpx2 import Response

from config.settings import Settings
from devtools.chaos.servers import PrivateRedis
from producers.patreon.samples import Member, encode
from producers.patreon.webhook import signature as patreon_signature
from producers.twitch.samples import sample_payload, signed_request
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, CapturingTransport, SettingsFactory, wait_for
from wetbot_rewards.app import create_app
from worker.grant import GrantState
from worker.keys import Keys
from worker.ledger import Ledger
from worker.observability import MIN_SCRUB_LENGTH, configure_logging, init_sentry

OTHER_GUILD = "444444444444444444"
#: Mixed-case letters beyond hex, no words: any hit in the output is a real leak, not a digest or a word.
SECRETS = {
    "WETBOT_API_KEY": "OVPOSXsrSQZrmOzplU",
    "WETBOT_API_KEYS": "iYLOZqZgTkjisvYhPG",
    "GRANTS_API_TOKEN": "OXsTuyRglPxMVlwGuS",
    "METRICS_TOKEN": "yhkWmLmyKkhgttjQKL",
    "TWITCH_WEBHOOK_SECRET": "MkWsxHlzHgMnovmgjP",
    "PATREON_WEBHOOK_SECRET": "RrVsOSsoMKnLMtgxXz",
    "TWITCH_CLIENT_SECRET": "htrLYWmiptOwgZHyKk",
    "SENTRY_DSN key": "kltXvgYJJZPoXQWoKr",
    "REDIS password": "pzuZvsqVsKQYlMjmmi",
    "REDIS_SENTINEL_PASSWORD": "SwvLwMYRyTrkouQVZZ",
    "TOKEN_ENCRYPTION_KEY": "QwKzRtYpLmNvBxCsDfGhJkPlWqErTyUiOp",
}
RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "cheer"
event = "channel.cheer"
items = [{{ id = "gem", amount = 1 }}]
"""


def leaks(texts: dict[str, str]) -> list[str]:
    """Every (secret, place) where a ``MIN_SCRUB_LENGTH``-character piece of a secret appears."""
    found = []
    for name, secret in SECRETS.items():
        pieces = {secret[i : i + MIN_SCRUB_LENGTH] for i in range(len(secret) - MIN_SCRUB_LENGTH + 1)}
        found += [f"{name} in {place}" for place, text in texts.items() if any(p in text for p in pieces)]
    return found


def test_the_leak_check_sees_a_piece_of_a_secret() -> None:
    assert leaks({"log": f"key {SECRETS['WETBOT_API_KEY'][:6]}..."}) == ["WETBOT_API_KEY in log"]
    assert leaks({"log": "key [redacted], grant 5f0c2a9e4b7d4e1f8a3b6c9d0e1f2a3b"}) == []


@pytest.fixture
def wetbot() -> Iterator[WetbotSimulator]:
    """Knows only the failing key: the refused one gets 401."""
    simulator = WetbotSimulator(keys={SECRETS["WETBOT_API_KEYS"]: OTHER_GUILD}, limit=100, window_s=1.0)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def locked_redis(private_redis: PrivateRedis) -> PrivateRedis:
    lock(private_redis)
    return private_redis


def lock(server: PrivateRedis) -> None:
    """Make ``server`` require the secret Redis password."""
    client = server.client()
    client.config_set("requirepass", SECRETS["REDIS password"])
    client.close()


@pytest.fixture
def leaky_settings(
    make_settings: SettingsFactory, rewards_file: Path, wetbot: WetbotSimulator, locked_redis: PrivateRedis
) -> Settings:
    rewards_file.write_text(RULES, encoding="utf-8")
    return make_settings(
        redis_url=f"redis://:{SECRETS['REDIS password']}@127.0.0.1:{locked_redis.port}/0",
        redis_sentinel_password=SECRETS["REDIS_SENTINEL_PASSWORD"],
        wetbot_api_url=wetbot.url,
        wetbot_api_key=SECRETS["WETBOT_API_KEY"],
        wetbot_api_keys=f"{OTHER_GUILD}={SECRETS['WETBOT_API_KEYS']}",
        wetbot_max_attempts=2,
        grants_api_token=SECRETS["GRANTS_API_TOKEN"],
        metrics_token=SECRETS["METRICS_TOKEN"],
        twitch_webhook_secret=SECRETS["TWITCH_WEBHOOK_SECRET"],
        patreon_webhook_secret=SECRETS["PATREON_WEBHOOK_SECRET"],
        twitch_client_id="clientid0123",
        twitch_client_secret=SECRETS["TWITCH_CLIENT_SECRET"],
        token_encryption_key=SECRETS["TOKEN_ENCRYPTION_KEY"],
        sentry_dsn=f"https://{SECRETS['SENTRY_DSN key']}@sentry.invalid/1",
        log_level="DEBUG",
    )


@pytest.fixture
def transport(leaky_settings: Settings) -> Iterator[CapturingTransport]:

    capturing = CapturingTransport()
    init_sentry(leaky_settings, transport=capturing)
    yield capturing
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def failing_requests(client: TestClient) -> list[Response]:
    """Every way in which a caller can get it wrong, plus two grants the worker will fail to deliver."""
    token = {"Authorization": f"Bearer {SECRETS['GRANTS_API_TOKEN']}"}
    grant = {"user_id": USER, "items": [{"item_id": "gem", "amount": 1}]}
    cheer = sample_payload("channel.cheer")
    unusable = sample_payload("channel.cheer")
    del unusable["event"]["bits"]
    member = encode(Member(discord_id=USER).document())
    answers = [
        client.post("/grants", json=grant),
        client.post("/grants", json=grant, headers={"Authorization": "Bearer not-the-token-at-all"}),
        client.post("/grants", content=b"{not json", headers={**token, "Content-Type": "application/json"}),
        client.post("/grants", content=b"user_id=1", headers={**token, "Content-Type": "application/x-www-form"}),
        client.post("/grants", json={**grant, "amount": True, "items": []}, headers=token),
        client.post("/links", json={"platform": "twitch"}, headers=token),
        client.get("/grants/" + "0" * 32),
        client.get("/metrics", headers={"Authorization": "Bearer wrong"}),
        client.get("/metrics?token=wrong"),
        client.post("/grants", json=grant, headers=token),
        client.post("/grants", json={**grant, "guild_id": OTHER_GUILD}, headers=token),
    ]
    body, headers = signed_request("a-wrong-twitch-secret", cheer)
    answers.append(client.post("/webhooks/twitch", content=body, headers=headers))
    for payload in (b"\xff not json", unusable):
        body, headers = signed_request(SECRETS["TWITCH_WEBHOOK_SECRET"], payload)
        answers.append(client.post("/webhooks/twitch", content=body, headers=headers))
    for body, secret in ((member, "a-wrong-patreon-secret"), (b"[1, 2", SECRETS["PATREON_WEBHOOK_SECRET"])):
        headers = {"X-Patreon-Event": "members:pledge:create", "X-Patreon-Signature": patreon_signature(secret, body)}
        answers.append(client.post("/webhooks/patreon", content=body, headers=headers))
    return answers


def test_a_full_failing_run_leaks_no_secret(
    leaky_settings: Settings,
    transport: CapturingTransport,
    wetbot: WetbotSimulator,
    locked_redis: PrivateRedis,
    workers: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    stream = io.StringIO()
    caplog.set_level(logging.DEBUG)
    configure_logging(leaky_settings, stream=stream)
    try:
        wetbot.inject("500_before", count=3)
        wetbot.inject("drop_before", count=3)
        workers(leaky_settings, threads=2)
        ledger = Ledger(locked_redis.client(password=SECRETS["REDIS password"]), Keys(leaky_settings.redis_key_prefix))
        with TestClient(create_app(leaky_settings), raise_server_exceptions=False) as client:
            answers = failing_requests(client)
            wait_for(lambda: ledger.counts()[GrantState.UNKNOWN] + ledger.counts()[GrantState.DEAD] >= 1, timeout_s=30)
            locked_redis.kill()
            answers += [
                client.post(
                    "/grants",
                    json={"user_id": USER, "items": [{"item_id": "gem", "amount": 1}]},
                    headers={"Authorization": f"Bearer {SECRETS['GRANTS_API_TOKEN']}"},
                ),
                client.get("/readyz"),
            ]
            locked_redis.start()  # back, so the worker can stop
            lock(locked_redis)
    finally:
        root.handlers[:] = handlers
    statuses = [a.status_code for a in answers]
    assert {401, 403, 415, 422, 503} <= set(statuses), statuses
    assert any(r.status == 401 for r in wetbot.requests()) and any(r.status == 500 for r in wetbot.requests())
    assert transport.events  # the grant held for an operator and the refused key were reported
    captured = capsys.readouterr()
    texts = {f"answer {i} ({a.status_code})": a.text + json.dumps(dict(a.headers)) for i, a in enumerate(answers)}
    texts |= {f"Sentry event {i}": json.dumps(event, default=str) for i, event in enumerate(transport.events)}
    texts |= {f"log record {i}": r.getMessage() + (r.exc_text or "") for i, r in enumerate(caplog.records)}
    texts |= {"log output": stream.getvalue() + caplog.text, "stdout": captured.out, "stderr": captured.err}
    assert len(caplog.records) > 20
    assert leaks(texts) == []
