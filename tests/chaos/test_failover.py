"""The Sentinel failover scenario: no grant lost or doubled across failovers.

``devtools/chaos/scenarios.py``'s ``failover`` on a Sentinel group of the harness's own (a primary, a
replica, one sentinel, all Debian's ``redis-server``): grants trickle in through the web process while
``SENTINEL FAILOVER`` promotes the replica under load (the old primary keeps taking writes on the
connections it has until the sentinel reconfigures it, ~10 s), then the new primary is SIGKILLed and
comes back later as a replica. The targets are the chaos suite's: 0 lost, 0 doubled, 0 stranded, the
ledger agreeing with WetBot. A file of its own, so ``make test`` runs it beside the other chaos files.
"""

from __future__ import annotations

import shutil

import pytest

from tests.chaos.conftest import POLICIES, Runs, check

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for a private Sentinel group"),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_sentinel_failovers_mid_drain(policy: str, scenario_runs: Runs) -> None:
    check(scenario_runs("failover", policy))
