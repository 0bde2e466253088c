"""``POST /grants`` takes numbers only as JSON numbers and ids and reasons only as printable text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from tests.conftest import TOKEN, USER
from wetbot_rewards.app import create_app
from worker.ledger import Ledger

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def post(client: TestClient, item: dict[str, Any], **body: Any) -> Any:
    return client.post("/grants", json={"user_id": USER, "items": [item], **body}, headers=AUTH)


@pytest.mark.parametrize("amount", [True, False, "5", "1e3", None, [5], {"n": 5}])
def test_an_amount_that_is_not_a_json_number_is_refused(client: TestClient, ledger: Ledger, amount: Any) -> None:
    response = post(client, {"item_id": "gem", "amount": amount})
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("items[0].amount: ")
    assert ledger.list_grants() == []


@pytest.mark.parametrize("field", ["user_id", "guild_id"])
def test_a_discord_id_sent_as_a_number_is_refused(client: TestClient, field: str) -> None:
    response = client.post(
        "/grants", json={"user_id": USER, field: int(USER), "items": [{"item_id": "gem", "amount": 1}]}, headers=AUTH
    )
    assert response.status_code == 422 and response.json()["error"].startswith(f"{field}: ")


def test_whole_and_fractional_json_numbers_are_amounts(client: TestClient) -> None:
    assert post(client, {"item_id": "gem", "amount": 5}).status_code == 202
    assert post(client, {"item_id": "gem", "amount": -2.5}, idempotency_key="b").status_code == 202


@pytest.mark.parametrize(
    ("item_id", "code"),
    [
        ("gem\x00", "U+0000"),
        ("\x1b[2Jgem", "U+001B"),
        ("gem\u200f", "U+200F"),  # right-to-left mark (Cf)
        ("\u202egem", "U+202E"),  # right-to-left override (Cf)
        ("gem\u2028x", None),  # line separator (Zl): refused as whitespace by the pattern already
        ("gem\u2029x", None),  # paragraph separator (Zp): likewise
        ("gem\ue000", "U+E000"),  # private use (Co)
        ("gem\u200b", "U+200B"),  # zero-width space (Cf)
        ("gem\u0378", "U+0378"),  # unassigned (Cn)
    ],
)
def test_an_item_id_with_unprintable_characters_is_refused(
    client: TestClient, ledger: Ledger, item_id: str, code: str | None
) -> None:
    response = post(client, {"item_id": item_id, "amount": 1})
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("items[0].item_id: ")
    if code is not None:
        assert response.json()["error"] == f"items[0].item_id: must be printable text (contains {code})"
    assert ledger.list_grants() == []


def test_a_reason_must_be_printable_but_may_hold_emoji(client: TestClient, ledger: Ledger) -> None:
    for reason in ("line\nbreak", "\x1b]0;pwned\x07", "order \u202e1234"):
        response = post(client, {"item_id": "gem", "amount": 1}, reason=reason)
        assert response.status_code == 422 and response.json()["error"].startswith("reason: "), reason
    assert ledger.list_grants() == []
    emoji = "thanks 👩\u200d💻 für alles — ✨"
    accepted = post(client, {"item_id": "gem", "amount": 1}, reason=emoji)
    assert accepted.status_code == 202 and accepted.json()["reason"] == emoji
    assert post(client, {"item_id": "édition-limitée", "amount": 1}, idempotency_key="u").status_code == 202
