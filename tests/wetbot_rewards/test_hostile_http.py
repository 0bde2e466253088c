"""Hostile senders against a real uvicorn: no token, huge or slow bodies, clients that hang up mid-body."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from config.settings import Settings
from producers.api.guarded_route import API_MAX_BODY_BYTES
from tests.conftest import TOKEN, CapturingTransport, SettingsFactory, serve_app, wait_for
from tests.raw_http import closed_by_server, read_response, start_request
from wetbot_rewards.app import create_app
from worker.ledger import Ledger

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
TWITCH_SECRET = "twitch-test-secret-4b8c2d"
PATREON_SECRET = "patreon-test-secret-9e1f"
#: The deadline the tests give a body (the service's default is 10 s).
BODY_TIMEOUT_S = 1.0
API_ROUTES = ["/grants", "/links"]
WEBHOOKS = ["/webhooks/twitch", "/webhooks/patreon"]


@pytest.fixture
def web_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(twitch_webhook_secret=TWITCH_SECRET, patreon_webhook_secret=PATREON_SECRET)


@pytest.fixture
def base_url(web_settings: Settings) -> Iterator[str]:
    with serve_app(create_app(web_settings, body_timeout_s=BODY_TIMEOUT_S)) as url:
        yield url


@pytest.mark.parametrize("path", API_ROUTES)
@pytest.mark.parametrize("auth", [{}, {"Authorization": "Bearer wrong-token-wrong-token"}])
def test_no_or_wrong_token_is_401_before_a_byte_of_the_body_is_read(
    web_settings: Settings, path: str, auth: dict[str, str]
) -> None:
    # A long body deadline: an app that waited for the body would not answer within the 2 s below.
    with serve_app(create_app(web_settings, body_timeout_s=60)) as url:
        sock = start_request(url, path, {**JSON, **auth, "Content-Length": str(200 * 1024 * 1024)})
        with sock:
            started = time.monotonic()
            response = read_response(sock, timeout_s=2)
            assert response.status == 401
            assert time.monotonic() - started < 1
            assert response.json()["error"] == "missing or wrong bearer token"
            assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", API_ROUTES)
def test_an_api_body_over_the_cap_is_413_whether_declared_or_chunked(base_url: str, path: str) -> None:
    sock = start_request(base_url, path, {**JSON, **AUTH, "Content-Length": str(API_MAX_BODY_BYTES + 1)})
    with sock:
        response = read_response(sock, timeout_s=2)
    assert response.status == 413 and response.json()["error"] == f"body larger than {API_MAX_BODY_BYTES} bytes"

    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "' + b"1" * (API_MAX_BODY_BYTES // 2)
        yield b"1" * (API_MAX_BODY_BYTES // 2) + b'"}'

    chunked = requests.post(f"{base_url}{path}", data=chunks(), headers={**JSON, **AUTH}, timeout=5)
    assert chunked.status_code == 413


def test_an_api_body_under_the_cap_still_works(base_url: str, ledger: Ledger) -> None:
    body = {"user_id": "222222222222222222", "items": [{"item_id": "gem", "amount": 1}], "reason": "x" * 500}
    response = requests.post(f"{base_url}/grants", json=body, headers=AUTH, timeout=5)
    assert response.status_code == 202, response.text
    assert [g.id for g in ledger.list_grants()] == [response.json()["id"]]


@pytest.mark.parametrize("path", API_ROUTES + WEBHOOKS)
def test_a_trickled_body_is_cut_with_408_within_the_deadline(base_url: str, path: str, ledger: Ledger) -> None:
    sockets = [start_request(base_url, path, {**JSON, **AUTH, "Content-Length": "1000"}) for _ in range(20)]
    started = time.monotonic()
    open_ones = list(sockets)
    while open_ones and time.monotonic() - started < BODY_TIMEOUT_S + 3:
        for sock in list(open_ones):
            try:
                sock.sendall(b"{")  # one byte every 0.2 s: a whole body would take 200 s
            except OSError:
                open_ones.remove(sock)
        time.sleep(0.2)
    first = read_response(sockets[0], timeout_s=1)
    assert first.status == 408
    assert first.json()["error"] == f"request body not received within {BODY_TIMEOUT_S:g} s"
    assert all(closed_by_server(sock, timeout_s=1) for sock in sockets), "every trickling connection was closed"
    assert time.monotonic() - started < BODY_TIMEOUT_S + 3
    for sock in sockets:
        sock.close()
    assert ledger.list_grants() == []


@pytest.mark.parametrize("path", API_ROUTES + WEBHOOKS)
def test_a_client_that_hangs_up_mid_body_is_logged_quietly_and_never_reaches_sentry(
    make_settings: SettingsFactory,
    sentry_events: CapturingTransport,
    caplog: pytest.LogCaptureFixture,
    path: str,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO)
    settings = make_settings(twitch_webhook_secret=TWITCH_SECRET, patreon_webhook_secret=PATREON_SECRET)
    with serve_app(create_app(settings)) as url:
        for _ in range(10):
            sock = start_request(url, path, {**JSON, **AUTH, "Content-Length": "5000"})
            sock.sendall(b'{"user_id": "2222')
            time.sleep(0.05)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()

        def gone() -> int:
            return sum("client disconnected before the body arrived" in r.getMessage() for r in caplog.records)

        wait_for(lambda: gone() + len(sentry_events.events) >= 10, timeout_s=10)
        # The server still answers normally afterwards.
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert [e.get("exception", {}).get("values", [{}])[0].get("type") for e in sentry_events.events] == []
    assert gone() == 10
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
