"""Short chaos scenarios, faults in WetBot's answers.

The faults: repeats, 5xx, resets, 429 bursts, stalls, slow answers, timeouts, HTML 200s, profiles in
another shape, members' items changing outside the service.

Each test runs one scenario of ``devtools/chaos/scenarios.py`` under every policy (``tests/chaos/conftest.py``).
"""

from __future__ import annotations

import pytest

from tests.chaos.conftest import CHAOS_MARKS, POLICIES, Runs, check

pytestmark = CHAOS_MARKS


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
def test_members_items_change_outside_the_service(policy: str, scenario_runs: Runs) -> None:
    """A member who already holds or owes the granted amount, trading meanwhile, is neither
    doubled nor recorded delivered without the grant being applied; ``unknown`` is counted."""
    check(scenario_runs("outside-activity", policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_profiles_in_another_shape(policy: str, scenario_runs: Runs) -> None:
    """A profile not in the documented shape never reads as "no entry" (no grant sent twice)."""
    check(scenario_runs("profile-drift", policy))
