"""``wetbot-rewards twitch connect`` run as a real process against the Twitch simulator over HTTP; the test
plays the broadcaster through the simulator's control API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydantic import SecretStr
from redis import Redis

from producers.twitch.oauth import OAuthClient
from producers.twitch.tokens import AuthState, TokenVault
from simulator.twitch import DEFAULT_BROADCASTER, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from tests.conftest import GUILD, TEST_REDIS_URL
from worker.keys import Keys

KEY = "connect-test-key-4e5f6a7b8c9d0e1f2a3b4c5d"
RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
event = "channel.cheer"
items = [{{ id = "gem", amount = 1 }}]

[[twitch.rules]]
event = "channel.channel_points_custom_reward_redemption.add"
reward_id = "b0f0a3e1-0000-4000-8000-000000000001"
items = [{{ id = "gem", amount = 5 }}]
"""
CODE_LINE = re.compile(r"^open (?P<url>\S+) and enter the code (?P<code>[A-Z]+) \(it expires in .+\)$")
#: Seconds the whole command may take in a test (the simulator's interval is short).
RUN_TIMEOUT_S = 20


@pytest.fixture
def sim() -> Iterator[TwitchSimulator]:
    simulator = TwitchSimulator(device_poll_interval_s=0.05).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def env(tmp_path: Path, prefix: str, sim: TwitchSimulator) -> dict[str, str]:
    rules = tmp_path / "rewards.toml"
    rules.write_text(RULES, encoding="utf-8")
    return {
        **os.environ,  # the conftest cleared every setting from it
        "TWITCH_CLIENT_ID": DEFAULT_CLIENT_ID,
        "TWITCH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "TWITCH_AUTH_URL": sim.auth_url,
        "TOKEN_ENCRYPTION_KEY": KEY,
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "REWARDS_FILE": str(rules),
    }


class Connect:
    """The command running in its own process, its output read line by line as it comes."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wetbot_rewards.cli", "twitch", "connect"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.code: str | None = None
        self._code_seen = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            match = CODE_LINE.match(self.lines[-1])
            if match:
                self.code = match["code"]
                self._code_seen.set()
        self._code_seen.set()

    def wait_for_code(self) -> str:
        assert self._code_seen.wait(RUN_TIMEOUT_S), "no code printed"
        assert self.code is not None, f"no code line in {self.lines}"
        return self.code

    def finish(self) -> tuple[int, str, str]:
        """Exit status, stdout and stderr."""
        try:
            self.process.wait(timeout=RUN_TIMEOUT_S)  # stdout is the reader thread's alone
        finally:
            self.process.kill()
        self._reader.join(5)
        assert self.process.stdout is not None and self.process.stderr is not None
        err = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return self.process.returncode, "\n".join(self.lines), err


def control(sim: TwitchSimulator, action: str, user_code: str) -> None:
    """The broadcaster's click, through the simulator's HTTP control API (as another process would)."""
    response = requests.post(f"{sim.root_url}/_sim/device/{action}", json={"user_code": user_code}, timeout=5)
    assert response.status_code == 200, response.text


def stored_vault(sim: TwitchSimulator, prefix: str) -> TokenVault:
    oauth = OAuthClient(auth_url=sim.auth_url, client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET)
    return TokenVault(Redis.from_url(TEST_REDIS_URL), Keys(prefix), SecretStr(KEY), oauth)


def test_connect_prints_the_scopes_and_code_and_stores_the_tokens_once_approved(
    env: dict[str, str], tmp_path: Path, sim: TwitchSimulator, prefix: str
) -> None:
    run = Connect(env, tmp_path)
    code = run.wait_for_code()
    assert sim.pending_user_codes() == [code]
    control(sim, "approve", code)
    status, out, err = run.finish()
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "scopes asked for: bits:read channel:manage:redemptions channel:read:redemptions"
    assert CODE_LINE.match(lines[1]) and f"{sim.root_url}/activate" in lines[1]
    assert lines[-1] == f"connected as {DEFAULT_BROADCASTER.login} ({DEFAULT_BROADCASTER.id})"
    vault = stored_vault(sim, prefix)
    tokens = vault.load()
    assert (tokens.user_id, tokens.login) == (DEFAULT_BROADCASTER.id, DEFAULT_BROADCASTER.login)
    assert tokens.scopes == ("bits:read", "channel:manage:redemptions", "channel:read:redemptions")
    assert vault.state().state is AuthState.CONNECTED
    for secret in (tokens.access_token, tokens.refresh_token, KEY, DEFAULT_CLIENT_SECRET):
        assert secret not in out + err


def test_a_denied_request_exits_1_with_one_line(
    env: dict[str, str], tmp_path: Path, sim: TwitchSimulator, prefix: str
) -> None:
    run = Connect(env, tmp_path)
    control(sim, "deny", run.wait_for_code())
    status, _, err = run.finish()
    assert status == 1
    declined = "the broadcaster declined the authorisation request; run wetbot-rewards twitch connect again"
    assert err.splitlines() == [f"wetbot-rewards: {declined}"]
    assert stored_vault(sim, prefix).state().state is AuthState.NOT_CONNECTED


def test_an_expired_code_exits_1_with_one_line(env: dict[str, str], tmp_path: Path, prefix: str) -> None:
    with TwitchSimulator(device_poll_interval_s=0.05, device_code_lifetime_s=0.5) as short:
        run = Connect({**env, "TWITCH_AUTH_URL": short.auth_url}, tmp_path)
        run.wait_for_code()
        status, out, err = run.finish()
        assert status == 1
        assert len(err.splitlines()) == 1 and "expired" in err and "twitch connect again" in err
        assert "connected as" not in out
        assert stored_vault(short, prefix).state().state is AuthState.NOT_CONNECTED


@pytest.mark.parametrize(
    ("name", "value", "status", "expected"),
    [
        (
            "TOKEN_ENCRYPTION_KEY",
            None,
            1,
            "wetbot-rewards: TOKEN_ENCRYPTION_KEY is not set: the tokens cannot be stored",
        ),
        ("TOKEN_ENCRYPTION_KEY", "short-key", 2, "TOKEN_ENCRYPTION_KEY: must be at least 32 characters"),
        ("TWITCH_CLIENT_ID", None, 1, "wetbot-rewards: TWITCH_CLIENT_ID is not set"),
    ],
)
def test_a_missing_setting_exits_before_asking_twitch(
    env: dict[str, str], tmp_path: Path, sim: TwitchSimulator, name: str, value: str | None, status: int, expected: str
) -> None:
    changed = {k: v for k, v in env.items() if k != name} | ({name: value} if value is not None else {})
    done = subprocess.run(
        [sys.executable, "-m", "wetbot_rewards.cli", "twitch", "connect"],
        env=changed,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == status
    assert len(done.stderr.splitlines()) == 1 and expected in done.stderr
    assert "short-key" not in done.stderr
    assert sim.requests() == []
