"""Every error answer has one shape: ``{"error": "<one line>", "detail": [{loc, msg, type}, ...]}``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config import domain
from config.settings import Settings
from tests.conftest import TOKEN, USER, SettingsFactory
from wetbot_rewards.app import create_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    settings = make_settings(twitch_webhook_secret="twitch-test-secret-4b8c2d", patreon_webhook_secret="p" * 20)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def assert_error_shape(body: Any, error: str) -> None:
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == error
    assert isinstance(body["detail"], list) and body["detail"], body
    for problem in body["detail"]:
        assert set(problem) == {"loc", "msg", "type"}, problem


@pytest.mark.parametrize(
    ("method", "path", "headers", "content", "status", "error"),
    [
        ("POST", "/grants", {}, b"{}", 401, "missing or wrong bearer token"),
        ("GET", "/grants/" + "0" * 32, {}, None, 401, "missing or wrong bearer token"),
        ("GET", "/grants/" + "0" * 32, AUTH, None, 404, "no such grant"),
        ("DELETE", "/links/twitch/1", AUTH, None, 404, "no run-time link for that user"),
        ("GET", "/no/such/route", {}, None, 404, "Not Found"),
        ("DELETE", "/grants", {}, None, 405, "Method Not Allowed"),
        ("POST", "/grants", {**AUTH, **JSON, "Content-Length": "99999999"}, None, 413, "body larger than 65536 bytes"),
        ("POST", "/webhooks/twitch", JSON, b"{}", 403, "missing message id, timestamp or signature header"),
        ("POST", "/webhooks/patreon", JSON, b"{}", 403, "missing or wrong X-Patreon-Signature"),
    ],
)
def test_http_errors_have_the_one_shape(
    client: TestClient,
    method: str,
    path: str,
    headers: dict[str, str],
    content: bytes | None,
    status: int,
    error: str,
) -> None:
    response = client.request(method, path, headers=headers, content=content)
    assert response.status_code == status, response.text
    assert_error_shape(response.json(), error)
    assert response.json()["detail"][0]["msg"] == error


def test_validation_errors_keep_the_field_summary_and_list_every_problem(client: TestClient) -> None:
    response = client.post("/grants", json={"user_id": "1", "items": []}, headers=AUTH)
    assert response.status_code == 422
    body = response.json()
    assert_error_shape(body, "user_id: expected a Discord id: 17-20 digits 0-9, not starting with 0")
    assert [p["loc"] for p in body["detail"]] == [["body", "user_id"], ["body", "items"]]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b'{"user_id": 1 "items": []}', "body is not valid JSON: Expecting ',' delimiter at line 1 column 15"),
        (
            b'{\n  "user_id": "1",\n  items: []\n}',
            "body is not valid JSON: Expecting property name enclosed in double quotes at line 3 column 3",
        ),
    ],
)
def test_a_json_syntax_error_says_what_and_where(client: TestClient, content: bytes, error: str) -> None:
    response = client.post("/grants", content=content, headers={**AUTH, **JSON})
    assert response.status_code == 422
    assert_error_shape(response.json(), error)
    assert response.json()["detail"] == [{"loc": ["body"], "msg": error, "type": "json_invalid"}]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, "body is application/x-www-form-urlencoded, not JSON"),
        ({"Content-Type": "text/plain; charset=utf-8"}, "body is text/plain, not JSON"),
        ({}, "body has no Content-Type"),
    ],
)
def test_a_body_that_is_not_declared_json_gets_a_content_type_hint(
    client: TestClient, headers: dict[str, str], error: str
) -> None:
    body = f'{{"user_id": "{USER}", "items": [{{"item_id": "gem", "amount": 1}}]}}'.encode()
    response = client.post("/grants", content=body, headers={**AUTH, **headers})
    assert response.status_code == 415
    assert_error_shape(response.json(), f"{error}; send Content-Type: application/json")
    assert client.post("/grants", content=body, headers={**AUTH, "Content-Type": "application/json"}).status_code == 202


def test_storage_unavailable_and_missing_token_configuration_have_the_one_shape(
    make_settings: SettingsFactory,
) -> None:
    down = make_settings(redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(down)) as client:
        body = {"user_id": USER, "items": [{"item_id": "gem", "amount": 1}], "idempotency_key": "k"}
        response = client.post("/grants", json=body, headers=AUTH)
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert_error_shape(response.json(), "storage unavailable; nothing was queued, retry later")
    with TestClient(create_app(make_settings(grants_api_token=None))) as client:
        response = client.get("/grants/" + "0" * 32, headers=AUTH)
        assert response.status_code == 503
        assert_error_shape(response.json(), "GRANTS_API_TOKEN is not set on this server")


def test_an_unexpected_error_is_500_in_the_one_shape(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert_error_shape(response.json(), "internal error; nothing is known to be queued, retry later with the same key")
    assert "a bug" not in response.text


def test_a_broken_input_rule_past_validation_is_a_422_naming_the_field(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())

    def probe() -> None:
        domain.cursor_ms("\u00b2")

    app.add_api_route("/probe-invalid-input", probe)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/probe-invalid-input")
    assert answer.status_code == 422
    assert_error_shape(answer.json(), "before_ms: expected a whole number of at most 15 digits 0-9")
    assert answer.json()["detail"][0]["loc"] == ["before_ms"]
