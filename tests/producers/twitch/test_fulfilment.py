"""Twitch is told each redemption's fate once, against the Twitch simulator over HTTP and a real Redis: fulfilled
once delivered, refunded once dead, batched, through faults, a lost answer, a 429, an expired token, a killed
pass, a deleted reward and another app's reward."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis

from admin.grant_actions import replay
from producers.twitch.broadcaster_api import BroadcasterHelix
from producers.twitch.fulfilment import Fulfiller
from producers.twitch.oauth import OAuthClient
from producers.twitch.redemptions import Fate, RedemptionBook
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_CLIENT_ID, TwitchSimulator
from tests.producers.twitch.test_tokens import KEY, connect, make_oauth
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

GUILD = "222222222222222222"
PATCH_PATH = "/helix/channel_points/custom_rewards/redemptions"


@pytest.fixture
def sim() -> Iterator[TwitchSimulator]:
    simulator = TwitchSimulator(device_poll_interval_s=0.01, auto_approve_after_s=0.0).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def oauth(sim: TwitchSimulator) -> Iterator[OAuthClient]:
    client = make_oauth(sim)
    yield client
    client.close()


@pytest.fixture
def helix(sim: TwitchSimulator, redis: Redis, keys: Keys, oauth: OAuthClient) -> Iterator[BroadcasterHelix]:
    vault = TokenVault(redis, keys, KEY, oauth)
    connect(vault, oauth)
    client = BroadcasterHelix(api_url=sim.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault, timeout_s=5.0)
    yield client
    client.close()


@pytest.fixture
def book(redis: Redis, keys: Keys) -> RedemptionBook:
    return RedemptionBook(redis, keys)


@pytest.fixture
def fulfiller(book: RedemptionBook, helix: BroadcasterHelix) -> Fulfiller:
    return Fulfiller(book, helix, retry_s=0.0)


def redeemed(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, reward: dict[str, object], n: int
) -> tuple[str, str]:
    """A viewer redeems ``reward``; its grant is made and watched, as the webhook does. (redemption id, grant id)."""
    event = sim.redeem(str(reward["id"]), "cooler_user")
    rid = str(event["id"])
    new = NewGrant(
        guild_id=GUILD,
        user_id=f"3333333333333{n:05d}",
        items=(GrantItem("chest", 1.0),),
        source="twitch",
        idempotency_key=f"twitch:{rid}:daily",
    )
    grant_id = ledger.create(new).grant.id
    book.watch(
        rid,
        broadcaster_id=str(event["broadcaster_user_id"]),
        reward_id=str(reward["id"]),
        refund=True,
        grant_ids=[grant_id],
    )
    return rid, grant_id


def status_of(sim: TwitchSimulator, rid: str) -> str:
    [found] = [r for r in sim.redemptions() if r["id"] == rid]
    return str(found["status"])


def patches(sim: TwitchSimulator) -> int:
    return sum(1 for r in sim.requests() if r.method == "PATCH" and r.path.startswith(PATCH_PATH))


def test_a_delivered_grant_fulfils_and_a_dead_one_refunds(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, fulfiller: Fulfiller
) -> None:
    reward = sim.create_reward("Daily chest", 100)
    kept, kept_grant = redeemed(sim, ledger, book, reward, 1)
    lost, lost_grant = redeemed(sim, ledger, book, reward, 2)
    waiting, _ = redeemed(sim, ledger, book, reward, 3)
    assert ledger.transition(kept_grant, GrantState.DELIVERED, "applied")
    assert ledger.transition(lost_grant, GrantState.DEAD, "refused by WetBot")
    done = fulfiller.run_once()
    assert (done.decided, done.done) == (2, 2)
    assert status_of(sim, kept) == "FULFILLED"
    assert status_of(sim, lost) == "CANCELED" and sim.refunds() == [lost]
    assert status_of(sim, waiting) == "UNFULFILLED", "a queued grant's redemption is left alone"
    assert "the viewer has the channel points back" in ledger.history(lost_grant)[-1].reason
    assert fulfiller.run_once().calls == 0, "told once"


def test_a_hundred_redemptions_take_two_calls_per_fate(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, fulfiller: Fulfiller
) -> None:
    reward = sim.create_reward("Daily chest", 100)
    grants = [redeemed(sim, ledger, book, reward, n)[1] for n in range(100)]
    for grant_id in grants:
        assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    assert fulfiller.run_once().done == 100
    assert patches(sim) == 2
    assert {status_of(sim, r["id"]) for r in sim.redemptions()} == {"FULFILLED"}  # type: ignore[arg-type]


def test_an_answer_lost_after_twitch_applied_it_is_recorded_without_a_second_change(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, fulfiller: Fulfiller
) -> None:
    reward = sim.create_reward("Daily chest", 100)
    rid, grant_id = redeemed(sim, ledger, book, reward, 1)
    assert ledger.transition(grant_id, GrantState.DEAD, "refused")
    sim.inject("drop_after", path=PATCH_PATH, method="PATCH")  # Twitch refunds, the answer never arrives
    assert fulfiller.run_once().retried == 1
    assert sim.refunds() == [rid]
    assert fulfiller.run_once().done == 1
    assert sim.refunds() == [rid], "refunded once"
    assert len(sim.status_updates()) == 1
    redemption = book.get(rid)
    assert redemption is not None and redemption.fate == Fate.CANCELED and redemption.calls_failed == 1
    assert ledger.get(grant_id).refunded  # type: ignore[union-attr]


def test_a_pass_killed_after_its_claim_is_replaced_once_its_lease_ends(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, helix: BroadcasterHelix
) -> None:
    reward = sim.create_reward("Daily chest", 100)
    rid, grant_id = redeemed(sim, ledger, book, reward, 1)
    assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    book.decide()
    assert len(book.claim_calls(lease_s=0.3)) == 1  # the process dies here, between delivery and the call
    fulfiller = Fulfiller(book, helix)
    assert fulfiller.run_once().calls == 0, "the claim still holds"
    time.sleep(0.4)
    assert fulfiller.run_once().done == 1
    assert status_of(sim, rid) == "FULFILLED"


def test_a_5xx_and_a_429_are_tried_again_later(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, helix: BroadcasterHelix
) -> None:
    reward = sim.create_reward("Daily chest", 100)
    rid, grant_id = redeemed(sim, ledger, book, reward, 1)
    assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    fulfiller = Fulfiller(book, helix, retry_s=0.0)
    sim.inject("status", path=PATCH_PATH, method="PATCH", status=503)
    assert fulfiller.run_once().retried == 1
    sim.inject("status", path=PATCH_PATH, method="PATCH", status=429, message="Too Many Requests")
    assert fulfiller.run_once().retried == 1
    redemption = book.get(rid)
    assert redemption is not None and redemption.calls_failed == 2 and "429" in redemption.last_error
    assert fulfiller.run_once().calls == 0, "after a 429 the call waits for Twitch's bucket to refill"
    assert status_of(sim, rid) == "UNFULFILLED"


def test_an_expired_token_is_refreshed_and_the_call_made(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, fulfiller: Fulfiller
) -> None:
    reward = sim.create_reward("Daily chest", 100)
    rid, grant_id = redeemed(sim, ledger, book, reward, 1)
    assert ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    sim.expire_access_tokens()
    assert fulfiller.run_once().done == 1
    assert status_of(sim, rid) == "FULFILLED"


def test_a_deleted_reward_or_another_apps_reward_refunds_nothing_and_the_grant_may_be_replayed(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, fulfiller: Fulfiller
) -> None:
    ours = sim.create_reward("Daily chest", 100)
    gone, gone_grant = redeemed(sim, ledger, book, ours, 1)
    sim.delete_reward(str(ours["id"]))
    theirs = sim.create_reward_as_other_app("Hydrate", 50)
    foreign, foreign_grant = redeemed(sim, ledger, book, theirs, 2)
    for grant_id in (gone_grant, foreign_grant):
        assert ledger.transition(grant_id, GrantState.DEAD, "refused")
    assert fulfiller.run_once().done == 2
    assert sim.refunds() == []
    assert "gone on Twitch" in (book.get(gone).note)  # type: ignore[union-attr]
    assert "another app" in (book.get(foreign).note)  # type: ignore[union-attr]
    for rid, grant_id in ((gone, gone_grant), (foreign, foreign_grant)):
        assert book.get(rid).fate == Fate.KEPT  # type: ignore[union-attr]
        assert not ledger.get(grant_id).refunded  # type: ignore[union-attr]
        assert replay(ledger, grant_id).done, "nothing was given back: a replay is fair"


def test_a_redemption_the_streamer_settled_on_twitch_is_left_as_it_is(
    sim: TwitchSimulator, ledger: Ledger, book: RedemptionBook, fulfiller: Fulfiller, helix: BroadcasterHelix
) -> None:
    reward = sim.create_reward("Daily chest", 100)
    rid, grant_id = redeemed(sim, ledger, book, reward, 1)
    helix.update_redemptions(helix.broadcaster_id, str(reward["id"]), [rid], "FULFILLED")  # the streamer's click
    assert ledger.transition(grant_id, GrantState.DEAD, "refused")
    assert fulfiller.run_once().done == 1
    assert sim.refunds() == []
    assert "already fulfilled on Twitch" in book.get(rid).note  # type: ignore[union-attr]
    assert not ledger.get(grant_id).refunded  # type: ignore[union-attr]
