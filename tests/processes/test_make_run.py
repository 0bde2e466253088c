"""``make run`` (scripts/run.sh) as a new user meets it, in a copy of the checkout: checks first, a banner whose
commands work as printed on any port, demo data under its own prefix, and no stray Redis for a mistyped port."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import requests

from config.settings import DEMO_KEY_PREFIX
from devtools.chaos.servers import PrivateRedis, free_port
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
#: What a fresh clone has: no tests or benchmarks needed, none of the developer's local files.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".run", "tests", "bench", ".env", "rewards.toml", "__pycache__", "*_cache", "*.egg-info"
)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT, copy, ignore=_NOT_COPIED)
    return copy


def user_env(checkout: Path, **extra: str) -> dict[str, str]:
    """A user's shell: nothing of the service's settings, the code under test importable."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(VENV=str(VENV), PYTHONPATH=str(checkout), **extra)
    return env


def run_sh(checkout: Path, timeout_s: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``make run``'s script to its end; whatever it started is stopped with it (its own process group)."""
    proc = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=checkout,
        env=user_env(checkout, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_bad_setting_is_one_line_before_anything_starts(checkout: Path) -> None:
    done = run_sh(checkout, REDIS_URL="redis://127.0.0.1:6379/14", WETBOT_RATE_LIMIT="ten", PORT=str(free_port()))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "wetbot-rewards: configuration error: WETBOT_RATE_LIMIT: expected N/<seconds>s such as 10/60s"
    ]
    assert "DEMO MODE" not in done.stdout
    assert not (checkout / ".run" / "wetbot-sim.log").exists(), "nothing may start before the check"


def test_the_generated_env_file_is_readable_by_its_owner_only(checkout: Path) -> None:
    run_sh(checkout, REDIS_URL="redis://127.0.0.1:6379/14", WETBOT_RATE_LIMIT="ten")
    env_file = checkout / ".env"
    assert "GRANTS_API_TOKEN=" in env_file.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_a_bad_rewards_file_is_one_line_naming_the_rule(checkout: Path) -> None:
    rules = checkout / "config" / "rewards.toml"
    example = (checkout / "config" / "rewards.example.toml").read_text()
    rules.write_text(example.replace('item_id = "gem", amount = 1', 'item_id = "gem", amount = 0'))
    done = run_sh(checkout, REDIS_URL="redis://127.0.0.1:6379/14")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        'wetbot-rewards: configuration error: config/rewards.toml: twitch rule "cheer-gems" (channel.cheer):'
        " items[0].amount: must not be 0"
    ]


def test_a_simulator_that_cannot_start_shows_its_error(checkout: Path) -> None:
    done = run_sh(checkout, REDIS_URL="redis://127.0.0.1:6379/14", SIM_PORT="eighty", PORT=str(free_port()))
    assert done.returncode == 1
    assert "the WetBot simulator (python -m simulator) did not start" in done.stderr
    assert "argument --port: invalid int value: 'eighty'" in done.stderr
    assert "DEMO MODE" not in done.stdout


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_mistyped_redis_port_starts_no_redis_of_its_own(checkout: Path) -> None:
    port = free_port()
    try:
        done = run_sh(checkout, REDIS_URL=f"redis://localhost:{port}/0")
        assert done.returncode == 1
        assert f"only on the default port 6379, not {port}" in done.stderr
        assert not _listening(port)
    finally:  # the old behaviour left a daemonized server behind: stop it
        pidfile = checkout / ".run" / "redis.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


# -- the demo, end to end -----------------------------------------------------------------------------------


@pytest.fixture
def demo(checkout: Path, private_redis: PrivateRedis) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    port = free_port()
    sim_ports = {name: str(free_port()) for name in ("SIM_PORT", "TWITCH_SIM_PORT", "EVENTSUB_SIM_PORT")}
    env = user_env(checkout, REDIS_URL=private_redis.url, PORT=str(port), **sim_ports)
    (checkout.parent / "sim-ports").write_text(" ".join(sim_ports.values()))
    log = (checkout.parent / "make-run.log").open("w")
    proc = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=checkout,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, port, checkout.parent / "make-run.log"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # anything make run left behind would be a bug: stop it
            os.killpg(proc.pid, signal.SIGKILL)


