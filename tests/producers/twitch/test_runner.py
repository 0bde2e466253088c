"""The Twitch process: one runner at a time (a Redis lease), its passes, gaps, idling without a channel, and
``wetbot-rewards twitch run`` as a process against the Twitch simulator, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from producers.twitch.gaps import missed_periods
from producers.twitch.oauth import OAuthClient
from producers.twitch.runner import PeriodicTask, RunnerLease, TwitchRunner
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from tests.conftest import API_KEY, GUILD, TEST_REDIS_URL, wait_for
from tests.producers.twitch.eventsub_rig import LoopThread, WiredTwitch
from tests.producers.twitch.test_tokens import KEY, connect, make_oauth
from worker.keys import Keys

WAIT_S = 20.0
#: SIGTERM must end the process within this many seconds: inside a supervisor's grace before it kills (docker's
#: 10 s). Idle it takes about 0.1 s; 5 s was once exceeded (5.9 s) with one core hogged and the load average
#: near 12, so the bound leaves room for a starved machine without hiding a stop that waits on something.
STOP_WITHIN_S = 8.0
RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "cheer"
event = "channel.cheer"
per_bits = 100
items = [{{ id = "gem", amount = 1 }}]
"""


class Counter:
    """A pass that counts its runs (runs happen in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs = 0

    def __call__(self) -> None:
        with self._lock:
            self.runs += 1


def make_runner(
    redis: Redis, keys: Keys, counter: Counter, *, ready: Callable[[], str | None] = lambda: None
) -> TwitchRunner:
    task = PeriodicTask("count", 0.1, counter)
    return TwitchRunner(redis, keys, tasks=[task], ready=ready, lease_s=1.0, idle_check_s=0.2)


def serving(runner: TwitchRunner) -> LoopThread:
    return LoopThread(runner.serve)


def test_two_runners_one_works_and_the_other_takes_over_when_it_stops(redis: Redis, keys: Keys) -> None:
    first_count, second_count = Counter(), Counter()
    first, second = make_runner(redis, keys, first_count), make_runner(redis, keys, second_count)
    first_thread = serving(first)
    wait_for(lambda: first_count.runs > 0, timeout_s=WAIT_S)
    second_thread = serving(second)
    try:
        time.sleep(2.5)  # more than the lease: the first renews it, the second keeps waiting
        assert first.leading and not second.leading
        assert second_count.runs == 0
        stopped_in = first_thread.stop()
        assert stopped_in < STOP_WITHIN_S
        taken_over = wait_for(lambda: second_count.runs > 0, timeout_s=WAIT_S)
        assert taken_over < 2.0, "the lease was released: no need to wait for it to run out"
        assert second.leading and not first.leading
    finally:
        second_thread.stop()
    assert not redis.exists(keys.twitch_runner_lease()), "released on stop"


def test_a_lease_that_is_not_renewed_runs_out_for_the_next_runner(redis: Redis, keys: Keys) -> None:
    dead, waiting = RunnerLease(redis, keys, 0.5), RunnerLease(redis, keys, 0.5)
    assert dead.acquire()
    assert not waiting.acquire()
    wait_for(waiting.acquire, timeout_s=WAIT_S)  # the holder died without releasing it
    assert not dead.renew(), "a lease taken over is not the old holder's any more"
    dead.release()
    assert redis.exists(keys.twitch_runner_lease()), "nor may it release the new holder's"


def test_a_gap_runs_catch_up_soon_and_records_the_missed_period(redis: Redis, keys: Keys) -> None:
    catch_up = Counter()
    runner = TwitchRunner(
        redis, keys, tasks=[PeriodicTask("catch-up", 3600.0, catch_up, after_gap=True)], ready=lambda: None
    )
    thread = serving(runner)
    try:
        wait_for(lambda: catch_up.runs == 1, timeout_s=WAIT_S)  # at start
        since = time.time() - 30
        runner.gap("the socket dropped", since)
        wait_for(lambda: catch_up.runs == 2, timeout_s=WAIT_S)
    finally:
        thread.stop()
    [period] = missed_periods(redis, keys)
    assert (period.reason, period.since) == ("the socket dropped", since)
    assert since + 30 <= period.until <= time.time()


def test_without_a_connected_channel_it_idles_says_so_once_and_starts_when_connected(
    redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wetbot_rewards.twitch")
    connected = threading.Event()
    counter = Counter()

    def ready() -> str | None:
        return None if connected.is_set() else "no channel is connected (run wetbot-rewards twitch connect)"

    thread = serving(make_runner(redis, keys, counter, ready=ready))
    try:
        time.sleep(1.5)  # several looks at ready()
        assert counter.runs == 0
        said = [r for r in caplog.records if "no channel is connected" in r.getMessage()]
        assert len(said) == 1
        connected.set()
        wait_for(lambda: counter.runs > 0, timeout_s=WAIT_S)
    finally:
        thread.stop()


def test_a_failing_pass_does_not_stop_the_runner(redis: Redis, keys: Keys) -> None:
    counter = Counter()

    def broken() -> None:
        raise RuntimeError("a bug")

    tasks = [PeriodicTask("broken", 0.1, broken), PeriodicTask("count", 0.1, counter)]
    thread = serving(TwitchRunner(redis, keys, tasks=tasks, ready=lambda: None))
    try:
        wait_for(lambda: counter.runs >= 3, timeout_s=WAIT_S)
    finally:
        thread.stop()


def test_async_passes_are_awaited_on_the_runners_loop(redis: Redis, keys: Keys) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def on_the_loop() -> None:
        loops.append(asyncio.get_running_loop())

    thread = serving(TwitchRunner(redis, keys, tasks=[PeriodicTask("async", 0.1, on_the_loop)], ready=lambda: None))
    try:
        wait_for(lambda: len(loops) >= 2, timeout_s=WAIT_S)
        assert loops[0] is thread.loop
    finally:
        thread.stop()


# -- wetbot-rewards twitch run ------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, prefix: str, wired: WiredTwitch) -> dict[str, str]:
    rules = tmp_path / "rewards.toml"
    rules.write_text(RULES, encoding="utf-8")
    return {
        **os.environ,
        "TWITCH_CLIENT_ID": DEFAULT_CLIENT_ID,
        "TWITCH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "TWITCH_AUTH_URL": wired.sim.auth_url,
        "TWITCH_API_URL": wired.sim.api_url,
        "TWITCH_EVENTSUB_WS_URL": wired.ws.url,
        "TWITCH_TRANSPORT": "websocket",
        "TOKEN_ENCRYPTION_KEY": KEY.get_secret_value(),
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "REWARDS_FILE": str(rules),
        "WETBOT_API_KEY": API_KEY,
        "LOG_FORMAT": "text",
    }


class RunProcess:
    """``wetbot-rewards twitch run`` in its own process, its log lines collected as they come."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wetbot_rewards.cli", "twitch", "run"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> int:
        return sum(1 for line in list(self.lines) if text in line)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(5)
        return status, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], RunProcess]]:
    started: list[RunProcess] = []

    def start() -> RunProcess:
        started.append(RunProcess(env, tmp_path))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def test_twitch_run_idles_without_a_channel_and_stops_on_sigterm(
    run: Callable[[], RunProcess], redis: Redis, keys: Keys
) -> None:
    process = run()
    wait_for(lambda: process.said("no channel is connected") == 1, timeout_s=WAIT_S)
    time.sleep(1.0)
    assert process.process.poll() is None, f"a Procfile process must not exit by itself: {process.lines}"
    status, took = process.terminate()
    assert status == 0, process.lines
    assert took < STOP_WITHIN_S
    assert process.said("no channel is connected") == 1, "said once"
    assert not redis.exists(keys.twitch_runner_lease())


def test_twitch_run_subscribes_over_the_websocket_and_stops_on_sigterm(
    run: Callable[[], RunProcess], wired: WiredTwitch, redis: Redis, keys: Keys
) -> None:
    oauth: OAuthClient = make_oauth(wired.sim)
    try:
        connect(TokenVault(redis, keys, KEY, oauth), oauth)
    finally:
        oauth.close()
    process = run()

    def subscribed() -> bool:
        return any(wired.ws.subscriptions(session) for session in wired.ws.sessions())

    wait_for(subscribed, timeout_s=WAIT_S)
    [session] = wired.ws.sessions()
    status, took = process.terminate()
    assert status == 0, process.lines
    assert took < STOP_WITHIN_S, f"took {took:.1f} s"
    assert wired.ws.session_status(session) is not None, "the socket was closed"
    assert not redis.exists(keys.twitch_runner_lease())
    assert not any("Traceback" in line for line in process.lines), process.lines
