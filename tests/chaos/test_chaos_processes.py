"""Short chaos scenarios, faults in the service's processes.

The faults: workers SIGKILLed, or SIGTERMed twice mid-request; the CLI killed mid-replay; clocks skewed
between worker hosts.

Each test runs one scenario of ``devtools/chaos/scenarios.py`` under every policy (``tests/chaos/conftest.py``).
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
