"""CallOutcome classification of the WetBot client, against the simulator and against tiny raw servers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from simulator.wetbot import WetbotSimulator
from tests.conftest import API_KEY, GUILD, USER
from worker.client import CallOutcome, ItemDelta, WetbotClient
from worker.profile import Inventory, parse_inventory


def client_for(url: str, timeout_s: float = 2.0, key: str = API_KEY) -> WetbotClient:
    return WetbotClient(url, key, timeout_s)


def test_success_returns_the_profile(sim: WetbotSimulator) -> None:
    result = client_for(sim.url).add_items(GUILD, USER, [ItemDelta("gem", 2), ItemDelta("coin", 0.5)])
    assert result.outcome == CallOutcome.DELIVERED and result.status == 200
    assert result.profile is not None
    assert parse_inventory(result.profile) == Inventory({"gem": 2, "coin": 0.5})


def test_the_key_is_sent_bare(sim: WetbotSimulator) -> None:
    assert client_for(sim.url).get_profile(GUILD, USER).outcome == CallOutcome.DELIVERED
    assert client_for(sim.url, key="Bearer " + API_KEY).get_profile(GUILD, USER).outcome == CallOutcome.UNAUTHORISED


def test_wrong_guild_and_bad_key_are_unauthorised(sim: WetbotSimulator) -> None:
    assert client_for(sim.url).add_items("999999999999999999", USER, [ItemDelta("gem", 1)]).status == 403
    result = client_for(sim.url, key="wrong-key-123456").add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == CallOutcome.UNAUTHORISED and result.status == 401


def test_validation_error_is_rejected_with_the_server_message(sim: WetbotSimulator) -> None:
    result = client_for(sim.url).add_items(GUILD, USER, [ItemDelta("gem", 2e9)])
    assert result.outcome == CallOutcome.REJECTED and result.status == 400
    assert "amount" in result.message


def test_429_is_rate_limited_with_retry_after(sim: WetbotSimulator) -> None:
    sim.set_limit(1, 30)
    sim.retry_after = True
    client = client_for(sim.url)
    client.get_profile(GUILD, USER)
    result = client.get_profile(GUILD, USER)
    assert result.outcome == CallOutcome.RATE_LIMITED
    assert result.retry_after_s is not None and 28 <= result.retry_after_s <= 30


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        # Any 5xx may come after applying (500_after does): only a read-back can tell.
        ("500_before", CallOutcome.AMBIGUOUS),
        ("500_after", CallOutcome.AMBIGUOUS),
        ("drop_before", CallOutcome.AMBIGUOUS),
        ("slow_after", CallOutcome.AMBIGUOUS),
    ],
)
def test_faults(sim: WetbotSimulator, kind: str, outcome: CallOutcome) -> None:
    sim.inject(kind, delay_s=1.0)
    result = client_for(sim.url, timeout_s=0.3).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == outcome, result


def test_nothing_listening_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = client_for(f"http://127.0.0.1:{port}/api").add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == CallOutcome.TRANSIENT and result.status is None
    assert "cannot connect" in result.message


class _Canned(BaseHTTPRequestHandler):
    status = 200
    body = b""
    headers_out: dict[str, str] = {}

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[tuple[str, type[_Canned]]]:
    handler = type("Handler", (_Canned,), {"headers_out": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api", handler
    server.shutdown()
    server.server_close()


def test_error_envelope_under_200_is_read_by_its_code(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    handler.body = json.dumps({"code": 404, "message": "Item not found"}).encode()
    result = client_for(url).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == CallOutcome.REJECTED and result.status == 404 and result.message == "Item not found"


def test_non_json_errors_keep_a_readable_message(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    handler.status, handler.body = 502, b"<html>Bad gateway</html>"
    result = client_for(url).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == CallOutcome.AMBIGUOUS and "Bad gateway" in result.message


def test_408_is_transient(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    handler.status, handler.body = 408, b'{"code":408,"message":"request timeout"}'
    result = client_for(url).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == CallOutcome.TRANSIENT and result.status == 408


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html><body>Welcome to our proxy</body></html>"),
        ("application/json", b'{"ok": true}'),
        ("application/json", b'{"code": 200}'),
        ("application/json", b'{"code": 200, "response": "done"}'),
        ("application/json", b""),
    ],
)
def test_a_2xx_without_wetbots_envelope_and_profile_is_ambiguous(
    canned: tuple[str, type[_Canned]], content_type: str, body: bytes
) -> None:
    url, handler = canned
    handler.status, handler.body, handler.headers_out = 200, body, {"Content-Type": content_type}
    result = client_for(url).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == CallOutcome.AMBIGUOUS and result.status == 200, result
    assert "without WetBot's envelope" in result.message


def test_retry_after_as_http_date(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    handler.status, handler.body = 429, b'{"code":429,"message":"slow down"}'
    handler.headers_out = {"Retry-After": formatdate(time.time() + 20, usegmt=True)}
    result = client_for(url).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == CallOutcome.RATE_LIMITED and result.retry_after_s is not None
    assert 15 <= result.retry_after_s <= 21


def test_a_server_echoing_the_key_does_not_leak_it(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    handler.status, handler.body = 400, json.dumps({"code": 400, "message": f"bad key {API_KEY}"}).encode()
    result = client_for(url).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert API_KEY not in result.message and "[redacted]" in result.message


def test_redirects_are_not_followed(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    handler.status, handler.headers_out = 307, {"Location": "http://example.invalid/"}
    result = client_for(url).add_items(GUILD, USER, [ItemDelta("gem", 1)])
    assert result.outcome == CallOutcome.REJECTED and result.status == 307
