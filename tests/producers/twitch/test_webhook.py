"""``POST /webhooks/twitch`` end to end: the real app, real Redis, and (where it matters) a real worker + simulator."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
import requests
from fastapi.testclient import TestClient
from redis import Redis

from config.settings import Settings
from producers.counters import read_counters
from producers.twitch.logins import LinkNames
from producers.twitch.samples import SAMPLE_REWARD_ID, sample_event, sample_payload, signed_request, twitch_timestamp
from producers.twitch.webhook import MAX_BODY_BYTES, SEEN_MESSAGE, SEEN_REVOCATION_STATE
from simulator.wetbot import WetbotSimulator
from tests.conftest import (
    GUILD,
    TOKEN,
    USER,
    CapturingTransport,
    RunningWorker,
    SettingsFactory,
    serve_app,
    wait_for,
)
from tests.producers.twitch.test_samples import documented, signature_vectors
from wetbot_rewards.app import create_app
from worker.grant import Grant, GrantState
from worker.keys import IDEMPOTENCY_TTL_S, Keys
from worker.ledger import Ledger

SECRET = "twitch-test-secret-4b8c2d"
LINKED_TWITCH = "4242"
LINK_REWARD = "5b2c6f2e-0d1a-4c3e-9f4b-1a2b3c4d5e6f"
#: Minimum life of dedupe markers the issue asks for (35 days).
MIN_DEDUPE_S = 35 * 24 * 3600

RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "sub"
event = "channel.subscribe"
gifted = "both"
items = [{{ id = "sub-chest", amount = 1 }}]

[[twitch.rules]]
name = "gift"
event = "channel.subscription.gift"
items = [{{ id = "gift-token", amount = 1 }}]

[[twitch.rules]]
name = "resub"
event = "channel.subscription.message"
min_cumulative_months = 12
items = [{{ id = "badge", amount = 1 }}]

[[twitch.rules]]
name = "cheer"
event = "channel.cheer"
per_bits = 100
items = [{{ id = "gem", amount = 1 }}]

[[twitch.rules]]
name = "potion"
event = "channel.channel_points_custom_reward_redemption.add"
reward_id = "{SAMPLE_REWARD_ID}"
items = [{{ id = "potion", amount = 3 }}]

[[twitch.rules]]
name = "link"
event = "channel.channel_points_custom_reward_redemption.add"
reward_id = "{LINK_REWARD}"
link_reward = true
items = [{{ id = "welcome", amount = 1 }}]

[[twitch.rules]]
name = "follow"
event = "channel.follow"
items = [{{ id = "kit", amount = 1 }}]

[[twitch.rules]]
name = "raid"
event = "channel.raid"
min_viewers = 10
items = [{{ id = "banner", amount = 1 }}]

[twitch.links]
"{LINKED_TWITCH}" = "{USER}"
"""


@pytest.fixture
def twitch_settings(make_settings: SettingsFactory, tmp_path: Path) -> Settings:
    path = tmp_path / "twitch-rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return make_settings(rewards_file=path, twitch_webhook_secret=SECRET)


@pytest.fixture
def client(twitch_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(twitch_settings)) as test_client:
        yield test_client


def post(
    client: TestClient,
    payload: dict[str, Any] | bytes,
    *,
    message_type: str = "notification",
    message_id: str | None = None,
    timestamp: str | None = None,
    secret: str = SECRET,
    **extra_headers: str,
) -> httpx2.Response:
    body, headers = signed_request(
        secret, payload, message_type=message_type, message_id=message_id, timestamp=timestamp
    )
    return client.post("/webhooks/twitch", content=body, headers={**headers, **extra_headers})


def notify(
    client: TestClient, subscription_type: str, *, message_id: str | None = None, **fields: Any
) -> httpx2.Response:
    event = sample_event(subscription_type)
    event.update(fields)
    return post(client, sample_payload(subscription_type, event), message_id=message_id)


def grants(ledger: Ledger) -> list[Grant]:
    return ledger.list_grants(limit=1000, newest_first=False)


def counters(redis: Redis, keys: Keys) -> dict[str, int]:
    return read_counters(redis, keys)


def ttl(redis: Redis, key: str) -> int:
    return int(cast(int, redis.ttl(key)))


