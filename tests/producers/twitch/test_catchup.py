"""The catch-up poll against the Twitch simulator over HTTP, real Redis and the real web app: redemptions made
while the service was down become grants at the next pass, once, whichever of the poll and a (late, signed)
webhook saw them first; pagination, a 429 mid-pass, a reward deleted mid-pass, and how long a restart takes
to grant what was missed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from config.settings import Settings
from producers.inbox import event_id
from producers.state import checked_rewards, close_state, open_state
from producers.twitch.broadcaster_api import BroadcasterHelix, EndlessCursor
from producers.twitch.catchup import CatchUp, CatchUpPass, redemption_event
from producers.twitch.fulfilment import Fulfiller
from producers.twitch.oauth import OAuthClient
from producers.twitch.redemptions import RedemptionBook
from producers.twitch.samples import sample_payload, signed_request
from producers.twitch.tokens import TokenVault
from producers.twitch.webhook import REDEMPTION_TYPE
from simulator.twitch import DEFAULT_CLIENT_ID, RequestRecord, TwitchSimulator
from tests.conftest import GUILD, USER, SettingsFactory
from tests.producers.twitch.test_tokens import KEY, connect
from wetbot_rewards.app import create_app
from worker import redis_values as values
from worker.grant import Grant, GrantState
from worker.keys import Keys
from worker.ledger import Ledger

SECRET = "twitch-catchup-secret-8d2f4a"
REDEMPTIONS_PATH = "/helix/channel_points/custom_rewards/redemptions"
REWARDS_PATH = "/helix/channel_points/custom_rewards"
OTHER_USER = "333333333333333333"

RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "chest"
event = "{REDEMPTION_TYPE}"
reward = "Daily chest"
items = [{{ id = "chest", amount = 1 }}]

[[twitch.rules]]
name = "potion"
event = "{REDEMPTION_TYPE}"
reward = "Potion"
refund = false
items = [{{ id = "potion", amount = 2 }}]

[twitch.links]
"9001" = "{USER}"
"4242" = "{OTHER_USER}"
"""


class Deleter:
    """Deletes a reward on Twitch right after the rewards are listed (before its redemptions are)."""

    def __init__(self) -> None:
        self.sim: TwitchSimulator | None = None
        self.reward_id = ""

    def __call__(self, record: RequestRecord) -> None:
        if self.sim is not None and self.reward_id and record.method == "GET" and record.path == REWARDS_PATH:
            self.sim.delete_reward(self.reward_id)
            self.reward_id = ""


@pytest.fixture
def deleter() -> Deleter:
    return Deleter()


@pytest.fixture
def twitch(deleter: Deleter) -> Iterator[TwitchSimulator]:
    simulator = TwitchSimulator(device_poll_interval_s=0.01, auto_approve_after_s=0.0, on_request=deleter).start()
    deleter.sim = simulator
    yield simulator
    simulator.stop()


@pytest.fixture
def helix(twitch: TwitchSimulator, redis: Redis, keys: Keys, oauth: OAuthClient) -> Iterator[BroadcasterHelix]:
    vault = TokenVault(redis, keys, KEY, oauth)
    connect(vault, oauth)
    client = BroadcasterHelix(api_url=twitch.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault, timeout_s=5.0)
    yield client
    client.close()


@pytest.fixture
def settings(make_settings: SettingsFactory, tmp_path: Path) -> Settings:
    path = tmp_path / "catchup-rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return make_settings(rewards_file=path, twitch_webhook_secret=SECRET)


@pytest.fixture
def book(redis: Redis, keys: Keys) -> RedemptionBook:
    return RedemptionBook(redis, keys)


def catch_up(settings: Settings, helix: BroadcasterHelix) -> CatchUpPass:
    """One pass as a freshly started process makes it: its own state, its own event loop."""

    async def main() -> CatchUpPass:
        rewards, keyring = checked_rewards(settings)
        state = open_state(settings, rewards, keyring)
        try:
            return await CatchUp(state, helix).run_once()
        finally:
            await close_state(state)

    return asyncio.run(main())


def grants(ledger: Ledger) -> list[Grant]:
    return ledger.list_grants(limit=1000, newest_first=False)


