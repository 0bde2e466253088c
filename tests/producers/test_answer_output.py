"""``send-test`` prints the service's status and answer body (indented when JSON), for both platforms."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from producers.answer_output import format_answer
from wetbot_rewards.cli import main

ANSWER = {"granted": ["g-1", "g-2"], "parked": [], "ignored": None}
SECRET = "send-test-secret-0123456789"


class _Answers(BaseHTTPRequestHandler):
    """Answers every POST as a webhook that says what it did would, and records the path."""

    paths: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).paths.append(self.path)
        body = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("TWITCH_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PATREON_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("REWARDS_FILE", str(tmp_path / "none.toml"))


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["twitch", "send-test", "channel.cheer", "--user-id", "1337"], "/webhooks/twitch"),
        (["patreon", "send-test", "members:pledge:create", "--tier", "9999999"], "/webhooks/patreon"),
    ],
)
def test_send_test_prints_status_and_the_json_body_indented(
    answering: str, argv: list[str], path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--url", answering]) == 0
    out = capsys.readouterr().out
    assert "answer: 200 OK\n" + json.dumps(ANSWER, indent=2) in out
    assert _Answers.paths[-1] == path
    assert SECRET not in out


def test_a_body_that_is_not_json_is_printed_as_text_with_control_characters_escaped() -> None:
    assert format_answer(403, "Forbidden", b"bad signature\x1b[2J\n") == "answer: 403 Forbidden\nbad signature\\x1b[2J"
    assert format_answer(204, "No Content", b"") == "answer: 204 No Content"
