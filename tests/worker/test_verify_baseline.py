"""A read-back is judged only against the baseline read for its own request, while nothing newer is known.

The baseline is the member's profile read right before the request (``Deliverer._read_baseline``), never
the profile recorded with an earlier outcome: an earlier grant left ``unknown`` (applied or not) is in the
next request's baseline as it really is. And once a newer profile has been recorded since a request
started (another grant delivered meanwhile, which moves the member's snapshot ``seq``), that request's
read-back cannot decide and the grant is held ``unknown``, instead of its baseline from before the other
grant making a grant that was never applied look applied (a lost grant) when rewards are identical.
"""

from __future__ import annotations

from producers.submit import requeue_grant
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, DelivererFactory, ScheduleDriver, SettingsFactory
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger


def grant(ledger: Ledger, key: str, amount: float = 2) -> str:
    new = NewGrant(GUILD, USER, (GrantItem("gem", amount),), source="test", idempotency_key=f"t:{key}")
    return ledger.create(new).grant.id


def delivered_total(ledger: Ledger, *ids: str) -> float:
    total = 0.0
    for grant_id in ids:
        g = ledger.get(grant_id)
        assert g is not None
        if g.state == GrantState.DELIVERED:
            total += sum(i.amount for i in g.items)
    return total


def test_after_an_unknown_outcome_the_next_read_back_cannot_use_the_old_snapshot(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """Default policy (verify). X: POST applied but answered 500, its read-back fails until it is out of
    attempts -> unknown (correct). Y (same items, same user): POST not applied (500_before). Judged against
    the profile recorded before X, the read-back showed X's gems -> "verified by read-back: applied" ->
    delivered: WetBot held 2 gems, the ledger said Y delivered (and X, once resolved, too): one grant lost.
    Y's baseline is read right before Y's request, X's gems in it: the read-back shows "not applied", Y is
    sent again, and WetBot holds both grants."""
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5, wetbot_max_attempts=2))
    x = grant(ledger, "x")
    sim.inject("500_after", method="POST")
    deliverer.deliver(x)  # X's baseline read, then its request
    sim.inject("500_before", method="GET")  # X's read-back fails: out of attempts
    driver.run(deliverer)
    assert ledger.get(x).state == GrantState.UNKNOWN  # type: ignore[union-attr]
    assert "could not read the profile back" in ledger.get(x).last_error  # type: ignore[union-attr]
    assert sim.inventory(GUILD, USER) == {"gem": 2.0}  # X was applied

    y = grant(ledger, "y")
    sim.inject("500_before", method="POST")  # Y is NOT applied
    deliverer.deliver(y)
    driver.run(deliverer)

    y_state = ledger.get(y).state  # type: ignore[union-attr]
    reasons = [t.reason for t in ledger.history(y)]
    # Y's first request never reached WetBot's inventory: it must not be recorded as delivered on the strength
    # of X's gems. Judged against its own baseline, it is "not applied", sent again and delivered once.
    assert not (y_state == GrantState.DELIVERED and sim.inventory(GUILD, USER) == {"gem": 2.0}), reasons
    assert any("verified by read-back: not applied" in r for r in reasons), reasons
    assert y_state == GrantState.DELIVERED and sim.inventory(GUILD, USER) == {"gem": 4.0}, reasons


def test_a_read_back_after_later_deliveries_does_not_judge_an_old_baseline(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    """X ends unknown without being applied (500_before under hold; under verify: read-backs exhausted).
    Its hold is cleared, so Y (same items) is delivered meanwhile. The operator then runs
    `resolve --verify` on X: its baseline, read right before X's request, is young, but it is from before Y;
    compared against it the read-back sees +2 and would mark X delivered (WetBot holds 2 gems; the ledger
    would say 4 were delivered). Y's delivery moved the recorded profile's ``seq``: the read-back cannot tell."""
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5, ambiguous_policy="hold"))
    x = grant(ledger, "x")
    sim.inject("500_before", method="POST")  # X is NOT applied, but its fate is unknown
    deliverer.deliver(x)
    assert ledger.get(x).state == GrantState.UNKNOWN  # type: ignore[union-attr]

    y = grant(ledger, "y")
    deliverer.deliver(y)
    assert ledger.get(y).state == GrantState.DELIVERED  # type: ignore[union-attr]

    assert requeue_grant(ledger, x, "operator asked for a read-back", expect=GrantState.UNKNOWN, verify=True)
    driver.run(deliverer)

    inventory = sim.inventory(GUILD, USER).get("gem", 0.0)
    assert delivered_total(ledger, x, y) == inventory, (ledger.get(x), [t.reason for t in ledger.history(x)])
    held = ledger.get(x)
    assert held is not None and held.state == GrantState.UNKNOWN
    assert "recorded profile changed since the request" in held.last_error, held.last_error
