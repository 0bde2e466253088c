"""While a user's verify hold lasts, the user's other grants wait for the holder's next look (its read-back,
which may back off for minutes or wait out a 401/403 pause), instead of being dispatched and claimed
every ``Timings.busy_retry_s``."""

from __future__ import annotations

import time

from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, DelivererFactory, SettingsFactory
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger
from worker.timings import Timings


def test_grants_behind_a_long_verify_hold_wait_for_its_next_look(
    make_settings: SettingsFactory, make_deliverer: DelivererFactory, ledger: Ledger, sim: WetbotSimulator
) -> None:
    # The read-back will fail and back off for a long time (here: 60 s+).
    # A busy user's grants are looked at again every 0.25 s: 8 looks each in 2 s if the hold did not count.
    timings = Timings(busy_retry_s=0.25)
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5, wetbot_retry_backoff_s=60.0), timings)

    def new(key: str) -> str:
        return ledger.create(
            NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{key}")
        ).grant.id

    x = new("x")
    sim.inject("500_after", method="POST")
    deliverer.deliver(x)  # its baseline read, then the request (a 500 after applying)
    sim.inject("500_before", method="GET")  # for the read-back
    waiting = [new(f"w{i}") for i in range(5)]
    runs = 0
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        for gid, token in deliverer.schedule.dispatch_batch().dispatched:
            runs += gid in waiting
            deliverer.deliver(gid, token)
        time.sleep(0.05)
    held = ledger.get(x)
    assert held is not None and held.verify_pending  # still held: its read-back backs off
    assert all(ledger.get(w).state == GrantState.QUEUED for w in waiting)  # type: ignore[union-attr]
    # 5 grants that cannot move for another minute: a couple of looks each would do, not one every 0.25 s.
    assert runs <= 10, f"{runs} dispatches+claims of grants that could not move in 2 s"
