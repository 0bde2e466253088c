"""Short chaos scenarios, faults in Redis: killed and restarted mid-drain, paused, the broker connection silently cut.

Each test runs one scenario of ``devtools/chaos/scenarios.py`` under every policy (``tests/chaos/conftest.py``).
"""

from __future__ import annotations

import pytest

from tests.chaos.conftest import CHAOS_MARKS, POLICIES, Runs, check

pytestmark = CHAOS_MARKS


@pytest.mark.parametrize("policy", POLICIES)
def test_redis_killed_and_restarted_mid_drain(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("redis-restart", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_redis_paused(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("redis-pause", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_a_silently_cut_broker_connection(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("broker-cut", policy))
