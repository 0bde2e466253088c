"""A baseline read that outlives the run's user lease (a starved process, a slow connect
plus a slow read: the client's timeout applies to each, so a GET may take 2 x WETBOT_TIMEOUT_S, more than the
lease's timeout + Timings.lease_margin_s)."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, DelivererFactory, ScheduleDriver, SettingsFactory
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.timings import Timings

#: The lease's margin, short: the takeovers these tests wait for are due a lease after the step, not 10 s.
SHORT_LEASES = Timings(lease_margin_s=1.0)


def _grant(ledger: Ledger, key: str, amount: float = 1) -> str:
    new = NewGrant(GUILD, USER, (GrantItem("gem", amount),), source="test", idempotency_key=f"t:{key}")
    return ledger.create(new).grant.id


def test_baseline_read_outliving_the_lease_sends_with_a_stale_baseline_and_records_delivered_never_applied(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    redis: Redis,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run A reads grant 1's baseline (no gem). Its GET outlasts the extended lease; meanwhile run B takes
    the member's lease for grant 2 (1 gem) and delivers it. Before the fix A's GET answer (read before B's
    POST) became the baseline of A's request, the step into sending went through because the lease was
    merely absent, A's POST failed before being applied (500), and the read-back (gem=1 = absent + 1)
    recorded grant 1 delivered: it never was. Now A stops when its lease is gone, and the send step needs
    the run's own lease."""
    settings = make_settings(wetbot_timeout_s=0.3, wetbot_coalesce=False)
    a, b = make_deliverer(settings, SHORT_LEASES), make_deliverer(settings, SHORT_LEASES)
    g1 = _grant(ledger, "one")
    g2 = _grant(ledger, "two")
    client = a.clients.for_guild(GUILD)
    assert client is not None
    real_get = client.get_profile
    calls = {"n": 0}

    def slow_get(guild_id: str, user_id: str) -> Any:
        result = real_get(guild_id, user_id)
        calls["n"] += 1
        if calls["n"] == 1:
            # The GET's answer is late: the run's lease (timeout + margin) ran out meanwhile...
            redis.delete(keys.lease(GUILD, USER))
            # ...and another worker delivered grant 2 of the same member in the meantime.
            b.deliver(g2)
            assert ledger.get(g2).state == GrantState.DELIVERED  # type: ignore[union-attr]
            sim.inject("500_before", method="POST")
        return result

    monkeypatch.setattr(client, "get_profile", slow_get)
    a.deliver(g1)
    monkeypatch.setattr(client, "get_profile", real_get)
    driver.run(a)

    applied = [c for c in sim.applied() if c.user_id == USER]
    delivered = [g for g in (g1, g2) if ledger.get(g).state == GrantState.DELIVERED]  # type: ignore[union-attr]
    # The ledger agrees with WetBot: a grant recorded delivered was applied, once. (Run A, its lease gone,
    # sends nothing; grant 1 goes out later with a baseline of its own.)
    assert len(applied) == len(delivered), ([h.reason for h in ledger.history(g1)], applied)


def test_baseline_read_outliving_the_lease_sends_a_grant_a_takeover_already_sent_doubling_it(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    redis: Redis,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Coalescing on, one grant. Run A's baseline GET outlasts the lease; the reconciler dispatches the grant
    again (its lease is gone) and run B sends it: applied, answered 500, so it waits for a read-back
    (retrying, verify=1). A's GET returns; its step into sending needs only that no *other* run holds the lease
    (B released it) and that the grant is sendable (retrying is): it sends the grant a second time."""
    settings = make_settings(wetbot_timeout_s=0.3)
    a, b = make_deliverer(settings, SHORT_LEASES), make_deliverer(settings, SHORT_LEASES)
    g1 = _grant(ledger, "one")
    client = a.clients.for_guild(GUILD)
    assert client is not None
    real_get = client.get_profile
    calls = {"n": 0}

    def slow_get(guild_id: str, user_id: str) -> Any:
        result = real_get(guild_id, user_id)
        calls["n"] += 1
        if calls["n"] == 1:
            redis.delete(keys.lease(GUILD, USER))  # the lease ran out while the GET was out
            sim.inject("500_after", method="POST")
            b.deliver(g1)  # a new message for the grant, claimed by another worker
            assert ledger.get(g1).state == GrantState.RETRYING  # type: ignore[union-attr]
        return result

    monkeypatch.setattr(client, "get_profile", slow_get)
    a.deliver(g1)
    monkeypatch.setattr(client, "get_profile", real_get)
    driver.run(a)

    applied = [c for c in sim.applied() if c.user_id == USER]
    assert len(applied) == 1, ([h.reason for h in ledger.history(g1)], applied)
