"""EventSub over WebSocket end to end: the Twitch process's runner and client against the Twitch simulator's
EventSub WebSocket server and Helix (real sockets, real HTTP) and a real Redis: notifications become grants once,
a ``session_reconnect`` hands over without a gap, a silent socket or a 4003 is replaced and the gap recorded,
a revoked subscription comes back."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from websockets.sync.client import connect as ws_connect

from producers.inbox import EventOutcome, Outcome
from producers.state import AppState, checked_rewards, close_state, open_state
from producers.twitch.broadcaster_api import BroadcasterHelix
from producers.twitch.eventsub_ws import EventSubClient, GapSink, deliver_to
from producers.twitch.gaps import missed_periods
from producers.twitch.oauth import OAuthClient
from producers.twitch.runner import TwitchRunner
from producers.twitch.samples import sample_event
from producers.twitch.subscription_status import SubscriptionStatusBook
from producers.twitch.subscriptions import wanted_subscriptions
from producers.twitch.tokens import TokenVault
from simulator.eventsub_ws import CLOSE_RECONNECTED
from simulator.twitch import DEFAULT_BROADCASTER, DEFAULT_CLIENT_ID
from tests.conftest import GUILD, USER, SettingsFactory, wait_for
from tests.producers.twitch.eventsub_rig import KEEPALIVE_S, LoopThread, WiredTwitch
from tests.producers.twitch.test_tokens import KEY, connect, make_oauth
from worker import redis_values as values
from worker.keys import Keys

CHEERER = "1234"
RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "cheer"
event = "channel.cheer"
per_bits = 100
items = [{{ id = "gem", amount = 1 }}]

[[twitch.rules]]
name = "chest"
event = "channel.channel_points_custom_reward_redemption.add"
reward = "Daily chest"
items = [{{ id = "chest", amount = 1 }}]
"""
SUBSCRIPTIONS_PATH = "/helix/eventsub/subscriptions"
BROADCASTER = {"broadcaster_user_id": DEFAULT_BROADCASTER.id}
#: Generous: a loaded machine may be slow, the keepalive timeout is 1 s.
WAIT_S = 20.0


@pytest.fixture
def oauth(wired: WiredTwitch) -> Iterator[OAuthClient]:
    client = make_oauth(wired.sim)
    yield client
    client.close()


@pytest.fixture
def vault(redis: Redis, keys: Keys, oauth: OAuthClient) -> TokenVault:
    made = TokenVault(redis, keys, KEY, oauth)
    connect(made, oauth)
    return made


@pytest.fixture
def state(make_settings: SettingsFactory, rewards_file: Path) -> AppState:
    rewards_file.write_text(RULES, encoding="utf-8")
    settings = make_settings()
    rewards, keyring = checked_rewards(settings)
    made = open_state(settings, rewards, keyring)
    made.links.add("twitch", CHEERER, USER)
    return made


@dataclass
class Process:
    """The Twitch process's runner with its EventSub client, on a loop of its own; what it delivered."""

    runner: TwitchRunner
    thread: LoopThread
    outcomes: list[EventOutcome]

    @property
    def client(self) -> EventSubClient:
        client = self.runner.client
        assert client is not None
        return client


@pytest.fixture
def sweep_s() -> float:
    """Seconds between the client's sweeps (a test parametrizes it to leave sweeps out)."""
    return 0.5


@pytest.fixture
def process(
    wired: WiredTwitch, state: AppState, vault: TokenVault, redis: Redis, keys: Keys, sweep_s: float
) -> Iterator[Process]:
    helix = BroadcasterHelix(api_url=wired.sim.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault, timeout_s=10.0)
    outcomes: list[EventOutcome] = []
    deliver = deliver_to(state)

    async def recording(
        message_id: str, message_type: str, payload: dict[str, Any], headers: Mapping[str, str], body: bytes
    ) -> EventOutcome:
        outcome = await deliver(message_id, message_type, payload, headers, body)
        outcomes.append(outcome)
        return outcome

    def client(gaps: GapSink) -> EventSubClient:
        return EventSubClient(
            url=wired.ws.url,
            helix=helix,
            wanted=lambda: wanted_subscriptions(state.rewards.twitch, helix.broadcaster_id),
            deliver=recording,
            gaps=gaps,
            sweep_s=sweep_s,
            status=SubscriptionStatusBook(redis, keys),
        )

    runner = TwitchRunner(redis, keys, tasks=[], ready=lambda: None, eventsub=client, lease_s=3.0)

    async def main(stop: asyncio.Event) -> None:
        try:
            await runner.serve(stop)
        finally:
            await close_state(state)

    thread = LoopThread(main)
    running = Process(runner, thread, outcomes)
    yield running
    thread.stop()
    helix.close()


