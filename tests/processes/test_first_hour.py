"""The Procfile's real processes as a new deployment meets them: a missing rules file, Redis down, the logs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devtools.chaos.servers import PrivateRedis, free_port
from simulator.wetbot import WetbotSimulator
from tests.conftest import TOKEN, wait_for
from tests.processes.test_procfile import ROOT, Processes, procfile_command, procs, service_env  # noqa: F401

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


# -- the worker and Redis at start ----------------------------------------------------------------------------


def test_the_worker_says_when_redis_is_down_and_starts_once_it_answers(
    prefix: str,
    sim: WetbotSimulator,
    rewards_file: Path,
    tmp_path: Path,
    procs: Processes,  # noqa: F811
) -> None:
    port = free_port()
    env = service_env(prefix, sim, rewards_file, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    procs.start("worker", procfile_command("worker"), env)
    down = f"cannot reach Redis at redis://127.0.0.1:{port}/0 (ConnectionError): no grant is delivered until it answers"
    wait_for(lambda: down in procs.log("worker"), timeout_s=30, interval_s=0.2)
    time.sleep(3)  # a few retries later: still not "ready"
    assert "ready for action" not in procs.log("worker")
    redis = PrivateRedis(tmp_path / "redis", port=port)
    (tmp_path / "redis").mkdir()
    redis.start()
    try:
        wait_for(lambda: "ready for action" in procs.log("worker"), timeout_s=30, interval_s=0.2)
        assert f"Redis at redis://127.0.0.1:{port}/0 answers again" in procs.log("worker")
        assert procs.log("worker").count(down) == 1, "one line, not one per retry"
    finally:
        procs.stop_all()
        redis.stop()


def test_a_worker_waiting_for_redis_stops_on_sigterm(
    prefix: str,
    sim: WetbotSimulator,
    rewards_file: Path,
    procs: Processes,  # noqa: F811
) -> None:
    env = service_env(prefix, sim, rewards_file, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    proc = procs.start("worker", procfile_command("worker"), env)
    wait_for(lambda: "cannot reach Redis" in procs.log("worker"), timeout_s=30, interval_s=0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=15)


# -- one log format, redacted, uvicorn's access log included --------------------------------------------------

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.()]+: ")


def run_web_and_worker(
    prefix: str,
    sim: WetbotSimulator,
    rewards_file: Path,
    running: Processes,
    **extra: str,
) -> tuple[str, str]:
    """Start both Procfile processes, send a request with the token in its query string, stop; their logs."""
    port = free_port()
    env = service_env(prefix, sim, rewards_file, **extra)
    running.start("web", procfile_command("web", port), env)
    running.start("worker", procfile_command("worker"), env)
    wait_for(lambda: web_ready(port), timeout_s=30, interval_s=0.2)
    wait_for(lambda: "ready for action" in running.log("worker"), timeout_s=30, interval_s=0.2)
    assert requests.get(f"http://127.0.0.1:{port}/healthz?token={TOKEN}", timeout=5).status_code == 200
    wait_for(lambda: "/healthz?token=" in running.log("web"), timeout_s=10)
    running.stop_all()
    return running.log("web"), running.log("worker")


def test_web_and_worker_log_one_text_format_and_redact_uvicorns_access_log(
    prefix: str,
    sim: WetbotSimulator,
    rewards_file: Path,
    procs: Processes,  # noqa: F811
) -> None:
    web, worker = run_web_and_worker(prefix, sim, rewards_file, procs)
    assert TOKEN not in web + worker
    assert '"GET /healthz?token=[redacted] HTTP/1.1" 200' in web
    for line in (web + worker).splitlines():
        assert TEXT_LINE.match(line), line
    assert "uvicorn.error: Application startup complete." in web
    assert "Dramatiq '" in worker and "is booting up" in worker, "the supervisor process logs in our format too"


def test_log_format_json_is_one_object_per_line_everywhere(
    prefix: str,
    sim: WetbotSimulator,
    rewards_file: Path,
    procs: Processes,  # noqa: F811
) -> None:
    web, worker = run_web_and_worker(prefix, sim, rewards_file, procs, LOG_FORMAT="json")
    assert TOKEN not in web + worker
    entries = [json.loads(line) for line in (web + worker).splitlines() if line.strip()]
    assert all(set(e) >= {"time", "level", "logger", "process", "message"} for e in entries)
    loggers = {e["logger"] for e in entries}
    assert {"uvicorn.access", "uvicorn.error", "dramatiq.MainProcess", "wetbot_rewards.worker"} <= loggers
    access = [e["message"] for e in entries if e["logger"] == "uvicorn.access"]
    assert any("/healthz?token=[redacted]" in message for message in access), access


def test_the_worker_health_check_sees_a_running_worker(
    prefix: str,
    sim: WetbotSimulator,
    rewards_file: Path,
    procs: Processes,  # noqa: F811
) -> None:
    env = service_env(prefix, sim, rewards_file)
    check = [sys.executable, "-m", "worker.healthcheck"]
    before = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert (before.returncode, before.stderr.strip()) == (1, "unhealthy: no worker heartbeat in the last 120 s")
    procs.start("worker", procfile_command("worker"), env)
    wait_for(lambda: "ready for action" in procs.log("worker"), timeout_s=30, interval_s=0.2)

    def healthy() -> bool:
        done = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
        return done.returncode == 0 and done.stdout.startswith("healthy: a worker stamped its heartbeat")

    wait_for(healthy, timeout_s=30, interval_s=0.5)
    down = subprocess.run(
        check,
        cwd=ROOT,
        env={**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert down.returncode == 1 and "unhealthy: cannot reach Redis at redis://127.0.0.1:" in down.stderr