def post_together(settings: Settings, deliveries: list[tuple[bytes, dict[str, str]]]) -> list[int]:
    """Signed deliveries sent at once through a real server, one connection each; their status codes."""
    start = threading.Barrier(len(deliveries))

    def deliver(delivery: tuple[bytes, dict[str, str]]) -> int:
        body, headers = delivery
        with requests.Session() as session:
            session.get(f"{url}/healthz", timeout=10)  # connect first, so the posts go out together
            start.wait(timeout=10)
            return session.post(f"{url}/webhooks/twitch", data=body, headers=headers, timeout=10).status_code

    with serve_app(create_app(settings)) as url, ThreadPoolExecutor(len(deliveries)) as pool:
        return list(pool.map(deliver, deliveries))


# -- handshake, signature, freshness -----------------------------------------------------------------


def test_challenge_is_answered_as_plain_text(client: TestClient) -> None:
    payload = json.loads(documented("webhook_callback_verification.json"))
    response = post(client, payload, message_type="webhook_callback_verification")
    assert response.status_code == 200
    assert response.text == "pogchamp-kappa-360noscope-vohiyo"
    assert response.headers["content-type"].split(";")[0] == "text/plain"
    assert response.headers["content-length"] == str(len("pogchamp-kappa-360noscope-vohiyo"))


def test_the_published_vectors_are_authentic_but_stale(make_settings: SettingsFactory) -> None:
    vectors = signature_vectors()
    for vector in vectors:
        settings = make_settings(twitch_webhook_secret=vector["secret"])
        with TestClient(create_app(settings)) as client:
            headers = {**vector["headers"], "Twitch-Eventsub-Message-Signature": vector["expected_signature"]}
            response = client.post("/webhooks/twitch", content=vector["body"].encode(), headers=headers)
            assert response.status_code == 403 and "older" in response.json()["error"]
            wrong = {**headers, "Twitch-Eventsub-Message-Signature": "sha256=" + "0" * 64}
            response = client.post("/webhooks/twitch", content=vector["body"].encode(), headers=wrong)
            assert response.status_code == 403 and "signature" in response.json()["error"]


@pytest.mark.parametrize(
    ("age_s", "status"), [(0, 200), (9 * 60, 200), (11 * 60, 403), (-30, 200), (-2 * 60, 403), (-86400, 403)]
)
def test_stale_and_future_timestamps(client: TestClient, ledger: Ledger, age_s: float, status: int) -> None:
    payload = sample_payload("channel.cheer")
    response = post(client, payload, timestamp=twitch_timestamp(time.time() - age_s))
    assert response.status_code == status
    assert len(grants(ledger)) == (1 if status == 200 else 0)


def test_missing_or_wrong_signature_is_403_and_grants_nothing(client: TestClient, ledger: Ledger) -> None:
    body, headers = signed_request(SECRET, sample_payload("channel.cheer"))
    signed = ("twitch-eventsub-message-signature", "twitch-eventsub-message-id", "twitch-eventsub-message-timestamp")
    for name in signed:
        partial = {k: v for k, v in headers.items() if k != name}
        assert client.post("/webhooks/twitch", content=body, headers=partial).status_code == 403
    assert post(client, sample_payload("channel.cheer"), secret="not-the-secret-at-all").status_code == 403
    tampered = body.replace(b'"bits":1000', b'"bits":9000')
    assert tampered != body
    assert client.post("/webhooks/twitch", content=tampered, headers=headers).status_code == 403
    assert grants(ledger) == []


def test_no_secret_configured_is_503(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings())) as client:
        assert post(client, sample_payload("channel.cheer")).status_code == 503


# -- notifications -------------------------------------------------------------------------------------


