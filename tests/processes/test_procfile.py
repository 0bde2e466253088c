"""The Procfile's real processes: start-up checks, a full run over HTTP, and a SIGKILLed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import requests
from redis import Redis

from devtools.chaos.servers import free_port
from producers.submit import submit_grant
from simulator.wetbot import WetbotSimulator
from tests.conftest import API_KEY, GUILD, OTHER_USER, TEST_REDIS_URL, TOKEN, USER, wait_for
from worker.grant import Grant, GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def service_env(prefix: str, sim: WetbotSimulator, rewards_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WETBOT_", "REDIS_", "SENTRY_", "GRANTS_"))}
    env.update(
        REDIS_URL=TEST_REDIS_URL,
        REDIS_KEY_PREFIX=prefix,
        WETBOT_API_URL=sim.url,
        WETBOT_API_KEY=API_KEY,
        WETBOT_TIMEOUT_S="3",
        WETBOT_RETRY_BACKOFF_S="0.2",
        GRANTS_API_TOKEN=TOKEN,
        REWARDS_FILE=str(rewards_file),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Processes:
    """Starts commands in their own process groups; stops (or kills) them at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self._tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self._tmp / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop_all()


def submit(prefix: str, grants: list[NewGrant]) -> list[Grant]:
    """Queue grants the way a producer does (ledger entry and queue message in one step)."""
    redis = Redis.from_url(TEST_REDIS_URL)
    try:
        return [submit_grant(Ledger(redis, Keys(prefix)), new).grant for new in grants]
    finally:
        redis.close()


def procfile_command(kind: str, port: int | None = None) -> list[str]:
    """The Procfile's command for ``kind``, as a shell would run it (``$PORT`` filled in)."""
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            return ["sh", "-c", "exec " + command.strip().replace("${PORT:-8000}", str(port or 8000))]
    raise AssertionError(f"no {kind} process in the Procfile")


@pytest.mark.parametrize("kind", ["web", "worker"])
def test_a_bad_setting_stops_start_up_with_one_clear_line(
    kind: str, prefix: str, sim: WetbotSimulator, rewards_file: Path, procs: Processes
) -> None:
    env = service_env(prefix, sim, rewards_file, WETBOT_RATE_LIMIT="ten-per-minute", AMBIGUOUS_POLICY="maybe")
    proc = procs.start(kind, procfile_command(kind, free_port()), env)
    assert proc.wait(timeout=30) != 0
    lines = [line for line in procs.log(kind).splitlines() if "configuration error" in line]
    assert lines == [
        "wetbot-rewards: configuration error: WETBOT_RATE_LIMIT: expected N/<seconds>s such as 10/60s; "
        "AMBIGUOUS_POLICY: must be one of verify, hold, retry"
    ]
    assert "ten-per-minute" not in procs.log(kind)


