"""Short chaos scenarios, faults in the service's processes.

The faults: workers SIGKILLed, or SIGTERMed twice mid-request; the CLI killed mid-replay; clocks skewed
between worker hosts.

Each test runs one scenario from ``devtools/chaos/scenarios.py`` with a dozen grants and the fast rate
window, under each policy of ``POLICIES``, and asserts the targets (``tests/chaos/conftest.py``). Run them
alone with ``pytest -m chaos -s`` (``-s`` prints each result row); the long versions are ``bench/chaos_long.py``;
RELIABILITY.md has the table. One file per fault family, so ``--dist loadfile`` spreads them over workers.
"""

from __future__ import annotations

import pytest

from tests.chaos.conftest import CHAOS_MARKS, POLICIES, Runs, check

pytestmark = CHAOS_MARKS


@pytest.mark.parametrize("policy", POLICIES)
def test_workers_sigkilled_every_few_seconds(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("sigkill", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_double_sigterm_mid_request(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("double-sigterm", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_the_cli_killed_mid_replay(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("cli-replay-kill", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_clock_skew_between_two_worker_hosts(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("clock-skew", policy))
