"""The Procfile's real processes as a new deployment meets them: a missing rules file, Redis down, the logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from simulator.wetbot import WetbotSimulator
from tests.conftest import free_port, wait_for
from tests.processes.test_procfile import Processes, procfile_command, procs, service_env  # noqa: F401

pytestmark = pytest.mark.slow


def web_ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.mark.parametrize("kind", ["web", "worker"])
def test_a_missing_rewards_file_stops_start_up_naming_the_path(
    kind: str,
    prefix: str,
    sim: WetbotSimulator,
    tmp_path: Path,
    procs: Processes,  # noqa: F811
) -> None:
    missing = tmp_path / "deploy" / "rewards.toml"
    proc = procs.start(kind, procfile_command(kind, free_port()), service_env(prefix, sim, missing))
    assert proc.wait(timeout=30) == 2
    lines = [line for line in procs.log(kind).splitlines() if "configuration error" in line]
    assert lines == [
        f"wetbot-rewards: configuration error: {missing}: file not found: copy config/rewards.example.toml there"
        " and edit it, or set REWARDS_FILE to your rules file (config/rewards.toml is git-ignored, so a git push"
        " deploy does not ship it)"
    ]


def test_demo_mode_starts_without_a_rewards_file(
    prefix: str,
    sim: WetbotSimulator,
    tmp_path: Path,
    procs: Processes,  # noqa: F811
) -> None:
    port = free_port()
    env = service_env(prefix, sim, tmp_path / "none.toml", DEMO_MODE="1")
    procs.start("web", procfile_command("web", port), env)
    wait_for(lambda: web_ready(port), timeout_s=20, interval_s=0.2)
