"""An answer that comes back after the run's send lease ran out (Redis away longer than the margin, an AOF
reload, a failover) still counts.

Meanwhile another run may have taken the grant for abandoned: under ``hold`` it is held ``unknown``,
under ``verify`` it waits for a read-back. The late 200 is the truth about the last request sent (the
attempt guard says nothing was sent since), so it is recorded as ``delivered`` over that guess. The
outage is modelled by the recording run being late by more than the lease while the other worker runs.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis import Redis

from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, SettingsFactory
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger
from worker.runtime import build_deliverer
from worker.timings import Timings


@pytest.mark.parametrize("policy", ["hold", "verify"])
def test_an_answer_recorded_after_the_lease_ran_out_still_counts(
    policy: str,
    make_settings: SettingsFactory,
    redis: Redis,
    ledger: Ledger,
    sim: WetbotSimulator,
) -> None:
    settings = make_settings(wetbot_timeout_s=0.5, ambiguous_policy=policy)
    timings = Timings(lease_margin_s=0.5)  # the outage only has to outlast the lease: seconds, not the 10 s margin
    zombie, other = (build_deliverer(settings, redis, timings=timings) for _ in range(2))
    grant_id = ledger.create(
        NewGrant(GUILD, USER, (GrantItem("gem", 2),), source="test", idempotency_key="t:x")
    ).grant.id
    real_add = zombie.clients.all()[0].add_items

    def add_then_redis_goes_away(*args: Any, **kwargs: Any) -> Any:
        result = real_add(*args, **kwargs)  # 200 with the profile: applied, answer in hand
        time.sleep(settings.wetbot_timeout_s + timings.lease_margin_s + 1.5)  # Redis unavailable meanwhile
        # Redis answers again: the other worker's reconciler is first.
        for gid, token in other.schedule.dispatch_batch().dispatched:
            other.deliver(gid, token)
        return result

    zombie.clients.all()[0].add_items = add_then_redis_goes_away  # type: ignore[method-assign]
    zombie.deliver(grant_id)
    # (retry: let the resend go out)
    for gid, token in other.schedule.dispatch_batch().dispatched:
        other.deliver(gid, token)
    deadline = time.monotonic() + 20
    while ledger.get(grant_id).state not in (GrantState.DELIVERED, GrantState.UNKNOWN, GrantState.DEAD):  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        for gid, token in other.schedule.dispatch_batch().dispatched:
            other.deliver(gid, token)
        time.sleep(0.2)

    done = ledger.get(grant_id)
    assert done is not None
    history = [t.reason for t in ledger.history(grant_id)]
    assert done.state == GrantState.DELIVERED, history
    assert sim.inventory(GUILD, USER) == {"gem": 2.0}, history
