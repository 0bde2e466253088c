"""``wetbot-rewards patreon send-test``: signs a sample and posts it to a running instance (uvicorn in a thread)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import USER, SettingsFactory, serve_app
from tests.producers.patreon.test_webhook import RULES, SECRET
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main
from worker.ledger import Ledger


@pytest.fixture
def service(make_settings: SettingsFactory, rewards_file: Path) -> Iterator[str]:
    """The web app served over real HTTP on a free port; yields its base URL."""
    rewards_file.write_text(RULES, encoding="utf-8")
    with serve_app(create_app(make_settings(patreon_webhook_secret=SECRET))) as url:
        yield url


@pytest.fixture
def cli_env(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATREON_WEBHOOK_SECRET", SECRET)


@pytest.mark.usefixtures("cli_env")
def test_send_test_posts_signed_events_that_the_service_accepts(
    service: str, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["patreon", "send-test", "members:pledge:create", "--url", service, "--discord-id", USER]) == 0
    out = capsys.readouterr()
    assert "200 OK" in out.out and SECRET not in out.out + out.err
    common = ["--url", service, "--discord-id", USER]
    assert main(["patreon", "send-test", "members:update", "--charge-date", "2030-01-01T00:00:00Z", *common]) == 0
    assert main(["patreon", "send-test", "members:pledge:delete", *common]) == 0
    assert main(["patreon", "send-test", "members:pledge:create", "--portal-test", *common]) == 0
    # No worker runs here: the deletion cancels the welcome grant before it is sent.
    rules = sorted((g.rule, g.items[0].amount, g.state.value) for g in ledger.list_grants())
    assert rules == [("monthly", 2.0, "queued"), ("welcome", 1.0, "cancelled")]
    assert all(g.user_id == USER for g in ledger.list_grants())


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--discord-id", "12"], "--discord-id"),
        (["--charge-date", "yesterday"], "--charge-date"),
        (["--url", "ftp://example.com"], "--url"),
        (["--user-id", "abc"], "--user-id"),
        (["--url", "http://127.0.0.1:9"], "cannot reach"),  # the discard port: nothing listens
    ],
)
def test_send_test_reports_bad_input_in_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["patreon", "send-test", "members:update", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and SECRET not in err


def test_send_test_needs_the_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["patreon", "send-test", "members:update"]) == 1
    assert "PATREON_WEBHOOK_SECRET is not set" in capsys.readouterr().err


@pytest.mark.usefixtures("cli_env")
def test_send_test_exits_1_when_the_service_refuses(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATREON_WEBHOOK_SECRET", "not-the-service-secret")
    assert main(["patreon", "send-test", "members:update", "--url", service]) == 1
    assert "403" in capsys.readouterr().out
