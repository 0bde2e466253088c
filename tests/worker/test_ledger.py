"""Ledger state changes that are not driven by the worker."""

from __future__ import annotations

import pytest

from tests.conftest import GUILD, USER
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger


def _grant(ledger: Ledger, key: str) -> str:
    return ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key=key)).grant.id


@pytest.mark.parametrize("state", [GrantState.QUEUED, GrantState.RETRYING, GrantState.PARKED])
def test_a_grant_not_being_sent_can_be_cancelled_once(ledger: Ledger, state: GrantState) -> None:
    grant_id = _grant(ledger, f"k-{state}")
    assert ledger.transition(grant_id, state, "arranged")
    assert ledger.cancel(grant_id, "taken back before delivery")
    assert not ledger.cancel(grant_id, "again")
    grant = ledger.get(grant_id)
    assert grant is not None and grant.state == GrantState.CANCELLED
    assert [t.to_state for t in ledger.history(grant_id)][-1] == "cancelled"
    assert [g.id for g in ledger.list_grants(GrantState.CANCELLED)] == [grant_id]


@pytest.mark.parametrize("state", [GrantState.SENDING, GrantState.DELIVERED, GrantState.DEAD, GrantState.UNKNOWN])
def test_a_grant_sent_or_final_is_not_cancelled(ledger: Ledger, state: GrantState) -> None:
    grant_id = _grant(ledger, f"k-{state}")
    assert ledger.transition(grant_id, state, "arranged")
    assert not ledger.cancel(grant_id, "too late")
    assert ledger.get(grant_id).state == state  # type: ignore[union-attr]