def test_procfile_processes_deliver_a_posted_grant(
    prefix: str, sim: WetbotSimulator, rewards_file: Path, procs: Processes
) -> None:
    port = free_port()
    env = service_env(prefix, sim, rewards_file)
    procs.start("web", procfile_command("web", port), env)
    procs.start("worker", procfile_command("worker"), env)
    base = f"http://127.0.0.1:{port}"

    def web_up() -> bool:
        try:
            return requests.get(f"{base}/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(web_up, timeout_s=20, interval_s=0.2)
    body = {"guild_id": GUILD, "user_id": USER, "items": [{"item_id": "gem", "amount": 3}], "idempotency_key": "p-1"}
    response = requests.post(f"{base}/grants", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert response.status_code == 202, response.text
    grant_id = response.json()["id"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    wait_for(
        lambda: requests.get(f"{base}/grants/{grant_id}", headers=auth, timeout=5).json()["state"] == "delivered",
        timeout_s=20,
    )
    assert sim.inventory(GUILD, USER) == {"gem": 3}
    assert API_KEY not in procs.log("web") + procs.log("worker")
    assert TOKEN not in procs.log("web") + procs.log("worker")


def test_a_sigkilled_workers_grant_is_delivered_by_another_worker_within_30s(
    prefix: str, sim: WetbotSimulator, rewards_file: Path, procs: Processes
) -> None:
    redis = Redis.from_url(TEST_REDIS_URL)
    keys = Keys(prefix)
    ledger = Ledger(redis, keys)
    env = service_env(prefix, sim, rewards_file)
    # The first request for USER (its POST, after the baseline read) hangs at WetBot; it is applied only if the
    # caller is still there.
    sim.inject("stall_before", user_id=USER, delay_s=60, method="POST")
    first = procs.start("worker-a", procfile_command("worker"), env)
    grants = submit(
        prefix,
        [
            NewGrant(GUILD, u, (GrantItem("gem", 1),), source="test", idempotency_key=f"t:kill-{u}")
            for u in (USER, OTHER_USER)
        ],
    )

    stuck, done = grants

    # Kill only once OTHER_USER's grant is delivered, so only USER's request is cut. It is stalled, and
    # the simulator applies a stalled request only if its caller is still there: under
    # AMBIGUOUS_POLICY=verify (the default) worker-b reads the profile back, finds it not applied (against
    # the baseline worker-a read right before the request: a quiet key has a spare slot) and sends it again,
    # its only application.
    def stuck_and_done() -> bool:
        holder = cast(bytes | None, redis.get(keys.lease(GUILD, USER)))
        delivered = ledger.get(done.id).state == GrantState.DELIVERED  # type: ignore[union-attr]
        return holder is not None and holder.decode().startswith(f"{stuck.id}:") and delivered

    wait_for(stuck_and_done, timeout_s=20)
    assert ledger.get(stuck.id).state == GrantState.SENDING  # type: ignore[union-attr]
    os.killpg(first.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait(timeout=10)

    procs.start("worker-b", procfile_command("worker"), env)
    took = wait_for(lambda: ledger.get(stuck.id).state == GrantState.DELIVERED, timeout_s=30, interval_s=0.1)  # type: ignore[union-attr]
    assert time.monotonic() - killed_at < 30
    print(f"redelivered {took:.1f}s after SIGKILL")
    assert sorted(c.user_id for c in sim.applied()) == sorted([USER, OTHER_USER]), "each grant applied exactly once"
    assert ledger.get(done.id).state == GrantState.DELIVERED  # type: ignore[union-attr]
    history = [t.reason for t in ledger.history(stuck.id)]
    assert any("worker stopped while sending" in reason for reason in history)
    redis.close()


def test_a_dead_grant_sends_one_sentry_event_without_secrets(
    prefix: str, sim: WetbotSimulator, rewards_file: Path, procs: Processes
) -> None:
    from tests.sentry_sink import SentrySink

    sim.set_items(GUILD, ["gem"])
    redis = Redis.from_url(TEST_REDIS_URL)
    ledger = Ledger(redis, Keys(prefix))
    with SentrySink() as sink:
        env = service_env(prefix, sim, rewards_file, SENTRY_DSN=sink.dsn, WETBOT_MAX_ATTEMPTS="2")
        procs.start("worker", procfile_command("worker"), env)
        bad = NewGrant(GUILD, USER, (GrantItem("no-such-item", 1),), source="test", idempotency_key="test:bad")
        flaky = NewGrant(GUILD, OTHER_USER, (GrantItem("gem", 1),), source="test", idempotency_key="test:flaky")
        sim.inject("500_before", user_id=OTHER_USER, method="POST")  # one failed attempt, then delivered: no event
        bad_id, flaky_id = (grant.id for grant in submit(prefix, [bad, flaky]))
        wait_for(lambda: ledger.get(bad_id).state == GrantState.DEAD, timeout_s=20)  # type: ignore[union-attr]
        wait_for(lambda: ledger.get(flaky_id).state == GrantState.DELIVERED, timeout_s=20)  # type: ignore[union-attr]
        wait_for(lambda: any(e["tags"].get("kind") == "grant_final" for e in sink.events), timeout_s=10)
        time.sleep(1.5)  # anything else would have arrived by now

        # The test Redis has no persistence, so the worker also reports that once at start (worker.redis_checks).
        events = [e for e in sink.events if e["tags"].get("kind") != "redis_config"]
        assert len(events) == 1, [e.get("message") for e in events]
        assert "Item not found" in json.dumps(events[0])
        assert events[0]["tags"]["state"] == "dead"
        raw = sink.raw()
        for secret in (API_KEY, TOKEN):
            assert secret not in raw
    redis.close()