def deliver(client: TestClient, event: dict[str, object]) -> dict[str, object]:
    """The signed EventSub notification of ``event``, as Twitch would POST it; the app's answer."""
    body, headers = signed_request(SECRET, sample_payload(REDEMPTION_TYPE, dict(event)))
    response = client.post("/webhooks/twitch", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def pages_listed(twitch: TwitchSimulator) -> int:
    return sum(1 for r in twitch.requests() if r.method == "GET" and r.path == REDEMPTIONS_PATH)


def test_redemptions_made_while_down_become_grants_at_the_next_pass(
    twitch: TwitchSimulator,
    helix: BroadcasterHelix,
    settings: Settings,
    ledger: Ledger,
    book: RedemptionBook,
    redis: Redis,
    keys: Keys,
) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    potion = twitch.create_reward("Potion", 50)
    theirs = twitch.create_reward_as_other_app("Hydrate", 10)
    made = [twitch.redeem(str(chest["id"]), "cooler_user"), twitch.redeem(str(potion["id"]), "viewer_two")]
    twitch.redeem(str(theirs["id"]), "cooler_user")  # not ours: Helix does not list it, and we may not touch it

    done = catch_up(settings, helix)
    assert done == CatchUpPass(rewards=2, redemptions=2, granted=2)
    assert done.complete
    by_ref = {grant.source_ref: grant for grant in grants(ledger)}
    assert set(by_ref) == {f"catchup:{event['id']}" for event in made}
    chest_grant = by_ref[f"catchup:{made[0]['id']}"]
    assert (chest_grant.user_id, chest_grant.rule) == (USER, "chest")
    assert set(values.texts(redis.smembers(keys.twitch_own_rewards()))) == {chest["id"], potion["id"]}

    watched = book.get(str(made[0]["id"]))
    assert watched is not None and watched.grant_ids == (chest_grant.id,) and watched.refund
    kept = book.get(str(made[1]["id"]))
    assert kept is not None and not kept.refund, "the potion rule says refund = false"
    kept_in_inbox = ledger_inbox_entry(settings, f"catchup:{made[0]['id']}")
    assert kept_in_inbox == (1, "granted")

    again = catch_up(settings, helix)
    assert (again.redemptions, again.granted, again.known) == (2, 0, 2)
    assert len(grants(ledger)) == 2
    assert ledger_inbox_entry(settings, f"catchup:{made[0]['id']}") == (1, "granted"), "not recorded again"


def ledger_inbox_entry(settings: Settings, ref: str) -> tuple[int, str] | None:
    """(deliveries, outcome) of the inbox entry for ``ref``, or None."""
    rewards, keyring = checked_rewards(settings)
    state = open_state(settings, rewards, keyring)
    try:
        entry = state.inbox.get(event_id("twitch", ref))
        return None if entry is None else (entry.deliveries, entry.outcome.outcome.value)
    finally:
        state.redis.close()
        asyncio.run(state.aredis.aclose())


@pytest.mark.parametrize("order", ["poll-then-webhook", "webhook-then-poll", "webhook-before-any-poll"])
def test_a_redemption_seen_by_the_poll_and_a_late_webhook_is_granted_once(
    order: str,
    twitch: TwitchSimulator,
    helix: BroadcasterHelix,
    settings: Settings,
    ledger: Ledger,
    book: RedemptionBook,
) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    if order == "webhook-then-poll":
        assert catch_up(settings, helix).redemptions == 0  # the reward ids are known to the webhook now
    event = twitch.redeem(str(chest["id"]), "cooler_user")
    rid = str(event["id"])
    with TestClient(create_app(settings)) as client:
        if order == "poll-then-webhook":
            assert catch_up(settings, helix).granted == 1
            answer = deliver(client, event)
        else:
            answer = deliver(client, event)
            assert answer["outcome"] == "granted"
            assert (book.get(rid) is not None) == (order == "webhook-then-poll"), "the webhook watches our rewards'"
            done = catch_up(settings, helix)
            assert (done.redemptions, done.granted, done.known) == (1, 0, 1)
    [grant] = grants(ledger)
    assert answer["granted"] == [grant.id]
    assert grant.source_ref.startswith("catchup:") == (order == "poll-then-webhook")
    watched = book.get(rid)
    assert watched is not None and watched.grant_ids == (grant.id,), "watched whichever path made it"
    assert catch_up(settings, helix).known == 1
    assert len(grants(ledger)) == 1


def test_more_than_fifty_redemptions_are_read_page_by_page_oldest_first(
    twitch: TwitchSimulator, helix: BroadcasterHelix, settings: Settings, ledger: Ledger
) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    made = [str(twitch.redeem(str(chest["id"]), "cooler_user")["id"]) for _ in range(120)]
    done = catch_up(settings, helix)
    assert (done.redemptions, done.granted) == (120, 120)
    assert pages_listed(twitch) == 3, "50 + 50 + 20"
    assert sorted(grant.source_ref for grant in grants(ledger)) == sorted(f"catchup:{rid}" for rid in made)


def test_a_listing_whose_cursor_never_ends_is_stopped(twitch: TwitchSimulator, helix: BroadcasterHelix) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    for _ in range(120):
        twitch.redeem(str(chest["id"]), "cooler_user")
    listed: list[Mapping[str, object]] = []
    with pytest.raises(EndlessCursor, match="more than 2 pages"):
        for page in helix.redemption_pages(helix.broadcaster_id, str(chest["id"]), status="UNFULFILLED", max_pages=2):
            listed.extend(page.redemptions)
    assert len(listed) == 100, "the pages given before the guard stopped it are kept"


def test_a_429_mid_pass_stops_it_until_the_bucket_is_full_and_the_next_pass_finishes(
    twitch: TwitchSimulator, helix: BroadcasterHelix, settings: Settings, ledger: Ledger
) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    for _ in range(120):
        twitch.redeem(str(chest["id"]), "cooler_user")
    twitch.set_rate_limit(3, window_s=600.0)  # the rewards, two pages, then 429 for the third page
    done = catch_up(settings, helix)
    assert (done.redemptions, done.granted) == (100, 100)
    assert not done.complete and done.retry_at > time.time() + 60, "Ratelimit-Reset: when the bucket is full"
    assert len(grants(ledger)) == 100, "what was handled before the 429 stays handled"
    twitch.set_rate_limit(800)  # refills at 800 a minute from here: a second holds the next pass's 4 calls
    time.sleep(1.0)
    again = catch_up(settings, helix)
    assert again.complete and (again.redemptions, again.known, again.granted) == (120, 100, 20)
    assert len(grants(ledger)) == 120


def test_a_reward_deleted_between_the_listing_and_its_redemptions_is_skipped(
    twitch: TwitchSimulator, helix: BroadcasterHelix, settings: Settings, ledger: Ledger, deleter: Deleter
) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    potion = twitch.create_reward("Potion", 50)
    twitch.redeem(str(chest["id"]), "cooler_user")
    twitch.redeem(str(potion["id"]), "viewer_two")
    deleter.reward_id = str(chest["id"])
    done = catch_up(settings, helix)
    assert (done.rewards, done.rewards_gone, done.granted) == (2, 1, 1)
    assert done.complete, "a deleted reward has nothing left to catch up"
    assert [grant.rule for grant in grants(ledger)] == ["potion"]


def test_a_redemption_no_rule_grants_is_recorded_once(
    twitch: TwitchSimulator, helix: BroadcasterHelix, settings: Settings, ledger: Ledger
) -> None:
    other = twitch.create_reward("Shout-out", 300)
    rid = str(twitch.redeem(str(other["id"]), "cooler_user")["id"])
    assert catch_up(settings, helix).ignored == 1
    assert ledger_inbox_entry(settings, f"catchup:{rid}") == (1, "ignored")
    again = catch_up(settings, helix)
    assert (again.ignored, again.known) == (0, 1)
    assert ledger_inbox_entry(settings, f"catchup:{rid}") == (1, "ignored")
    assert grants(ledger) == []


def test_a_helix_redemption_becomes_the_eventsub_event(twitch: TwitchSimulator) -> None:
    reward = twitch.create_reward("Daily chest", 100, {"prompt": "your Discord id", "is_user_input_required": True})
    event = twitch.redeem(str(reward["id"]), "cooler_user", user_input="hello")
    [listed] = [r for r in twitch.redemptions() if r["id"] == event["id"]]
    assert redemption_event(listed) == event


def test_a_restart_grants_the_missed_redemptions_within_seconds(
    twitch: TwitchSimulator, helix: BroadcasterHelix, settings: Settings, ledger: Ledger
) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    for n in range(100):
        twitch.redeem(str(chest["id"]), "cooler_user" if n % 2 else "viewer_two")
    started = time.monotonic()
    done = catch_up(settings, helix)  # a new process: its state, its loop, then one pass
    elapsed = time.monotonic() - started
    print(f"\nrestart -> 100 missed redemptions granted: {elapsed * 1000:.0f} ms ({pages_listed(twitch)} pages)")
    assert done.granted == 100 and len(grants(ledger)) == 100
    assert elapsed < 10.0


def test_after_a_429_a_pass_asked_for_early_asks_helix_nothing(
    twitch: TwitchSimulator, helix: BroadcasterHelix, settings: Settings
) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    twitch.redeem(str(chest["id"]), "cooler_user")
    twitch.set_rate_limit(1, window_s=600.0)  # the rewards, then 429 for the redemptions

    async def main() -> tuple[CatchUpPass, CatchUpPass, int]:
        rewards, keyring = checked_rewards(settings)
        state = open_state(settings, rewards, keyring)
        try:
            catch_up = CatchUp(state, helix)
            first = await catch_up.run_once()
            calls = len(twitch.requests())
            second = await catch_up.run_once()  # e.g. a gap right after: too soon
            return first, second, len(twitch.requests()) - calls
        finally:
            await close_state(state)

    first, second, calls = asyncio.run(main())
    assert first.retry_at > time.time() + 60 and first.granted == 0
    assert second == CatchUpPass(retry_at=first.retry_at)
    assert calls == 0


def test_a_caught_up_redemption_is_fulfilled_once_its_grant_is_delivered_and_then_leaves_the_list(
    twitch: TwitchSimulator, helix: BroadcasterHelix, settings: Settings, ledger: Ledger, book: RedemptionBook
) -> None:
    chest = twitch.create_reward("Daily chest", 100)
    rid = str(twitch.redeem(str(chest["id"]), "cooler_user")["id"])
    assert catch_up(settings, helix).granted == 1
    [grant] = grants(ledger)
    assert ledger.transition(grant.id, GrantState.DELIVERED, "applied")
    assert Fulfiller(book, helix).run_once().done == 1
    assert [r["status"] for r in twitch.redemptions() if r["id"] == rid] == ["FULFILLED"]
    assert catch_up(settings, helix).redemptions == 0, "Twitch lists it no more"
