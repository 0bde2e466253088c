"""The Twitch page lists each EventSub subscription with its status, as the last sweep saw it on the Twitch
simulator, and says when the last sweep failed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from producers.twitch.helix import HelixClient
from producers.twitch.subscription_status import SubscriptionStatusBook
from producers.twitch.subscription_sweep import SubscriptionSweep
from simulator.twitch import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from tests.admin.console.test_console_twitch import client, page_settings, panel, rules_file
from tests.producers.twitch.test_cli import BROADCASTER, CALLBACK, GRANTED, arrange
from tests.producers.twitch.test_subscription_sweep import CHEER, ELSEWHERE, FOLLOW
from tests.producers.twitch.test_webhook import SECRET
from worker.keys import Keys

__all__ = ["client", "page_settings", "rules_file"]  # fixtures this module's tests use


@pytest.fixture
def helix(twitch: TwitchSimulator) -> Iterator[HelixClient]:
    twitch.issue_user_token(scopes=GRANTED)
    made = HelixClient(
        api_url=twitch.api_url,
        auth_url=twitch.auth_url,
        client_id=DEFAULT_CLIENT_ID,
        client_secret=DEFAULT_CLIENT_SECRET,
    )
    yield made
    made.close()


def test_the_page_lists_each_subscription_with_its_status(
    client: TestClient, twitch: TwitchSimulator, helix: HelixClient, redis: Redis, keys: Keys
) -> None:
    assert "Not checked yet" in panel(client.get("/console/twitch").text, "subscriptions")
    foreign = arrange(twitch, "channel.raid", "1", {"to_broadcaster_user_id": BROADCASTER}, ELSEWHERE, "user_removed")
    book = SubscriptionStatusBook(redis, keys)
    SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER, FOLLOW])
    [cheer] = [s.id for s in twitch.eventsub.subscriptions if s.type == "channel.cheer"]
    twitch.set_subscription_status(cheer, "enabled")
    SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER, FOLLOW])
    shown = panel(client.get("/console/twitch").text, "subscriptions")
    assert f'data-subscription="{cheer}" data-status="enabled" data-ours="yes"' in shown
    assert 'data-status="webhook_callback_verification_pending" data-ours="yes"' in shown  # the follow
    assert f'data-subscription="{foreign}" data-status="user_removed" data-ours="no"' in shown
    assert "broadcaster_user_id=1337 moderator_user_id=1337" in shown and "(another's, untouched)" in shown
    assert "subscriptions-error" not in shown
    book.failed("webhook", "the subscription sweep failed, the next one tries again: Twitch answered 503")
    shown = panel(client.get("/console/twitch").text, "subscriptions")
    assert 'data-field="subscriptions-error"' in shown and "answered 503" in shown
    assert f'data-subscription="{cheer}"' in shown, "the subscriptions as last seen stay listed"
