"""Short chaos scenarios: the Procfile's processes, a private Redis, the simulator, and faults.

Each test runs one scenario from ``devtools/chaos/scenarios.py`` with a dozen grants and the fast rate
window, under each policy of ``POLICIES``, and asserts the targets: 0 lost, 0 doubled, 0 stranded,
0 x 429, the ledger agreeing with WetBot, and ``unknown`` only under ``hold`` (under ``verify`` only for
requests sent without a baseline; in the scenarios where the world moves, under both) and only as many as
the injected faults can explain. Run them alone with ``pytest -m chaos -s`` (``-s`` prints each result row);
the long versions are ``bench/chaos.py``; RELIABILITY.md has the table.

A scenario's runs under the different policies are independent clusters (own Redis, simulator, ports)
that spend most of their time waiting (heartbeats, rate windows, deadlines), so the first test of a
scenario runs all of ``POLICIES`` at once and the others read their result: the wall time of a
scenario is that of its slowest policy, not the sum.
"""

from __future__ import annotations

import shutil

import pytest

from tests.chaos.conftest import POLICIES, Runs, check

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for a private Redis"),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_every_delivery_repeated_and_concurrent(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("repeat", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_5xx_resets_429_bursts_and_stalls_before_applying(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("faults-before", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_5xx_slow_answers_and_timeouts_after_applying(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("faults-after", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_a_proxy_answering_html_200s(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("html-200", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_workers_sigkilled_every_few_seconds(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("sigkill", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_double_sigterm_mid_request(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("double-sigterm", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_redis_killed_and_restarted_mid_drain(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("redis-restart", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_redis_paused(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("redis-pause", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_a_silently_cut_broker_connection(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("broker-cut", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_clock_skew_between_two_worker_hosts(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("clock-skew", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_the_cli_killed_mid_replay(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("cli-replay-kill", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_members_items_change_outside_the_service(policy: str, scenario_runs: Runs) -> None:
    """A member who already holds or owes the granted amount, trading meanwhile, is neither
    doubled nor recorded delivered without the grant being applied; ``unknown`` is counted."""
    check(scenario_runs("outside-activity", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_profiles_in_another_shape(policy: str, scenario_runs: Runs) -> None:
    """A profile not in the documented shape never reads as "no entry" (no grant sent twice)."""
    check(scenario_runs("profile-drift", policy))