def test_every_documented_sample_is_granted_and_parked_for_unlinked_users(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    expected = {
        "channel.subscribe": [("sub", "1234", "sub-chest", 1)],
        "channel.subscription.gift": [("gift", "1234", "gift-token", 2), ("sub", "1234", "sub-chest", 2)],
        "channel.subscription.message": [("resub", "1234", "badge", 1)],
        "channel.cheer": [("cheer", "1234", "gem", 10)],
        "channel.channel_points_custom_reward_redemption.add": [("potion", "9001", "potion", 3)],
        "channel.follow": [("follow", "1234", "kit", 1)],
        "channel.raid": [("raid", "1234", "banner", 1)],
        "notification.channel.follow.v1": [("follow", "1337", "kit", 1)],
    }
    for name, wanted in expected.items():
        payload = documented(f"{name}.json")
        message_id = str(uuid.uuid4())
        response = post(client, payload, message_id=message_id)
        assert response.status_code == 200, (name, response.text)
        made = [g for g in grants(ledger) if g.source_ref == message_id]
        assert sorted((g.rule, g.external_id, g.items[0].item_id, g.items[0].amount) for g in made) == wanted, name
        for grant in made:
            assert grant.state == GrantState.PARKED and grant.user_id == "" and grant.platform == "twitch"
            assert grant.guild_id == GUILD and grant.source == "twitch" and grant.reason
            event = json.loads(payload).get("event", {})
            if grant.rule == "follow":  # once per viewer and channel, for good (no TTL)
                once = f"follow-{event['broadcaster_user_id']}-{event['user_id']}"
                assert grant.idempotency_key == f"twitch:{once}:follow"
                assert ttl(redis, keys.idempotency(grant.idempotency_key)) == -1
                continue
            assert grant.idempotency_key == f"twitch:{event.get('id') or message_id}:{grant.rule}"
            assert ttl(redis, keys.idempotency(grant.idempotency_key)) >= MIN_DEDUPE_S
        assert ttl(redis, keys.seen(SEEN_MESSAGE, message_id)) >= MIN_DEDUPE_S
    assert counters(redis, keys)["twitch.channel.cheer.granted"] == 1


def test_a_linked_user_is_queued_for_their_discord_account(client: TestClient, ledger: Ledger) -> None:
    assert notify(client, "channel.cheer", user_id=LINKED_TWITCH, bits=250).status_code == 200
    [grant] = grants(ledger)
    assert grant.state == GrantState.QUEUED and grant.user_id == USER and grant.items[0].amount == 2


def test_a_redelivered_message_grants_once(client: TestClient, ledger: Ledger, redis: Redis, keys: Keys) -> None:
    payload = sample_payload("channel.cheer")
    first = post(client, payload, message_id="same-id")
    again = post(client, payload, message_id="same-id", **{"Twitch-Eventsub-Message-Retry": "1"})
    assert (first.status_code, again.status_code) == (200, 200)
    assert len(grants(ledger)) == 1
    assert counters(redis, keys)["twitch.duplicate"] == 1


def test_the_same_redemption_under_a_new_message_id_grants_once(client: TestClient, ledger: Ledger) -> None:
    payload = sample_payload("channel.channel_points_custom_reward_redemption.add")
    assert post(client, payload, message_id="m-1").status_code == 200
    assert post(client, payload, message_id="m-2").status_code == 200
    [grant] = grants(ledger)
    assert grant.idempotency_key == f"twitch:{payload['event']['id']}:potion"


def test_a_viewer_following_again_and_again_is_rewarded_once_per_channel(
    twitch_settings: Settings, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    """Unfollow and refollow: new notifications, new message ids, one ``kit`` per viewer and channel, for good."""
    with TestClient(create_app(twitch_settings)) as client:
        for _ in range(3):
            assert notify(client, "channel.follow", user_id="777").status_code == 200
        assert notify(client, "channel.follow", user_id="778").status_code == 200  # another viewer
        other_channel = sample_event("channel.follow", user_id="777", broadcaster_id="9999")
        assert post(client, sample_payload("channel.follow", other_channel, broadcaster_id="9999")).status_code == 200
    first = grants(ledger)[0]
    assert [(g.external_id, g.idempotency_key) for g in grants(ledger)] == [
        ("777", "twitch:follow-1337-777:follow"),
        ("778", "twitch:follow-1337-778:follow"),
        ("777", "twitch:follow-9999-777:follow"),
    ]
    # The claim never expires, so the once holds past the 40 days other claims live, and past restarts:
    # a new app (another process, as after a deploy) finds it; so does a refollow after the grant was delivered.
    assert ttl(redis, keys.idempotency(first.idempotency_key)) == -1
    assert ledger.transition(first.id, GrantState.CANCELLED, "delivered or withdrawn: either way final")
    with TestClient(create_app(twitch_settings)) as client:
        assert notify(client, "channel.follow", user_id="777").status_code == 200
    assert len(grants(ledger)) == 3
    assert counters(redis, keys)["twitch.channel.follow.granted"] == 6  # every notification handled, 3 grants


def test_concurrent_follows_of_one_viewer_grant_once(twitch_settings: Settings, ledger: Ledger) -> None:
    """Follow, unfollow, follow within a second: the notifications race; the claim is taken in one script."""
    deliveries = [
        signed_request(SECRET, sample_payload("channel.follow", sample_event("channel.follow", user_id="4321")))
        for _ in range(12)
    ]
    assert post_together(twitch_settings, deliveries) == [200] * len(deliveries)
    [grant] = grants(ledger)
    assert grant.idempotency_key == "twitch:follow-1337-4321:follow"


def test_once_per_viewer_false_rewards_every_follow_notification(
    make_settings: SettingsFactory, tmp_path: Path, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    path = tmp_path / "every-follow.toml"
    path.write_text(RULES.replace('event = "channel.follow"', 'event = "channel.follow"\nonce_per_viewer = false'))
    with TestClient(create_app(make_settings(rewards_file=path, twitch_webhook_secret=SECRET))) as client:
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for message_id in ids:
            assert notify(client, "channel.follow", user_id="777", message_id=message_id).status_code == 200
        assert notify(client, "channel.follow", user_id="777", message_id=ids[0]).status_code == 200  # redelivery
    assert [g.idempotency_key for g in grants(ledger)] == [f"twitch:{m}:follow" for m in ids]
    assert all(ttl(redis, keys.idempotency(g.idempotency_key)) > 0 for g in grants(ledger))


def test_a_follow_without_a_channel_id_is_malformed(client: TestClient, ledger: Ledger) -> None:
    event = sample_event("channel.follow", user_id="777")
    del event["broadcaster_user_id"]
    response = post(client, sample_payload("channel.follow", event))
    assert response.status_code == 200 and response.json()["outcome"] == "unusable"
    assert "broadcaster_user_id" in response.json()["error"]
    assert grants(ledger) == []


def test_a_gift_bomb_rewards_gifter_and_recipients_once_each(client: TestClient, ledger: Ledger) -> None:
    """Rule ``sub`` has gifted = "both": the gifter's share comes from the gift event only, scaled by total."""
    assert notify(client, "channel.subscription.gift", user_id="700", total=3).status_code == 200
    for recipient in ("701", "702", "703"):
        assert notify(client, "channel.subscribe", user_id=recipient, is_gift=True).status_code == 200
    paid = sorted((g.rule, g.external_id, g.items[0].amount) for g in grants(ledger))
    assert paid == [("gift", "700", 3), ("sub", "700", 3), ("sub", "701", 1), ("sub", "702", 1), ("sub", "703", 1)]


def test_events_no_rule_wants_are_counted_not_errors(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    assert notify(client, "channel.cheer", bits=99).status_code == 200
    assert notify(client, "channel.raid", viewers=3).status_code == 200
    online = {"subscription": {"type": "stream.online", "version": "1"}, "event": {"type": "live"}}
    assert post(client, online).status_code == 200
    assert grants(ledger) == []
    seen = counters(redis, keys)
    assert seen["twitch.channel.cheer.ignored"] == 1 and seen["twitch.channel.raid.ignored"] == 1
    assert seen["twitch.stream.online.ignored"] == 1


@pytest.mark.parametrize(
    ("body", "message_type"),
    [
        (b"{not json", "notification"),
        (b"\xff\xfe", "notification"),
        (b"[1, 2]", "notification"),
        (b'{"subscription": "x", "event": {}}', "notification"),
        (b'{"subscription": {"type": 5}, "event": {}}', "notification"),
        (b'{"subscription": {"type": "channel.cheer"}, "event": {"bits": "lots", "user_id": "1"}}', "notification"),
        (b'{"subscription": {"type": "channel.follow"}, "challenge": 5}', "webhook_callback_verification"),
        (b"[" * 100_000 + b"]" * 100_000, "notification"),
    ],
)
def test_signed_bodies_the_rules_cannot_read_are_kept_answered_200_and_grant_nothing(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys, body: bytes, message_type: str
) -> None:
    """Twitch revokes a subscription whose deliveries keep failing: an odd event must not stop every reward."""
    response = post(client, body, message_type=message_type)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outcome"] == "unusable" and answer["error"], answer
    assert grants(ledger) == [] and list(redis.scan_iter(match=f"{keys.prefix}:seen:*")) == []
    kept = client.app.state.wetbot.inbox.get(answer["event_id"])  # type: ignore[attr-defined]
    assert kept is not None and kept.body == body and kept.outcome.outcome == "unusable"


def test_unknown_message_types_are_acknowledged(client: TestClient) -> None:
    assert post(client, sample_payload("channel.cheer"), message_type="something_new").status_code == 200


def test_bodies_over_one_mebibyte_are_413(client: TestClient, ledger: Ledger) -> None:
    padding = "x" * MAX_BODY_BYTES
    payload = sample_payload("channel.cheer", sample_event("channel.cheer", message=padding))
    assert post(client, payload).status_code == 413
    body, headers = signed_request(SECRET, payload)
    streamed = client.post(
        "/webhooks/twitch",
        content=iter([body[:1000], body[1000:]]),
        headers={k: v for k, v in headers.items() if k.lower() != "content-length"},
    )
    assert streamed.status_code == 413 and "content-length" not in streamed.request.headers
    assert grants(ledger) == []
    small_enough = sample_payload("channel.cheer", sample_event("channel.cheer", message="x" * (MAX_BODY_BYTES - 2000)))
    assert post(client, small_enough).status_code == 200


def test_redis_down_is_503_and_nothing_is_acknowledged(make_settings: SettingsFactory, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    settings = make_settings(redis_url="redis://127.0.0.1:1/0", rewards_file=rules, twitch_webhook_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        response = notify(client, "channel.cheer")
        assert response.status_code == 503 and "nothing was queued" in response.json()["error"]
        # Authentication and the challenge do not need Redis.
        assert post(client, sample_payload("channel.cheer"), secret="wrong-secret-12345").status_code == 403
        challenge = post(
            client,
            sample_payload("channel.follow", message_type="webhook_callback_verification"),
            message_type="webhook_callback_verification",
        )
        assert challenge.status_code == 200


# -- revocation -------------------------------------------------------------------------------------


def test_revocation_is_recorded_and_warned_once_per_message(
    client: TestClient, redis: Redis, keys: Keys, sentry_events: CapturingTransport
) -> None:
    payload = json.loads(documented("revocation.json"))
    assert post(client, payload, message_type="revocation", message_id="rev-1").status_code == 200
    assert post(client, payload, message_type="revocation", message_id="rev-1").status_code == 200
    state = cast(dict[bytes, bytes], redis.hgetall(keys.source_state(SEEN_REVOCATION_STATE, "channel.follow")))
    assert state[b"status"] == b"authorization_revoked" and state[b"message_id"] == b"rev-1"
    kinds = [event["tags"]["kind"] for event in sentry_events.events]
    assert kinds == ["twitch-revocation", "twitch-missed-period"]  # the revocation is also a gap
    event = sentry_events.events[0]
    assert event["level"] == "warning" and "channel.follow" in event["message"]
    assert post(client, payload, message_type="revocation", message_id="rev-2").status_code == 200
    assert len(sentry_events.events) == 4
    assert counters(redis, keys)["twitch.revocation"] == 2
    assert SECRET not in sentry_events.raw()


# -- identity ---------------------------------------------------------------------------------------------


def redeem_link(client: TestClient, twitch_user: str, user_input: str) -> httpx2.Response:
    event = sample_event(
        "channel.channel_points_custom_reward_redemption.add",
        user_id=twitch_user,
        reward_id=LINK_REWARD,
        user_input=user_input,
    )
    return post(client, sample_payload("channel.channel_points_custom_reward_redemption.add", event))


def test_a_link_reward_links_and_releases_what_was_parked(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    assert notify(client, "channel.cheer", user_id="555", bits=100).status_code == 200
    assert grants(ledger)[0].state == GrantState.PARKED
    assert redeem_link(client, "555", "not a discord id").status_code == 200
    assert counters(redis, keys)["twitch.link_reward.invalid_input"] == 1
    assert all(g.state == GrantState.PARKED for g in grants(ledger))  # the reward itself waits too
    assert redeem_link(client, "555", f"<@{USER}>").status_code == 200
    assert client.app.state.wetbot.links.resolve("twitch", "555") == USER  # type: ignore[attr-defined]
    made = grants(ledger)
    assert len(made) == 3 and all(g.state == GrantState.QUEUED and g.user_id == USER for g in made)


def test_a_link_reward_remembers_the_viewers_login_and_name(client: TestClient, redis: Redis, keys: Keys) -> None:
    event = sample_event(REDEMPTION, user_id="555", reward_id=LINK_REWARD, user_input=USER)
    event.update(user_login="new_viewer", user_name="New_Viewer")
    assert post(client, sample_payload(REDEMPTION, event)).status_code == 200
    assert LinkNames(redis, keys).all("twitch") == {"555": ("new_viewer", "New_Viewer")}


REDEMPTION = "channel.channel_points_custom_reward_redemption.add"
OTHER = "333333333333333333"
THIRD = "444444444444444444"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


def link_of(client: TestClient, twitch_user: str) -> str | None:
    return client.app.state.wetbot.links.resolve("twitch", twitch_user)  # type: ignore[attr-defined, no-any-return]


def refused(redis: Redis, keys: Keys) -> dict[str, int]:
    prefix = "twitch.link_reward.refused."
    return {name[len(prefix) :]: n for name, n in counters(redis, keys).items() if name.startswith(prefix)}


def test_a_redemption_never_replaces_a_static_or_operator_link(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    """The streamer's account is linked in the file; a viewer who types another Discord id takes nothing."""
    assert redeem_link(client, LINKED_TWITCH, OTHER).status_code == 200
    assert (
        client.post(
            "/links", json={"platform": "twitch", "external_id": "600", "discord_user_id": USER}, headers=OPERATOR
        ).status_code
        == 201
    )
    assert redeem_link(client, "600", f"<@{OTHER}>").status_code == 200
    assert (link_of(client, LINKED_TWITCH), link_of(client, "600")) == (USER, USER)
    assert refused(redis, keys) == {"static": 1, "operator": 1}
    # The streamer's next cheer still goes to the streamer, and each redemption's own grant where it should.
    assert notify(client, "channel.cheer", user_id=LINKED_TWITCH, bits=100).status_code == 200
    paid = [(g.rule, g.external_id, g.user_id, g.state) for g in grants(ledger)]
    assert paid == [
        ("link", LINKED_TWITCH, USER, GrantState.QUEUED),
        ("link", "600", USER, GrantState.QUEUED),
        ("cheer", LINKED_TWITCH, USER, GrantState.QUEUED),
    ]
    # Redeeming the link one already has is no refusal.
    assert redeem_link(client, "600", USER).status_code == 200
    assert refused(redis, keys) == {"static": 1, "operator": 1}


def test_a_self_made_link_is_moved_only_by_an_operator(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    assert redeem_link(client, "601", OTHER).status_code == 200
    assert redeem_link(client, "601", THIRD).status_code == 200  # the same viewer, or whoever got their account
    assert link_of(client, "601") == OTHER and refused(redis, keys) == {"self-made": 1}
    listed = client.get("/links/twitch", headers=OPERATOR).json()["links"]
    assert {"external_id": "601", "discord_user_id": OTHER, "origin": "self"} in listed
    assert all(g.user_id == OTHER for g in grants(ledger))  # both redemptions' grants went to the standing link

    moved = {"platform": "twitch", "external_id": "601", "discord_user_id": THIRD}
    assert client.post("/links", json=moved, headers=OPERATOR).status_code == 201
    assert link_of(client, "601") == THIRD
    listed = client.get("/links/twitch", headers=OPERATOR).json()["links"]
    assert {"external_id": "601", "discord_user_id": THIRD, "origin": "runtime"} in listed
    # OTHER's self-made link moved away, so OTHER may link one account by redemption again.
    assert redeem_link(client, "602", OTHER).status_code == 200
    assert link_of(client, "602") == OTHER and refused(redis, keys) == {"self-made": 1}
    # An operator's removal frees the account for a redemption again.
    assert client.delete("/links/twitch/601", headers=OPERATOR).status_code == 204
    assert redeem_link(client, "601", "555555555555555555").status_code == 200
    assert link_of(client, "601") == "555555555555555555"


@pytest.mark.parametrize("cap", [None, 3])
def test_a_discord_id_takes_at_most_max_twitch_accounts_self_made_links(
    make_settings: SettingsFactory, tmp_path: Path, ledger: Ledger, redis: Redis, keys: Keys, cap: int | None
) -> None:
    path = tmp_path / "capped.toml"
    rules = (
        RULES
        if cap is None
        else RULES.replace("[twitch.links]", f"[twitch]\nmax_twitch_accounts = {cap}\n\n[twitch.links]")
    )
    path.write_text(rules, encoding="utf-8")
    allowed = cap or 1  # the default
    with TestClient(create_app(make_settings(rewards_file=path, twitch_webhook_secret=SECRET))) as client:
        farm = [str(700 + n) for n in range(allowed + 2)]
        for account in farm:
            assert redeem_link(client, account, OTHER).status_code == 200
        assert [link_of(client, a) for a in farm] == [OTHER] * allowed + [None, None]
        # An operator may still link more accounts to that Discord id; those do not count.
        extra = {"platform": "twitch", "external_id": "799", "discord_user_id": OTHER}
        assert client.post("/links", json=extra, headers=OPERATOR).status_code == 201
    assert refused(redis, keys) == {"full": 2}
    states = {g.external_id: g.state for g in grants(ledger)}
    assert [states[a] for a in farm] == [GrantState.QUEUED] * allowed + [GrantState.PARKED] * 2


def test_concurrent_redemptions_cannot_both_pass_the_cap(
    twitch_settings: Settings, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    accounts = [str(800 + n) for n in range(10)]
    deliveries = []
    for account in accounts:
        event = sample_event(REDEMPTION, user_id=account, reward_id=LINK_REWARD, user_input=OTHER)
        deliveries.append(signed_request(SECRET, sample_payload(REDEMPTION, event)))
    assert post_together(twitch_settings, deliveries) == [200] * len(deliveries)
    linked = {
        ext.decode()
        for ext, discord in cast(dict[bytes, bytes], redis.hgetall(keys.links("twitch"))).items()
        if discord.decode() == OTHER
    }
    assert len(linked) == 1 and refused(redis, keys) == {"full": 9}
    assert sorted(g.state for g in grants(ledger)) == sorted([GrantState.QUEUED] + [GrantState.PARKED] * 9)


def test_links_stored_before_origins_were_kept_count_as_operator_links(
    client: TestClient, redis: Redis, keys: Keys
) -> None:
    redis.hset(keys.links("twitch"), "650", USER)  # how every run-time link was stored until now
    assert redeem_link(client, "650", OTHER).status_code == 200
    assert link_of(client, "650") == USER and refused(redis, keys) == {"operator": 1}
    listed = client.get("/links/twitch", headers=OPERATOR).json()["links"]
    assert {"external_id": "650", "discord_user_id": USER, "origin": "runtime"} in listed


def test_three_parked_grants_are_delivered_exactly_once_after_a_link(
    client: TestClient,
    twitch_settings: Settings,
    ledger: Ledger,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
) -> None:
    for bits in (100, 200, 300):
        assert notify(client, "channel.cheer", user_id="31337", bits=bits).status_code == 200
    assert [g.state for g in grants(ledger)] == [GrantState.PARKED] * 3
    workers(twitch_settings)
    link = {"platform": "twitch", "external_id": "31337", "discord_user_id": USER}
    response = client.post("/links", json=link, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 201 and len(response.json()["released"]) == 3
    wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED)) == 3, timeout_s=15)
    # Released together, they go out as one merged request (coalescing), each grant delivered once.
    assert [change.items for change in sim.applied()] == [(("gem", 6.0),)] and sim.inventory(GUILD, USER) == {"gem": 6}
    # A redelivery after delivery creates and sends nothing more.
    redelivered = notify(client, "channel.cheer", user_id="31337", bits=100, message_id=grants(ledger)[0].source_ref)
    assert redelivered.status_code == 200
    time.sleep(0.3)
    assert len(sim.applied()) == 1 and len(grants(ledger)) == 3


def test_idempotency_claims_outlive_twitch_redeliveries() -> None:
    assert IDEMPOTENCY_TTL_S >= MIN_DEDUPE_S


def test_concurrent_notifications_over_http_grant_once_each(
    twitch_settings: Settings, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    """A burst through the real server: notifications share create calls, redeliveries among them grant nothing.

    Eight cheers, each delivered three times at once (as Twitch may retry a
    slow answer), from 24 concurrent connections.
    """
    deliveries = []
    for n in range(8):
        event = sample_event("channel.cheer", user_id=LINKED_TWITCH, bits=100 * (n + 1))
        deliveries += [signed_request(SECRET, sample_payload("channel.cheer", event), message_id=f"burst-{n}")] * 3
    statuses = post_together(twitch_settings, deliveries)

    assert statuses == [200] * 24
    paid = sorted(grant.items[0].amount for grant in grants(ledger))
    assert paid == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(grant.user_id == USER and grant.state is GrantState.QUEUED for grant in grants(ledger))
    seen = counters(redis, keys)
    assert (seen["twitch.channel.cheer.granted"], seen["twitch.duplicate"]) == (8, 16)


# -- the message type comes from the signed body ------------------------------------------------------------


def test_a_signed_notification_resent_as_a_revocation_is_refused_and_the_genuine_one_still_grants(
    client: TestClient, ledger: Ledger
) -> None:
    """Only id, timestamp and body are signed: a replay with ``Type: revocation`` once ate the genuine cheer."""
    event = sample_event("channel.cheer")
    event.update(user_id=LINKED_TWITCH, bits=300)
    body, headers = signed_request(SECRET, sample_payload("channel.cheer", event))
    forged = {**headers, "twitch-eventsub-message-type": "revocation"}
    refused = client.post("/webhooks/twitch", content=body, headers=forged)
    assert refused.status_code == 400 and "signed body is a notification" in refused.json()["error"]
    genuine = client.post("/webhooks/twitch", content=body, headers=headers)
    assert genuine.status_code == 200 and genuine.json()["outcome"] == "granted"
    [grant] = grants(ledger)
    assert genuine.json()["granted"] == [grant.id] and grant.items[0].amount == 3


def test_a_revocation_never_marks_a_notification_seen(client: TestClient, ledger: Ledger) -> None:
    revocation = json.loads(documented("revocation.json"))
    assert post(client, revocation, message_type="revocation", message_id="shared-id").json()["outcome"] == "revocation"
    cheer = sample_event("channel.cheer")
    cheer.update(user_id=LINKED_TWITCH, bits=100)
    answer = post(client, sample_payload("channel.cheer", cheer), message_id="shared-id").json()
    assert answer["outcome"] == "granted" and len(grants(ledger)) == 1


# -- the answer says what happened; the inbox keeps it ------------------------------------------------------


def test_every_answer_says_what_happened_and_the_inbox_keeps_the_first_outcome(
    client: TestClient, ledger: Ledger
) -> None:
    inbox = client.app.state.wetbot.inbox  # type: ignore[attr-defined]
    linked = notify(client, "channel.cheer", user_id=LINKED_TWITCH, bits=200, message_id="m-linked").json()
    [grant] = grants(ledger)
    assert linked == {"event_id": linked["event_id"], "outcome": "granted", "granted": [grant.id]}
    unlinked = notify(client, "channel.cheer", user_id="999", bits=100).json()
    assert unlinked["outcome"] == "parked" and len(unlinked["parked"]) == 1 and "granted" not in unlinked
    ignored = notify(client, "channel.cheer", user_id=LINKED_TWITCH, bits=99).json()
    assert ignored["outcome"] == "ignored" and "cheer:" in ignored["ignored"]
    again = notify(client, "channel.cheer", user_id=LINKED_TWITCH, bits=200, message_id="m-linked").json()
    assert again["outcome"] == "duplicate" and again["event_id"] == linked["event_id"]
    kept = inbox.get(linked["event_id"])
    assert kept.outcome.outcome == "granted" and kept.outcome.granted == (grant.id,) and kept.deliveries == 2
    assert kept.ref == "m-linked" and "twitch-eventsub-message-signature" not in kept.headers
    assert kept.headers["twitch-eventsub-message-type"] == "notification"
    assert len(grants(ledger)) == 2


def test_an_unusable_event_is_counted_each_time_and_reported_to_sentry_once(
    client: TestClient, redis: Redis, keys: Keys, sentry_events: CapturingTransport
) -> None:
    body = b'{"subscription": {"type": "channel.cheer"}, "event": {"bits": "lots", "user_id": "1"}}'
    answers = [post(client, body, message_id="odd-1").json() for _ in range(2)]
    assert [a["outcome"] for a in answers] == ["unusable", "unusable"] and "bits" in answers[0]["error"]
    assert counters(redis, keys)["twitch.unusable"] == 2
    reports = [e for e in sentry_events.events if e.get("tags", {}).get("kind") == "twitch-unusable-event"]
    assert len(reports) == 1 and answers[0]["event_id"] in reports[0]["message"]
    assert SECRET not in sentry_events.raw()
