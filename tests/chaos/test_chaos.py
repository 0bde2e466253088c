"""Short chaos scenarios (issue 8): the Procfile's processes, a private Redis, the simulator, and faults.

Each test runs one scenario from ``tests/chaos/scenarios.py`` with a dozen grants and the fast rate
window, under each policy of ``POLICIES``, and asserts the targets: 0 lost, 0 doubled, 0 stranded,
0 x 429, the ledger agreeing with WetBot, and ``unknown`` only under ``hold`` and only as many as the
injected faults can explain. Run them alone with ``pytest -m chaos -s`` (``-s`` prints each result row);
the long versions are ``bench/chaos.py``; RELIABILITY.md has the table.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.chaos.harness import TABLE_HEADER, Result, table_row
from tests.chaos.scenarios import run_scenario

#: The ambiguous-outcome policies every scenario runs under.
POLICIES = ("verify", "hold")

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for a private Redis"),
]


def check(result: Result) -> None:
    print(f"\n{TABLE_HEADER}\n{table_row(result)}\n{result.notes}")
    problems = result.problems()
    assert not problems, f"{result.scenario} under {result.policy}: {problems}; notes: {result.notes}"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_delivery_repeated_and_concurrent(policy: str, tmp_path: Path) -> None:
    check(run_scenario("repeat", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_5xx_resets_429_bursts_and_stalls_before_applying(policy: str, tmp_path: Path) -> None:
    check(run_scenario("faults-before", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_5xx_slow_answers_and_timeouts_after_applying(policy: str, tmp_path: Path) -> None:
    check(run_scenario("faults-after", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_a_proxy_answering_html_200s(policy: str, tmp_path: Path) -> None:
    check(run_scenario("html-200", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_workers_sigkilled_every_few_seconds(policy: str, tmp_path: Path) -> None:
    check(run_scenario("sigkill", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_double_sigterm_mid_request(policy: str, tmp_path: Path) -> None:
    check(run_scenario("double-sigterm", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_redis_killed_and_restarted_mid_drain(policy: str, tmp_path: Path) -> None:
    check(run_scenario("redis-restart", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_redis_paused(policy: str, tmp_path: Path) -> None:
    check(run_scenario("redis-pause", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_a_silently_cut_broker_connection(policy: str, tmp_path: Path) -> None:
    check(run_scenario("broker-cut", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_clock_skew_between_two_worker_hosts(policy: str, tmp_path: Path) -> None:
    check(run_scenario("clock-skew", policy, tmp_path))


@pytest.mark.parametrize("policy", POLICIES)
def test_the_cli_killed_mid_replay(policy: str, tmp_path: Path) -> None:
    check(run_scenario("cli-replay-kill", policy, tmp_path))
