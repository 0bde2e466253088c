"""The console answers only the project's own errors as refusals; anything else is a bug: a 500 page of the
console's own kind (HTML, not the API's JSON body), reported to Sentry once, never "Nothing done"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sentry_sdk
from fastapi.testclient import TestClient

from admin import grant_actions
from producers.inbox import EventInbox
from tests.admin.console.test_console_http import ADMIN, log_in, page_csrf
from tests.conftest import GUILD, USER, CapturingTransport, SettingsFactory
from wetbot_rewards.app import create_app
from worker.grant import GrantItem, NewGrant
from worker.ledger import Ledger


@pytest.fixture
def client(make_settings: SettingsFactory, sentry_events: CapturingTransport) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(admin_token=ADMIN)), raise_server_exceptions=False) as test_client:
        log_in(test_client)
        yield test_client


def exceptions_reported(transport: CapturingTransport) -> list[str]:
    return [value["type"] for event in transport.events for value in event.get("exception", {}).get("values", [])]


def test_a_bug_in_a_page_is_the_consoles_500_page_reported_once(
    client: TestClient, sentry_events: CapturingTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the inbox")

    monkeypatch.setattr(EventInbox, "recent", broken)
    answer = client.get("/console/events")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("text/html")
    assert 'data-page="message"' in answer.text and "Something went wrong" in answer.text
    assert "a bug in the inbox" not in answer.text and '"detail"' not in answer.text
    assert answer.headers["x-frame-options"] == "DENY"  # the console's headers, as on every console answer
    sentry_sdk.flush(timeout=5)
    assert exceptions_reported(sentry_events) == ["RuntimeError"]


def test_a_value_error_from_a_bug_in_an_action_is_not_turned_into_nothing_done(
    client: TestClient, ledger: Ledger, sentry_events: CapturingTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:b")).grant

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug, not a refusal")

    monkeypatch.setattr(grant_actions, "cancel", broken)
    csrf = page_csrf(client, f"/console/grants/{grant.id}")
    answer = client.post(f"/console/grants/{grant.id}/cancel", data={"csrf": csrf, "reason": "r"})
    assert answer.status_code == 500 and "Something went wrong" in answer.text
    assert "Nothing done" not in client.get(f"/console/grants/{grant.id}").text
    sentry_sdk.flush(timeout=5)
    assert exceptions_reported(sentry_events) == ["ValueError"]


def test_a_refusal_of_the_project_is_still_a_flash_and_reaches_no_sentry(
    client: TestClient, ledger: Ledger, sentry_events: CapturingTransport
) -> None:
    grant = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:r")).grant
    csrf = page_csrf(client, f"/console/grants/{grant.id}")
    answer = client.post(f"/console/grants/{grant.id}/replay", data={"csrf": csrf})  # queued, not dead: refused
    assert answer.status_code == 200 and "Nothing done" in answer.text
    sentry_sdk.flush(timeout=5)
    assert exceptions_reported(sentry_events) == []


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/console/grants", "GET"),
        ("DELETE", "/console/links", "GET, POST"),
        ("OPTIONS", "/console/events", "GET"),
        ("GET", "/console/logout", "POST"),
        ("POST", "/console", "GET"),
    ],
)
def test_a_method_a_console_page_does_not_take_is_its_own_405_page(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    answer = client.request(method, path)
    assert answer.status_code == 405, answer.text
    assert answer.headers["content-type"].startswith("text/html"), answer.text  # not the API's JSON body
    assert 'data-page="message"' in answer.text and '"detail"' not in answer.text
    assert answer.headers["allow"] == allowed
    assert answer.headers["x-frame-options"] == "DENY"


def test_head_of_a_console_page_is_html_too(client: TestClient) -> None:
    answer = client.head("/console/grants")
    assert answer.status_code == 405 and answer.headers["content-type"].startswith("text/html")


def test_another_method_at_an_address_with_no_page_is_the_not_found_page(client: TestClient) -> None:
    answer = client.put("/console/no-such-page")
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
