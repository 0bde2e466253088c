"""Property-based fuzzing of ``POST /webhooks/twitch``: never a 5xx, never a grant without a valid signature."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from config.settings import Settings
from producers.twitch.samples import SAMPLE_TYPES, sample_payload, signed_request
from tests.conftest import SettingsFactory
from tests.producers.twitch.test_webhook import RULES, SECRET
from wetbot_rewards.app import create_app
from worker.keys import Keys
from worker.ledger import Ledger

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

HEADER_NAMES = [
    "Twitch-Eventsub-Message-Id",
    "Twitch-Eventsub-Message-Timestamp",
    "Twitch-Eventsub-Message-Signature",
    "Twitch-Eventsub-Message-Type",
    "Twitch-Eventsub-Message-Retry",
    "Twitch-Eventsub-Subscription-Type",
    "Content-Type",
    "Content-Length",
    "X-Anything",
]
MESSAGE_TYPES = ["notification", "webhook_callback_verification", "revocation", "", "other"]
TYPES = [*SAMPLE_TYPES, "stream.online", "", "CHANNEL.CHEER", "channel.cheer\x00"]
#: Header values httpx can send: printable latin-1 without CR/LF.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
#: Event fields the rules read, with arbitrary values, over a documented sample.
event_fields = st.dictionaries(
    st.sampled_from(
        [
            "user_id",
            "tier",
            "is_gift",
            "total",
            "is_anonymous",
            "bits",
            "cumulative_months",
            "reward",
            "user_input",
            "viewers",
            "from_broadcaster_user_id",
            "id",
            "user_login",
        ]
    ),
    json_values | st.sampled_from(["1234", "1000", "222222222222222222", ""]),
    max_size=4,
)


@pytest.fixture
def client(make_settings: SettingsFactory, tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "rules.toml"
    path.write_text(RULES, encoding="utf-8")
    settings_: Settings = make_settings(rewards_file=path, twitch_webhook_secret=SECRET)
    with TestClient(create_app(settings_), raise_server_exceptions=False) as test_client:
        yield test_client


def assert_nothing_written(ledger: Ledger, redis: Redis, keys: Keys) -> None:
    assert ledger.list_grants(limit=5) == []
    assert list(redis.scan_iter(match=f"{keys.prefix}:seen:*", count=1000)) == []
    assert list(redis.scan_iter(match=f"{keys.prefix}:links:*", count=1000)) == []


@FUZZ
@given(
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_text, max_size=len(HEADER_NAMES)),
    body=st.binary(max_size=400)
    | st.builds(lambda t: json.dumps(sample_payload(t)).encode(), st.sampled_from(TYPES[:7])),
)
def test_unsigned_requests_never_grant(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys, headers: dict[str, str], body: bytes
) -> None:
    headers.pop("Content-Length", None)  # a lying length is the server's business, not this property's
    raw_headers = {name.encode(): value.encode("latin-1") for name, value in headers.items()}  # non-ASCII as raw bytes
    response = client.post("/webhooks/twitch", content=body, headers=raw_headers)
    assert response.status_code in (400, 403, 413), response.text
    assert_nothing_written(ledger, redis, keys)


@FUZZ
@given(
    subscription_type=st.sampled_from(TYPES),
    fields=event_fields,
    part=st.sampled_from(["id", "timestamp", "signature", "body", "secret"]),
    flip=st.integers(0, 10_000),
)
def test_any_tampering_with_a_signed_request_is_403(
    client: TestClient,
    ledger: Ledger,
    redis: Redis,
    keys: Keys,
    subscription_type: str,
    fields: dict[str, Any],
    part: str,
    flip: int,
) -> None:
    payload = sample_payload(subscription_type if subscription_type in SAMPLE_TYPES else "channel.cheer")
    payload["event"].update(fields)
    body, headers = signed_request("wrong-secret-0123" if part == "secret" else SECRET, payload)
    names = {
        "id": "twitch-eventsub-message-id",
        "timestamp": "twitch-eventsub-message-timestamp",
        "signature": "twitch-eventsub-message-signature",
    }
    if part in names:
        value = headers[names[part]]
        index = flip % len(value)
        headers[names[part]] = value[:index] + ("0" if value[index] != "0" else "1") + value[index + 1 :]
    elif part == "body":
        index = flip % len(body)
        body = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    response = client.post("/webhooks/twitch", content=body, headers=headers)
    assert response.status_code == 403, response.text
    assert_nothing_written(ledger, redis, keys)


@FUZZ
@given(
    subscription_type=st.sampled_from(TYPES) | st.text(max_size=20),
    message_type=st.sampled_from(MESSAGE_TYPES),
    fields=event_fields,
    raw=st.none() | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_signed_requests_of_any_shape_never_fail_the_server(
    client: TestClient, subscription_type: str, message_type: str, fields: dict[str, Any], raw: bytes | None
) -> None:
    if raw is None:
        payload = sample_payload("channel.cheer")
        payload["subscription"]["type"] = subscription_type
        payload["event"].update(fields)
        body = json.dumps(payload).encode()
    else:
        body = raw
    body, headers = signed_request(SECRET, body, message_type=message_type)
    response = client.post("/webhooks/twitch", content=body, headers=headers)
    assert response.status_code in (200, 400), (response.status_code, response.text)