def subscribed(wired: WiredTwitch, process: Process, count: int = 2) -> str:
    """Wait until the client's current session holds ``count`` subscriptions and the client has counted the
    answers that created them (the server holds one before its answer reaches the client); returns its id."""
    found = ""

    def ready() -> bool:
        nonlocal found
        client = process.runner.client
        found = client.session_id if client is not None else ""
        settled = client is not None and client.created % count == 0 and client.created > 0
        return bool(found) and len(wired.session_subscriptions(found)) == count and settled

    wait_for(ready, timeout_s=WAIT_S)
    return found


def cheer(wired: WiredTwitch, *, duplicate: bool = False) -> str:
    """A viewer cheers 1000 bits; returns the message id the server sent."""
    event = sample_event("channel.cheer", user_id=CHEERER, broadcaster_id=DEFAULT_BROADCASTER.id)
    [message] = wired.ws.notify("channel.cheer", event, duplicate=duplicate)
    metadata = message["metadata"]
    assert isinstance(metadata, dict)
    return str(metadata["message_id"])


def twitch_grants(redis: Redis, keys: Keys) -> int:
    return values.integer(redis.zcard(keys.source_grants("twitch")))


def test_a_notification_becomes_one_grant_also_when_sent_twice(
    wired: WiredTwitch, process: Process, state: AppState, redis: Redis, keys: Keys
) -> None:
    session_id = subscribed(wired, process)
    types = sorted(str(sub["type"]) for sub in wired.session_subscriptions(session_id))
    assert types == ["channel.channel_points_custom_reward_redemption.add", "channel.cheer"]
    [sub] = [s for s in wired.sim.subscriptions() if s["type"] == "channel.cheer"]
    assert sub["transport"] == {"method": "websocket", "session_id": session_id, "connected_at": sub["created_at"]}

    message_id = cheer(wired, duplicate=True)
    wait_for(lambda: len(process.outcomes) == 2, timeout_s=WAIT_S)
    assert [o.outcome for o in process.outcomes] == [Outcome.GRANTED, Outcome.DUPLICATE]
    assert twitch_grants(redis, keys) == 1
    assert len(process.outcomes[0].granted) == 1 and not process.outcomes[0].parked, "queued for the linked user"
    kept = state.inbox.recent(limit=5)
    assert any(event.ref == message_id and event.kind == "notification" for event in kept)
    assert missed_periods(redis, keys) == [], "a first start with nothing seen before is no gap"


def test_session_reconnect_moves_the_session_without_a_gap_or_new_subscriptions(
    wired: WiredTwitch, process: Process, redis: Redis, keys: Keys
) -> None:
    session_id = subscribed(wired, process)
    created = process.client.created
    posts = sum(1 for r in wired.sim.requests() if r.method == "POST" and r.path == SUBSCRIPTIONS_PATH)

    wired.ws.reconnect(session_id)
    wait_for(lambda: process.client.last_handoff_s is not None, timeout_s=WAIT_S)
    handoff_s = process.client.last_handoff_s
    print(f"WebSocket reconnect time after session_reconnect: {handoff_s * 1000:.1f} ms")  # type: ignore[operator]

    closes = [r for r in wired.ws.records(session_id) if r.kind == "closed_by_server"]
    assert [(r.connection, r.code) for r in closes] == [(1, CLOSE_RECONNECTED)], "old socket kept until the welcome"
    assert process.client.session_id == session_id
    assert wired.ws.session_status(session_id) is None, "the session lives on"
    cheer(wired)
    wait_for(lambda: len(process.outcomes) == 1, timeout_s=WAIT_S)
    assert process.outcomes[0].outcome is Outcome.GRANTED, "the subscription moved with the session"
    assert process.client.created == created
    assert sum(1 for r in wired.sim.requests() if r.method == "POST" and r.path == SUBSCRIPTIONS_PATH) == posts
    assert missed_periods(redis, keys) == []
    process.thread.stop()
    wait_for(lambda: wired.ws.session_status(session_id) is not None, timeout_s=WAIT_S)  # the new socket closed too


def test_a_silent_socket_is_replaced_and_the_gap_recorded(
    wired: WiredTwitch, process: Process, redis: Redis, keys: Keys
) -> None:
    first = subscribed(wired, process)
    wired.ws.keepalives_enabled = False
    wait_for(lambda: bool(missed_periods(redis, keys)), timeout_s=WAIT_S)
    wired.ws.keepalives_enabled = True
    [period] = missed_periods(redis, keys)
    assert "no message for" in period.reason
    assert period.since is not None and period.until - period.since >= KEEPALIVE_S
    second = subscribed(wired, process)
    assert second != first, "a fresh session"
    assert process.client.created == 4, "its subscriptions were created again"
    cheer(wired)
    wait_for(lambda: len(process.outcomes) == 1, timeout_s=WAIT_S)
    assert process.outcomes[0].outcome is Outcome.GRANTED


