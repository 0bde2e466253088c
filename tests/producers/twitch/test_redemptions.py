"""The fate of a watched redemption: decided from its grants' states in one atomic step, whichever path moved
them, never a refund while a grant may still be (or have been) applied, and a refunded grant never replayed."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from admin.grant_actions import ActionRefused, Decision, replay, resolve
from producers.submit import requeue_grant
from producers.twitch.redemptions import HELIX_BATCH, Fate, RedemptionBook, RedemptionStatus, Told
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

GUILD = "222222222222222222"
BROADCASTER = "12826"
REWARD = "92af127c-7326-4483-a52b-b0da0be61c01"


def new_grant(ledger: Ledger, n: int, *, redemption: str = "r") -> str:
    new = NewGrant(
        guild_id=GUILD,
        user_id=f"3333333333333333{n:02d}",
        items=(GrantItem("chest", 1.0),),
        source="twitch",
        idempotency_key=f"twitch:{redemption}:{n}",
    )
    return ledger.create(new).grant.id


@pytest.fixture
def book(redis: Redis, keys: Keys) -> RedemptionBook:
    return RedemptionBook(redis, keys)


def watch(book: RedemptionBook, rid: str, *grant_ids: str, refund: bool = True) -> RedemptionStatus:
    return book.watch(rid, broadcaster_id=BROADCASTER, reward_id=REWARD, refund=refund, grant_ids=grant_ids)


def test_a_delivered_grant_makes_its_redemption_fulfilled_and_the_call_is_claimed_once(
    ledger: Ledger, book: RedemptionBook
) -> None:
    grant_id = new_grant(ledger, 1)
    assert watch(book, "r1", grant_id) == RedemptionStatus.WAITING
    assert book.decide() == {}, "a queued grant decides nothing"
    assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    assert book.decide() == {"r1": Fate.FULFILLED}
    assert book.decide() == {}, "a fate is decided once"
    [batch] = book.claim_calls(lease_s=30)
    assert (batch.broadcaster_id, batch.reward_id, batch.fate, batch.redemption_ids) == (
        BROADCASTER,
        REWARD,
        Fate.FULFILLED,
        ("r1",),
    )
    assert book.claim_calls(lease_s=30) == [], "a claimed call is not handed out again while its lease holds"
    assert book.record_done({"r1": Told("redemption r1 marked fulfilled")}) == 1
    assert book.record_done({"r1": Told("redemption r1 marked fulfilled")}) == 0, "a resent record changes nothing"
    found = book.get("r1")
    assert found is not None and found.status == RedemptionStatus.DONE and found.fate == Fate.FULFILLED
    assert ledger.history(grant_id)[-1].reason == "Twitch: redemption r1 marked fulfilled"
    assert book.calls_due_count() == 0


@pytest.mark.parametrize("state", [GrantState.PARKED, GrantState.UNKNOWN, GrantState.RETRYING])
def test_no_fate_while_a_grant_may_still_be_applied(ledger: Ledger, book: RedemptionBook, state: GrantState) -> None:
    grant_id = new_grant(ledger, 1)
    watch(book, "r1", grant_id)
    assert ledger.transition(grant_id, state, "not yet")
    assert book.decide() == {}
    found = book.get("r1")
    assert found is not None and found.status == RedemptionStatus.WAITING


def test_a_dead_grant_is_refunded_and_its_replay_refused(ledger: Ledger, book: RedemptionBook) -> None:
    grant_id = new_grant(ledger, 1)
    watch(book, "r1", grant_id)
    assert ledger.transition(grant_id, GrantState.DEAD, "refused by WetBot")
    assert book.decide() == {"r1": Fate.CANCELED}
    grant = ledger.get(grant_id)
    assert grant is not None and grant.refunded
    with pytest.raises(ActionRefused, match="refunded on Twitch"):
        replay(ledger, grant_id)
    assert not requeue_grant(ledger, grant_id, "by hand", expect=GrantState.DEAD), "the script refuses it too"
    assert ledger.get(grant_id).state == GrantState.DEAD  # type: ignore[union-attr]


def test_a_replay_before_the_decision_keeps_the_points_spent_until_the_grant_ends(
    ledger: Ledger, book: RedemptionBook
) -> None:
    grant_id = new_grant(ledger, 1)
    watch(book, "r1", grant_id)
    assert ledger.transition(grant_id, GrantState.DEAD, "refused")
    replay(ledger, grant_id)  # before any decision: the grant moves again
    assert book.decide() == {}, "the replayed grant is queued: no refund"
    assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    assert book.decide() == {"r1": Fate.FULFILLED}


def test_a_dead_grant_that_may_have_been_applied_is_never_refunded(
    redis: Redis, keys: Keys, ledger: Ledger, book: RedemptionBook
) -> None:
    grant_id = new_grant(ledger, 1)
    watch(book, "r1", grant_id)
    redis.hset(keys.grant(grant_id), "possible_duplicates", "1")  # a resend of a request that may have applied
    assert ledger.transition(grant_id, GrantState.DEAD, "out of attempts")
    assert book.decide() == {"r1": Fate.KEPT}
    found = book.get("r1")
    assert found is not None and found.status == RedemptionStatus.DONE and "may have been applied" in found.note
    assert book.claim_calls(lease_s=30) == []
    assert not ledger.get(grant_id).refunded  # type: ignore[union-attr]


def test_refunds_off_keeps_a_dead_grants_redemption_in_the_queue(ledger: Ledger, book: RedemptionBook) -> None:
    grant_id = new_grant(ledger, 1)
    watch(book, "r1", grant_id, refund=False)
    assert ledger.cancel(grant_id, "withdrawn")
    assert book.decide() == {"r1": Fate.KEPT}
    assert "refunds are off" in ledger.history(grant_id)[-1].reason


def test_one_delivered_grant_of_two_fulfils_only_once_both_have_ended(ledger: Ledger, book: RedemptionBook) -> None:
    first, second = new_grant(ledger, 1), new_grant(ledger, 2)
    watch(book, "r1", first, second)
    assert ledger.transition(first, GrantState.DEAD, "refused")
    assert book.decide() == {}, "the second grant still moves"
    assert ledger.transition(second, GrantState.UNKNOWN, "no answer")
    assert book.decide() == {}
    resolve(ledger, second, Decision.DELIVERED)  # an operator's decision moves it: the watch sees that too
    assert book.decide() == {"r1": Fate.FULFILLED}
    assert not ledger.get(first).refunded  # type: ignore[union-attr]


def test_a_redemption_watched_after_its_grant_ended_is_decided_and_a_decided_one_takes_no_grants(
    ledger: Ledger, book: RedemptionBook
) -> None:
    grant_id = new_grant(ledger, 1)
    assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    watch(book, "r1", grant_id)  # the catch-up poll found it late
    assert watch(book, "r1", grant_id) == RedemptionStatus.WAITING, "watching twice is watching once"
    assert book.decide() == {"r1": Fate.FULFILLED}
    late = new_grant(ledger, 2)
    assert watch(book, "r1", late) == RedemptionStatus.CALLING
    found = book.get("r1")
    assert found is not None and found.grant_ids == (grant_id,)


def test_calls_are_batched_per_reward_and_fate_at_most_fifty_and_retried_after_their_delay(
    ledger: Ledger, book: RedemptionBook
) -> None:
    ids = []
    for n in range(HELIX_BATCH + 5):
        grant_id = new_grant(ledger, n, redemption=f"r{n}")
        watch(book, f"r{n}", grant_id)
        assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
        ids.append(f"r{n}")
    other = new_grant(ledger, 99, redemption="dead")
    watch(book, "dead-one", other)
    assert ledger.transition(other, GrantState.DEAD, "refused")
    assert len(book.decide()) == HELIX_BATCH + 6
    batches = book.claim_calls(lease_s=30)
    sizes = sorted((batch.fate.value, len(batch.redemption_ids)) for batch in batches)
    assert sizes == [("CANCELED", 1), ("FULFILLED", 5), ("FULFILLED", HELIX_BATCH)]
    assert book.record_retry({"dead-one": "Helix answered 503"}, delay_s=0) == 1
    [again] = book.claim_calls(lease_s=30)
    assert again.redemption_ids == ("dead-one",)
    found = book.get("dead-one")
    assert found is not None and found.calls_failed == 1 and found.last_error == "Helix answered 503"


def test_a_claim_whose_caller_died_is_handed_out_again_once_its_lease_ends(
    ledger: Ledger, book: RedemptionBook
) -> None:
    grant_id = new_grant(ledger, 1)
    watch(book, "r1", grant_id)
    assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    book.decide()
    assert len(book.claim_calls(lease_s=0.2)) == 1  # its caller dies here
    assert book.claim_calls(lease_s=30) == []
    time.sleep(0.3)
    [batch] = book.claim_calls(lease_s=30)
    assert batch.redemption_ids == ("r1",)
