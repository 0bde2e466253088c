"""Fuzzing ``POST /webhooks/patreon``: never a 5xx, never a grant without a valid signature."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.patreon.events import MEMBER_TRIGGERS
from producers.patreon.samples import Member, encode
from tests.conftest import USER, SettingsFactory
from tests.producers.patreon.test_events import json_values
from tests.producers.patreon.test_webhook import RULES, SECRET, sign
from wetbot_rewards.app import create_app
from worker.ledger import Ledger

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

triggers = (
    st.sampled_from(sorted(MEMBER_TRIGGERS))
    | st.sampled_from(["posts:publish", "pledges:create", ""])
    | (st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=30))
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40)


@st.composite
def member_documents(draw: st.DrawFn) -> bytes:
    """A valid-looking member document with one spot replaced by anything JSON can hold."""
    document: dict[str, Any] = Member(
        discord_id=draw(st.sampled_from([None, USER])),
        status=draw(st.sampled_from([None, "Paid", "Pending", "Declined", "Refunded", "Fraud"])),
    ).document()
    data = document["data"]
    spots = [document, data, data["attributes"], data["relationships"], document["included"][1]["attributes"]]
    target = draw(st.sampled_from(spots))
    if draw(st.booleans()) and target:
        target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    return encode(document)


bodies = st.binary(max_size=300) | json_values.map(lambda v: encode({"data": v})) | member_documents()


@pytest.fixture
def client(make_settings: SettingsFactory, rewards_file: Path) -> Iterator[TestClient]:
    rewards_file.write_text(RULES, encoding="utf-8")
    with TestClient(create_app(make_settings(patreon_webhook_secret=SECRET))) as test_client:
        yield test_client


@FUZZ
@given(
    trigger=triggers,
    body=bodies,
    signature=st.sampled_from(["none", "random", "other body", "other secret", "valid", "valid, upper case"]),
    noise=header_text,
    extra=st.dictionaries(
        st.sampled_from(["content-type", "user-agent", "x-patreon-uuid", "content-encoding"]), header_text, max_size=3
    ),
)
def test_unsigned_or_badly_signed_deliveries_are_refused_and_grant_nothing(
    client: TestClient, ledger: Ledger, trigger: str, body: bytes, signature: str, noise: str, extra: dict[str, str]
) -> None:
    headers = {name.encode(): value.encode("latin-1") for name, value in extra.items()}
    headers[b"x-patreon-event"] = trigger.encode("latin-1")
    signatures = {
        "none": None,
        "random": noise,
        "other body": sign(body + b" "),
        "other secret": sign(body, "x"),
        "valid": sign(body),
        "valid, upper case": f" {sign(body).upper()} ",
    }
    value = signatures[signature]
    if value is not None:
        headers[b"x-patreon-signature"] = value.encode("latin-1")
    before = len(ledger.list_grants(limit=1000))
    response = client.post("/webhooks/patreon", content=body, headers=headers)
    if signature.startswith("valid"):
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403
        assert len(ledger.list_grants(limit=1000)) == before


@FUZZ
@given(trigger=triggers, body=bodies)
def test_signed_deliveries_of_any_shape_answer_200_and_say_what_happened(
    client: TestClient, ledger: Ledger, trigger: str, body: bytes
) -> None:
    headers = {b"x-patreon-event": trigger.encode("latin-1"), b"x-patreon-signature": sign(body).encode()}
    response = client.post("/webhooks/patreon", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    if answer["outcome"] == "unusable":
        assert answer["error"]  # names what is wrong
