"""An operator's cancel racing a real worker that is picking the same grant up.

Whatever the interleaving, a grant the cancel reports cancelled never reaches WetBot, and one that reached
WetBot was refused by the cancel (the worker's send and the cancel are guarded atomic steps of the ledger).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from admin import grant_actions
from config.settings import Settings
from producers.submit import submit_grant
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, RunningWorker, SettingsFactory, wait_for
from tests.worker.index_check import index_problems
from worker.grant import FINAL_STATES, GrantItem, GrantState, NewGrant
from worker.ledger import Ledger


def test_a_cancel_racing_the_worker_either_wins_and_nothing_is_sent_or_is_refused(
    make_settings: SettingsFactory, ledger: Ledger, sim: WetbotSimulator, workers: Callable[..., RunningWorker]
) -> None:
    sim.set_limit(1000, 1.0)
    settings: Settings = make_settings(wetbot_rate_limit="1000/1s")
    workers(settings, threads=4)
    warm = submit_grant(
        ledger, NewGrant(GUILD, "899999999999999999", (GrantItem("gem", 1),), source="api", idempotency_key="warm-up")
    ).grant.id
    wait_for(lambda: ledger.get(warm).state == GrantState.DELIVERED, timeout_s=10)  # type: ignore[union-attr]
    rng = random.Random(7)
    cancelled: dict[str, bool] = {}
    users: dict[str, str] = {}
    for n in range(40):
        user = str(900000000000000000 + n)
        new = NewGrant(GUILD, user, (GrantItem("gem", 1),), source="api", idempotency_key=f"race:{n}")
        grant_id = submit_grant(ledger, new).grant.id  # the worker is woken at once
        users[grant_id] = user
        time.sleep(rng.choice([0.0, 0.0, rng.uniform(0, 0.03)]))  # land anywhere in the worker's pick-up
        try:
            cancelled[grant_id] = grant_actions.cancel(ledger, grant_id, "race").done
        except grant_actions.ActionRefused:
            cancelled[grant_id] = False

    def settled() -> bool:
        return all(ledger.get(g).state in FINAL_STATES for g in users)  # type: ignore[union-attr]

    wait_for(settled, timeout_s=20)
    for grant_id, user in users.items():
        state = ledger.get(grant_id).state  # type: ignore[union-attr]
        sent = sim.inventory(GUILD, user)
        if cancelled[grant_id]:
            assert state == GrantState.CANCELLED and sent == {}, grant_id
        else:
            assert state == GrantState.DELIVERED and sent == {"gem": 1}, grant_id
    assert 0 < sum(cancelled.values()) < len(cancelled), "the race went both ways"
    assert index_problems(ledger.redis, ledger.keys) == []
