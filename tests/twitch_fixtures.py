"""The Twitch fixtures most Twitch tests share (a pytest plugin named in ``tests/conftest.py``): the simulator
with a fast, self-approving device flow over real HTTP, the app's OAuth client on it, the token vault as the
Twitch process has it (the right key), and the simulator wired to its EventSub WebSocket server. A module that
needs another simulator defines its own ``twitch``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from producers.twitch.oauth import OAuthClient
from producers.twitch.tokens import TokenVault
from simulator.twitch import TwitchSimulator
from tests.producers.twitch.eventsub_rig import WiredTwitch, start_wired
from tests.producers.twitch.test_tokens import KEY, make_oauth
from worker.keys import Keys


@pytest.fixture
def twitch() -> Iterator[TwitchSimulator]:
    simulator = TwitchSimulator(device_poll_interval_s=0.01, auto_approve_after_s=0.0).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def oauth(twitch: TwitchSimulator) -> Iterator[OAuthClient]:
    client = make_oauth(twitch)
    yield client
    client.close()


@pytest.fixture
def vault(redis: Redis, keys: Keys, oauth: OAuthClient) -> TokenVault:
    """The vault as the Twitch process has it (the right key)."""
    return TokenVault(redis, keys, KEY, oauth)


@pytest.fixture
def wired() -> Iterator[WiredTwitch]:
    """The Twitch simulator with its EventSub WebSocket server, subscriptions bound to sessions."""
    twitch = start_wired(device_poll_interval_s=0.01, auto_approve_after_s=0.0)
    yield twitch
    twitch.sim.stop()
    twitch.ws.stop()
