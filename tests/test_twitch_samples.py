"""Twitch's documented EventSub samples and the published signature vectors, kept with the tests.

Copied verbatim from the research samples (``/work/shared/samples/twitch``, see research/twitch.md §2-3)
so the suite runs in a fresh clone; ``test_copies_match_the_research_samples`` checks the copies
whenever the originals are present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

RESEARCH_SAMPLES = Path("/work/shared/samples/twitch")

#: File name -> exact text.
DOCUMENTED: dict[str, str] = {
    "channel.channel_points_custom_reward_redemption.add.json": (
        "{\n"
        '    "subscription": {\n'
        '        "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",\n'
        '        "type": "channel.channel_points_custom_reward_redemption.add",\n'
        '        "version": "1",\n'
        '        "status": "enabled",\n'
        '        "cost": 0,\n'
        '        "condition": {\n'
        '            "broadcaster_user_id": "1337",\n'
        '            "reward_id": "92af127c-7326-4483-a52b-b0da0be61c01"\n'
        "        },\n"
        '        "transport": {\n'
        '            "method": "webhook",\n'
        '            "callback": "https://example.com/webhooks/callback"\n'
        "        },\n"
        '        "created_at": "2019-11-16T10:11:12.634234626Z"\n'
        "    },\n"
        '    "event": {\n'
        '        "id": "17fa2df1-ad76-4804-bfa5-a40ef63efe63",\n'
        '        "broadcaster_user_id": "1337",\n'
        '        "broadcaster_user_login": "cool_user",\n'
        '        "broadcaster_user_name": "Cool_User",\n'
        '        "user_id": "9001",\n'
        '        "user_login": "cooler_user",\n'
        '        "user_name": "Cooler_User",\n'
        '        "user_input": "pogchamp",\n'
        '        "status": "unfulfilled",\n'
        '        "reward": {\n'
        '            "id": "92af127c-7326-4483-a52b-b0da0be61c01",\n'
        '            "title": "title",\n'
        '            "cost": 100,\n'
        '            "prompt": "reward prompt"\n'
        "        },\n"
        '        "redeemed_at": "2020-07-15T17:16:03.17106713Z"\n'
        "    }\n"
        "}\n"
    ),
    "channel.cheer.json": (
        "{\n"
        '    "subscription": {\n'
        '        "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",\n'
        '        "type": "channel.cheer",\n'
        '        "version": "1",\n'
        '        "status": "enabled",\n'
        '        "cost": 0,\n'
        '        "condition": {\n'
        '            "broadcaster_user_id": "1337"\n'
        "        },\n"
        '        "transport": {\n'
        '            "method": "webhook",\n'
        '            "callback": "https://example.com/webhooks/callback"\n'
        "        },\n"
        '        "created_at": "2019-11-16T10:11:12.634234626Z"\n'
        "    },\n"
        '    "event": {\n'
        '        "is_anonymous": false,\n'
        '        "user_id": "1234",\n'
        '        "user_login": "cool_user",\n'
        '        "user_name": "Cool_User",\n'
        '        "broadcaster_user_id": "1337",\n'
        '        "broadcaster_user_login": "cooler_user",\n'
        '        "broadcaster_user_name": "Cooler_User",\n'
        '        "message": "pogchamp",\n'
        '        "bits": 1000\n'
        "    }\n"
        "}\n"
    ),
    "channel.follow.json": (
        "{\n"
        '    "subscription": {\n'
        '        "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",\n'
        '        "type": "channel.follow",\n'
        '        "version": "2",\n'
        '        "status": "enabled",\n'
        '        "cost": 0,\n'
        '        "condition": {\n'
        '            "broadcaster_user_id": "1337",\n'
        '            "moderator_user_id": "1337"\n'
        "        },\n"
        '        "transport": {\n'
        '            "method": "webhook",\n'
        '            "callback": "https://example.com/webhooks/callback"\n'
        "        },\n"
        '        "created_at": "2019-11-16T10:11:12.634234626Z"\n'
        "    },\n"
        '    "event": {\n'
        '        "user_id": "1234",\n'
        '        "user_login": "cool_user",\n'
        '        "user_name": "Cool_User",\n'
        '        "broadcaster_user_id": "1337",\n'
        '        "broadcaster_user_login": "cooler_user",\n'
        '        "broadcaster_user_name": "Cooler_User",\n'
        '        "followed_at": "2020-07-15T18:16:11.17106713Z"\n'
        "    }\n"
        "}\n"
    ),
    "channel.raid.json": (
        "{\n"
        '    "subscription": {\n'
        '        "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",\n'
        '        "type": "channel.raid",\n'
        '        "version": "1",\n'
        '        "status": "enabled",\n'
        '        "cost": 0,\n'
        '        "condition": {\n'
        '            "to_broadcaster_user_id": "1337"\n'
        "        },\n"
        '        "transport": {\n'
        '            "method": "webhook",\n'
        '            "callback": "https://example.com/webhooks/callback"\n'
        "        },\n"
        '        "created_at": "2019-11-16T10:11:12.634234626Z"\n'
        "    },\n"
        '    "event": {\n'
        '        "from_broadcaster_user_id": "1234",\n'
        '        "from_broadcaster_user_login": "cool_user",\n'
        '        "from_broadcaster_user_name": "Cool_User",\n'
        '        "to_broadcaster_user_id": "1337",\n'
        '        "to_broadcaster_user_login": "cooler_user",\n'
        '        "to_broadcaster_user_name": "Cooler_User",\n'
        '        "viewers": 9001\n'
        "    }\n"
        "}\n"
    ),
    "channel.subscribe.json": (
        "{\n"
        '    "subscription": {\n'
        '        "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",\n'
        '        "type": "channel.subscribe",\n'
        '        "version": "1",\n'
        '        "status": "enabled",\n'
        '        "cost": 0,\n'
        '        "condition": {\n'
        '            "broadcaster_user_id": "1337"\n'
        "        },\n"
        '        "transport": {\n'
        '            "method": "webhook",\n'
        '            "callback": "https://example.com/webhooks/callback"\n'
        "        },\n"
        '        "created_at": "2019-11-16T10:11:12.634234626Z"\n'
        "    },\n"
        '    "event": {\n'
        '        "user_id": "1234",\n'
        '        "user_login": "cool_user",\n'
        '        "user_name": "Cool_User",\n'
        '        "broadcaster_user_id": "1337",\n'
        '        "broadcaster_user_login": "cooler_user",\n'
        '        "broadcaster_user_name": "Cooler_User",\n'
        '        "tier": "1000",\n'
        '        "is_gift": false\n'
        "    }\n"
        "}\n"
    ),
    "channel.subscription.gift.json": (
        "{\n"
        '    "subscription": {\n'
        '        "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",\n'
        '        "type": "channel.subscription.gift",\n'
        '        "version": "1",\n'
        '        "status": "enabled",\n'
        '        "cost": 0,\n'
        '        "condition": {\n'
        '            "broadcaster_user_id": "1337"\n'
        "        },\n"
        '        "transport": {\n'
        '            "method": "webhook",\n'
        '            "callback": "https://example.com/webhooks/callback"\n'
        "        },\n"
        '        "created_at": "2019-11-16T10:11:12.634234626Z"\n'
        "    },\n"
        '    "event": {\n'
        '        "user_id": "1234",\n'
        '        "user_login": "cool_user",\n'
        '        "user_name": "Cool_User",\n'
        '        "broadcaster_user_id": "1337",\n'
        '        "broadcaster_user_login": "cooler_user",\n'
        '        "broadcaster_user_name": "Cooler_User",\n'
        '        "total": 2,\n'
        '        "tier": "1000",\n'
        '        "cumulative_total": 284,\n'
        '        "is_anonymous": false\n'
        "    }\n"
        "}\n"
    ),
    "channel.subscription.message.json": (
        "{\n"
        '    "subscription": {\n'
        '        "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",\n'
        '        "type": "channel.subscription.message",\n'
        '        "version": "1",\n'
        '        "status": "enabled",\n'
        '        "cost": 0,\n'
        '        "condition": {\n'
        '            "broadcaster_user_id": "1337"\n'
        "        },\n"
        '        "transport": {\n'
        '            "method": "webhook",\n'
        '            "callback": "https://example.com/webhooks/callback"\n'
        "        },\n"
        '        "created_at": "2019-11-16T10:11:12.634234626Z"\n'
        "    },\n"
        '    "event": {\n'
        '        "user_id": "1234",\n'
        '        "user_login": "cool_user",\n'
        '        "user_name": "Cool_User",\n'
        '        "broadcaster_user_id": "1337",\n'
        '        "broadcaster_user_login": "cooler_user",\n'
        '        "broadcaster_user_name": "Cooler_User",\n'
        '        "tier": "1000",\n'
        '        "message": {\n'
        '            "text": "Love the stream! FevziGG",\n'
        '            "emotes": [\n'
        "                {\n"
        '                    "begin": 23,\n'
        '                    "end": 30,\n'
        '                    "id": "302976485"\n'
        "                }\n"
        "            ]\n"
        "        },\n"
        '        "cumulative_months": 15,\n'
        '        "streak_months": 1,\n'
        '        "duration_months": 6\n'
        "    }\n"
        "}\n"
    ),
    "notification.channel.follow.v1.json": (
        '{"subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"enabled",'
        '"type":"channel.follow","version":"1","cost":1,"condition":{"broadcaster_user_id'
        '":"12826"},"transport":{"method":"webhook","callback":"https://example.com/webho'
        'oks/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"},"event":{"user_id"'
        ':"1337","user_login":"awesome_user","user_name":"Awesome_User","broadcaster_user'
        '_id":"12826","broadcaster_user_login":"twitch","broadcaster_user_name":"Twitch",'
        '"followed_at":"2020-07-15T18:16:11.17106713Z"}}\n'
    ),
    "revocation.json": (
        '{"subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"authoriza'
        'tion_revoked","type":"channel.follow","cost":1,"version":"1","condition":{"broad'
        'caster_user_id":"12826"},"transport":{"method":"webhook","callback":"https://exa'
        'mple.com/webhooks/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"}}\n'
    ),
    "signature_test_vectors.json": (
        "[\n"
        "  {\n"
        '    "name": "notification channel.follow v1 (twitch-cli generated)",\n'
        '    "source": "twitch-rs/twitch_api src/eventsub/mod.rs test verify_request",\n'
        '    "secret": "secretabcd",\n'
        '    "headers": {\n'
        '      "Twitch-Eventsub-Message-Id": "ae2ff348-e102-16be-a3eb-6830c1bf38d2",\n'
        '      "Twitch-Eventsub-Message-Retry": "0",\n'
        '      "Twitch-Eventsub-Message-Timestamp": "2021-02-19T23:47:00.8091512Z",\n'
        '      "Twitch-Eventsub-Message-Type": "notification",\n'
        '      "Twitch-Eventsub-Subscription-Type": "channel.follow",\n'
        '      "Twitch-Eventsub-Subscription-Version": "1"\n'
        "    },\n"
        '    "body": "{\\"subscription\\":{\\"id\\":\\"ae2ff348-e102-16be-a3eb-6830c1bf38d2\\",'
        '\\"status\\":\\"enabled\\",\\"type\\":\\"channel.follow\\",\\"version\\":\\"1\\",\\"condition'
        '\\":{\\"broadcaster_user_id\\":\\"44429626\\"},\\"transport\\":{\\"method\\":\\"webhook\\",'
        '\\"callback\\":\\"null\\"},\\"created_at\\":\\"2021-02-19T23:47:00.7621315Z\\"},\\"event\\'
        '":{\\"user_id\\":\\"28408015\\",\\"user_login\\":\\"testFromUser\\",\\"user_name\\":\\"test'
        'FromUser\\",\\"broadcaster_user_id\\":\\"44429626\\",\\"broadcaster_user_login\\":\\"444'
        '29626\\",\\"broadcaster_user_name\\":\\"testBroadcaster\\"}}",\n'
        '    "expected_signature": "sha256=d10f5bd9474b7ac7bd7105eb79c2d52768b4d0cd2a1359'
        '82c3bf5a1d59a78823",\n'
        '    "body_utf8_length": 458\n'
        "  },\n"
        "  {\n"
        '    "name": "webhook_callback_verification channel.subscribe v1 (twitch-cli gene'
        'rated)",\n'
        '    "source": "twitch-rs/twitch_api src/eventsub/mod.rs test verify_request_chal'
        'lenge",\n'
        '    "secret": "HELLOabc2321",\n'
        '    "headers": {\n'
        '      "Twitch-Eventsub-Message-Id": "8d8fa82b-9792-79da-4e11-a6fa58a7a582",\n'
        '      "Twitch-Eventsub-Message-Retry": "0",\n'
        '      "Twitch-Eventsub-Message-Timestamp": "2022-02-06T04:03:24.2726598Z",\n'
        '      "Twitch-Eventsub-Message-Type": "webhook_callback_verification",\n'
        '      "Twitch-Eventsub-Subscription-Type": "channel.subscribe",\n'
        '      "Twitch-Eventsub-Subscription-Version": "1"\n'
        "    },\n"
        '    "body": "{\\"challenge\\":\\"11535768-497e-14ec-8197-ba2cb5341a01\\",\\"subscript'
        'ion\\":{\\"id\\":\\"8d8fa82b-9792-79da-4e11-a6fa58a7a582\\",\\"status\\":\\"webhook_call'
        'back_verification_pending\\",\\"type\\":\\"channel.subscribe\\",\\"version\\":\\"1\\",\\"c'
        'ondition\\":{\\"broadcaster_user_id\\":\\"88525095\\"},\\"transport\\":{\\"method\\":\\"we'
        'bhook\\",\\"callback\\":\\"http://localhost:80/twitch/eventsub\\"},\\"created_at\\":\\"2'
        '022-02-06T04:03:24.2706497Z\\",\\"cost\\":0}}",\n'
        '    "expected_signature": "sha256=091f6a5c74fba820f2d50e9d0c5e7650556ee009375af2'
        'cc662e610e670bc412",\n'
        '    "body_utf8_length": 385\n'
        "  }\n"
        "]\n"
    ),
    "webhook_callback_verification.json": (
        '{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-1'
        '61a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending","ty'
        'pe":"channel.follow","version":"1","cost":1,"condition":{"broadcaster_user_id":"'
        '12826"},"transport":{"method":"webhook","callback":"https://example.com/webhooks'
        '/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"}}\n'
    ),
}


def documented(name: str) -> bytes:
    """The exact bytes of a documented sample, e.g. ``documented("channel.cheer.json")``."""
    return DOCUMENTED[name].encode()


def signature_vectors() -> list[dict[str, Any]]:
    """The two published (secret, headers, body) -> signature vectors."""
    vectors: list[dict[str, Any]] = json.loads(DOCUMENTED["signature_test_vectors.json"])
    return vectors


@pytest.mark.skipif(not RESEARCH_SAMPLES.is_dir(), reason="research samples not on this machine")
def test_copies_match_the_research_samples() -> None:
    originals = {path.name: path.read_text(encoding="utf-8") for path in RESEARCH_SAMPLES.iterdir()}
    assert originals == DOCUMENTED


def test_every_sample_is_json() -> None:
    for name, text in DOCUMENTED.items():
        assert isinstance(json.loads(text), dict | list), name
