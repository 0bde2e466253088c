"""An operator's repeat of an action is told from the action's own record in the history, not its text."""

from __future__ import annotations

import pytest

from admin import grant_actions
from admin.grant_actions import ActionRefused, Decision, OperatorAction
from tests.conftest import GUILD, USER
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger


def grant_in(ledger: Ledger, key: str, state: GrantState) -> str:
    new = NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key=f"actions:{key}")
    grant_id = ledger.create(new).grant.id
    assert ledger.transition(grant_id, GrantState.SENDING, "test: sent")
    assert ledger.transition(grant_id, state, "test: ended")
    return grant_id


def test_a_replay_is_recorded_as_one_and_its_repeat_says_it_was_done(ledger: Ledger) -> None:
    grant_id = grant_in(ledger, "replay", GrantState.DEAD)
    version = len(ledger.history(grant_id))
    grant_actions.replay(ledger, grant_id, version=version)
    last = ledger.history(grant_id)[-1]
    assert (last.action, last.reason) == (OperatorAction.REPLAY, "replayed by an operator")
    with pytest.raises(ActionRefused, match="was replayed already"):
        grant_actions.replay(ledger, grant_id, version=version)


def test_a_resolve_is_recorded_as_one_and_its_repeat_says_it_was_done(ledger: Ledger) -> None:
    grant_id = grant_in(ledger, "resolve", GrantState.UNKNOWN)
    version = len(ledger.history(grant_id))
    grant_actions.resolve(ledger, grant_id, Decision.RESEND, version=version)
    assert ledger.history(grant_id)[-1].action == OperatorAction.RESOLVE
    with pytest.raises(ActionRefused, match="was resolved already"):
        grant_actions.resolve(ledger, grant_id, Decision.RESEND, version=version)


def test_a_step_that_only_reads_like_an_operators_is_not_taken_for_one(ledger: Ledger) -> None:
    replayed = grant_in(ledger, "reads-replayed", GrantState.DEAD)
    assert ledger.transition(replayed, GrantState.QUEUED, "replayed by an operator (another tool)")
    with pytest.raises(ActionRefused, match=r"is queued, not dead: nothing replayed$"):
        grant_actions.replay(ledger, replayed)
    resolved = grant_in(ledger, "reads-resolved", GrantState.UNKNOWN)
    assert ledger.transition(resolved, GrantState.DELIVERED, "resolved by an operator: applied (late answer)")
    with pytest.raises(ActionRefused, match=r"only grants in state unknown can be resolved$"):
        grant_actions.resolve(ledger, resolved, Decision.DELIVERED)