def test_subscribing_too_slowly_gets_4003_and_the_next_session_recovers(
    wired: WiredTwitch, process: Process, redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wetbot_rewards.twitch")
    # Held before it is handled, longer than the keepalive timeout: Twitch closes the unused socket first.
    wired.sim.inject("slow_before", path=SUBSCRIPTIONS_PATH, method="POST", delay_s=KEEPALIVE_S * 2.5)
    session_id = subscribed(wired, process)
    [dead] = [s for s in wired.ws.records() if s.kind == "closed_by_server" and s.code == 4003]
    assert dead.session_id != session_id
    assert any("4003: connection unused" in r.getMessage() and "slowly" in r.getMessage() for r in caplog.records)
    wait_for(lambda: bool(missed_periods(redis, keys)), timeout_s=WAIT_S)  # recorded once subscribed again
    [period] = missed_periods(redis, keys)
    assert "4003" in period.reason
    cheer(wired)
    wait_for(lambda: len(process.outcomes) == 1, timeout_s=WAIT_S)
    assert process.outcomes[0].outcome is Outcome.GRANTED


def test_a_revoked_subscription_is_recorded_created_again_and_the_gap_recorded(
    wired: WiredTwitch, process: Process, redis: Redis, keys: Keys
) -> None:
    session_id = subscribed(wired, process)
    [sub] = [s for s in wired.session_subscriptions(session_id) if s["type"] == "channel.cheer"]
    wired.sim.set_subscription_status(str(sub["id"]), "authorization_revoked")  # Twitch sends the revocation
    wait_for(lambda: bool(missed_periods(redis, keys)), timeout_s=WAIT_S)
    assert [o.outcome for o in process.outcomes] == [Outcome.REVOCATION]
    [period] = missed_periods(redis, keys)
    assert "channel.cheer subscription was revoked" in period.reason
    [again] = [s for s in wired.session_subscriptions(session_id) if s["type"] == "channel.cheer"]
    assert again["id"] != sub["id"]
    cheer(wired)
    wait_for(lambda: len(process.outcomes) == 2, timeout_s=WAIT_S)
    assert process.outcomes[1].outcome is Outcome.GRANTED


@pytest.mark.parametrize("sweep_s", [3600.0])  # no sweep: what is written comes from the welcome and the revocation
def test_the_subscriptions_status_is_written_after_subscribing_and_each_revocation(
    wired: WiredTwitch, process: Process, redis: Redis, keys: Keys
) -> None:
    book = SubscriptionStatusBook(redis, keys)
    session_id = subscribed(wired, process)

    def statuses() -> dict[str, str]:
        check = book.read()
        return {} if check is None else {e.id: e.status for e in check.subscriptions if e.ours}

    live = {str(s["id"]) for s in wired.session_subscriptions(session_id)}
    wait_for(lambda: set(statuses()) == live, timeout_s=WAIT_S)
    check = book.read()
    assert check is not None and check.transport == "websocket" and check.error is None
    assert {(e.type, e.status, e.transport) for e in check.subscriptions} == {
        ("channel.cheer", "enabled", "websocket"),
        ("channel.channel_points_custom_reward_redemption.add", "enabled", "websocket"),
    }
    [sub] = [s for s in wired.session_subscriptions(session_id) if s["type"] == "channel.cheer"]
    revoked = str(sub["id"])
    wired.sim.set_subscription_status(revoked, "authorization_revoked")
    wait_for(lambda: statuses().get(revoked) == "authorization_revoked", timeout_s=WAIT_S)
    wait_for(lambda: [o.outcome for o in process.outcomes] == [Outcome.REVOCATION], timeout_s=WAIT_S)
    assert set(statuses()) == live, "the others left as they were"


@pytest.fixture
def orphan(wired: WiredTwitch, vault: TokenVault) -> str:
    """A cheer subscription Helix still lists as enabled though its session is gone (a socket lost uncleanly)."""
    helix = BroadcasterHelix(api_url=wired.sim.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault, timeout_s=10.0)
    try:
        with ws_connect(wired.ws.url) as socket:
            welcome = json.loads(socket.recv(timeout=10))
            session_id = welcome["payload"]["session"]["id"]
            made = helix.create_websocket_subscription("channel.cheer", "1", BROADCASTER, session_id)
    finally:
        helix.close()
    wait_for(lambda: wired.ws.session_status(session_id) is not None, timeout_s=WAIT_S)
    wired.sim.set_subscription_status(made.id, "enabled")  # Twitch has not noticed the session's end yet
    return made.id


def test_a_409_for_an_orphan_of_a_dead_session_deletes_it_and_subscribes_again(
    wired: WiredTwitch, orphan: str, process: Process
) -> None:
    session_id = subscribed(wired, process)
    assert orphan not in {str(s["id"]) for s in wired.sim.subscriptions()}, "the orphan was deleted"
    statuses = [r.status for r in wired.sim.requests() if r.path == SUBSCRIPTIONS_PATH]
    assert 409 in statuses and 204 in statuses
    [live] = [s for s in wired.session_subscriptions(session_id) if s["type"] == "channel.cheer"]
    assert live["id"] != orphan
    cheer(wired)
    wait_for(lambda: len(process.outcomes) == 1, timeout_s=WAIT_S)
    assert process.outcomes[0].outcome is Outcome.GRANTED