def banner_commands(text: str) -> list[str]:
    """The shell commands the banner prints (continuation lines joined; the ``<id>`` template left out)."""
    banner = text.split("=" * 70)[1]
    joined = re.sub(r"\\\n\s*", "", banner)
    commands = []
    for line in joined.splitlines():
        command = re.sub(r"^\s*(then look at it:|or:|Clear the demo data \(after stopping make run\):)?\s*", "", line)
        if command.startswith(("curl ", "DEMO_MODE=1 ", str(VENV))) and "<id>" not in command:
            commands.append(command)
    return commands


def test_the_demo_banner_works_as_printed_on_any_port(
    demo: tuple[subprocess.Popen[str], int, Path], private_redis: PrivateRedis, checkout: Path
) -> None:
    proc, port, log = demo

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(ready, timeout_s=60, interval_s=0.2)
    wait_for(lambda: "worker" in log.read_text() and "delivering for" in log.read_text(), timeout_s=30)
    wait_for(lambda: 'created reward "Potion"' in log.read_text(), timeout_s=30)  # what demo redeem redeems
    commands = banner_commands(log.read_text())
    tries = [command for command in commands if " demo clear" not in command]
    shell = user_env(checkout, REDIS_URL=private_redis.url)  # another terminal: no PORT, no DEMO_MODE
    for command in tries:
        done = subprocess.run(
            ["bash", "-c", command], cwd=checkout, env=shell, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        if " send-test " in command:
            assert re.search(r"^answer: 2\d\d ", done.stdout, re.M), done.stdout
        if " demo redeem " in command:
            assert done.stdout.rstrip().endswith(": FULFILLED"), done.stdout
    [clear] = [command for command in commands if " demo clear" in command]
    assert len(tries) == 5, tries
    console_url = re.search(r"operator console in a browser:\s+(\S+)", log.read_text())[1]  # type: ignore[index]
    token = re.search(r"log in with the token (\S+)", log.read_text())[1]  # type: ignore[index]
    browser = requests.Session()
    login = browser.get(f"{console_url}/login", timeout=10)
    form = re.search(r'name="csrf" value="([^"]+)"', login.text)[1]  # type: ignore[index]
    answer = browser.post(f"{console_url}/login", data={"csrf": form, "token": token}, timeout=10)
    assert answer.status_code == 200 and answer.url == console_url and "data-guild=" in answer.text
    redis = private_redis.client()
    sources = {key.split(b":")[0] for key in cast(list[bytes], redis.keys("*"))}
    assert sources == {DEMO_KEY_PREFIX.encode()}, "demo mode writes under its own prefix only"
    ledger_list = subprocess.run(
        ["bash", "-c", commands[1]], cwd=checkout, env=shell, capture_output=True, text=True, timeout=30, check=False
    )
    assert len([line for line in ledger_list.stdout.splitlines() if line.strip()]) >= 3, ledger_list.stdout

    os.killpg(proc.pid, signal.SIGTERM)  # stop make run: then clear, twice
    proc.wait(timeout=30)
    sim_ports = [int(p) for p in (checkout.parent / "sim-ports").read_text().split()]
    wait_for(lambda: not any(map(_listening, [port, *sim_ports])), timeout_s=15)  # all it started stopped
    redis.set("wbr:real-install", "kept")
    for _ in range(2):
        done = subprocess.run(
            ["bash", "-c", clear], cwd=checkout, env=shell, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
    assert redis.keys("*") == [b"wbr:real-install"]
    assert "deleted 0 demo key(s)" in done.stdout


def test_the_demo_connects_a_twitch_channel_whose_redemptions_become_fulfilled_grants(
    demo: tuple[subprocess.Popen[str], int, Path], checkout: Path, private_redis: PrivateRedis
) -> None:
    proc, port, log = demo
    sim_port, twitch_port, eventsub_port = (int(p) for p in (checkout.parent / "sim-ports").read_text().split())
    wait_for(lambda: proc.poll() is None and "connected as cool_user (1337)" in log.read_text(), timeout_s=30)
    text = log.read_text()
    assert re.search(r"open http://127\.0\.0\.1:\d+/activate\S* and enter the code [A-Z]{8} ", text), text
    token = re.search(r"^GRANTS_API_TOKEN=(\S+)$", (checkout / ".env").read_text(), re.M)[1]  # type: ignore[index]
    assert re.search(r"^TOKEN_ENCRYPTION_KEY=\S{32,}$", (checkout / ".env").read_text(), re.M)
    assert "TWITCH_API_URL=\n" in (checkout / ".env").read_text(), "the simulator's URLs never go into .env"
    browser = requests.Session()

    def twitch_page() -> str:
        assert proc.poll() is None, log.read_text()
        try:
            login = browser.get(f"http://127.0.0.1:{port}/console/login", timeout=5)
        except requests.ConnectionError:
            return ""
        if "/console/login" in login.url:
            form = re.search(r'name="csrf" value="([^"]+)"', login.text)[1]  # type: ignore[index]
            browser.post(f"http://127.0.0.1:{port}/console/login", data={"csrf": form, "token": token}, timeout=5)
        return browser.get(f"http://127.0.0.1:{port}/console/twitch", timeout=5).text

    wait_for(lambda: 'data-list="rewards"' in twitch_page(), timeout_s=30, interval_s=0.3)
    page = twitch_page()
    assert re.search(r'data-field="broadcaster">[^<]*cool_user', page), page
    sim_rewards = requests.get(f"http://127.0.0.1:{twitch_port}/_sim/rewards", timeout=5).json()["rewards"]
    [potion] = [reward for reward in sim_rewards if reward["title"] == "Potion"]
    assert potion["client_id"] == "wbr-demo-client" and f'data-reward="{potion["id"]}"' in page

    redeem = subprocess.run(
        [str(VENV / "bin" / "wetbot-rewards"), "demo", "redeem", "--simulator", f"http://127.0.0.1:{twitch_port}"],
        cwd=checkout,
        env=user_env(checkout, REDIS_URL=private_redis.url, DEMO_MODE="1"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert redeem.returncode == 0, redeem.stderr
    redemption_id = re.search(r"^redeemed Potion as cool_user: redemption (\S+)$", redeem.stdout, re.M)[1]  # type: ignore[index]

    def status() -> str:
        redemptions = requests.get(f"http://127.0.0.1:{twitch_port}/_sim/redemptions", timeout=5).json()
        return str(next(r["status"] for r in redemptions["redemptions"] if r["id"] == redemption_id))

    wait_for(lambda: status() == "FULFILLED", timeout_s=20, interval_s=0.2)
    inventory = requests.get(
        f"http://127.0.0.1:{sim_port}/_sim/inventory/111111111111111111/222222222222222222", timeout=5
    ).json()["inventory"]
    assert inventory.get("potion") == 3, inventory

    os.killpg(proc.pid, signal.SIGTERM)  # Ctrl-C's counterpart: everything make run started stops
    proc.wait(timeout=30)
    wait_for(lambda: not any(map(_listening, [port, sim_port, twitch_port, eventsub_port])), timeout_s=15)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


def test_with_a_wetbot_key_no_simulator_starts_and_twitch_settings_stay_the_users(
    checkout: Path, private_redis: PrivateRedis
) -> None:
    port, twitch_port = free_port(), free_port()
    env = user_env(
        checkout,
        REDIS_URL=private_redis.url,
        PORT=str(port),
        TWITCH_SIM_PORT=str(twitch_port),
        WETBOT_API_KEY="a-real-key",
        WETBOT_API_KEYS="333333333333333333=another-real-key",
        WETBOT_API_URL=f"http://127.0.0.1:{free_port()}/api",
    )
    log = checkout.parent / "make-run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/run.sh"],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, timeout_s=60, interval_s=0.2)
        wait_for(lambda: "eventsub.1" in log.read_text(), timeout_s=30)
        text = log.read_text()
        assert "DEMO MODE" not in text and "demo Twitch channel" not in text, text
        assert (
            not (checkout / ".run" / "twitch-sim.log").exists() and not (checkout / ".run" / "wetbot-sim.log").exists()
        )
        assert not _listening(twitch_port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
