"""Twitch's documented EventSub samples and the published signature vectors, kept with the tests.

``tests/producers/twitch/data`` holds verbatim copies of the samples docs/twitch.md §2-3 quotes (from
https://dev.twitch.tv/docs/eventsub/handling-webhook-events/ and the EventSub subscription reference), so
the suite runs in any clone. ``DIGESTS`` pins each copy's bytes: an edited or added sample fails here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).parent / "data"
#: SHA-256 of each sample file as copied from Twitch's documentation.
DIGESTS = {
    "channel.channel_points_custom_reward_redemption.add.json": (
        "934768fc9d8b9e1eab4072907bb69a1a878b52f73ad8e85f09572550c090157e"
    ),
    "channel.cheer.json": "a0b4406317dbcb68e65095b2f72b9bc4e5d8dd0de03008ece9eda768ea24135f",
    "channel.follow.json": "7d17a820662bfe64d7cac2ab47ed253ea0a34300b9c9d667979604888cdc5d8b",
    "channel.raid.json": "b74cc495cd3decdc254774b515f14016f5e6c8cd917d9c6fd3dead930cfcb2c2",
    "channel.subscribe.json": "93fbe9e69af78980aff1675a02b06b1ba7a4a1849a010a461259c92aa1867de1",
    "channel.subscription.gift.json": "1dd1d16f8c5f91197a2fa86db571aa9c76aac816eb8a9ee7ad193118f5e42e1b",
    "channel.subscription.message.json": "09a9288db8837c857e77b41d23e18423fa5be5a8a194f51b61d19db4b85f2a25",
    "notification.channel.follow.v1.json": "babd475f745644fcd5dc73de630eca0c156b407146a5910f7eda02e93e1013aa",
    "revocation.json": "d4d950cb9d9bdbe383f0e6f153f5ec4ec76460403f1ade3a9a594ae31749ad68",
    "signature_test_vectors.json": "2cd304273787e148bf5500b4169114e2dabe34d8c2fd5eeae799ac6d4731df5c",
    "webhook_callback_verification.json": "209d67c80dbfb8d78c504728d67686aa6d181095392c5523a588173e2595a095",
}


def documented(name: str) -> bytes:
    """The exact bytes of a documented sample, e.g. ``documented("channel.cheer.json")``."""
    return (SAMPLES / name).read_bytes()


def signature_vectors() -> list[dict[str, Any]]:
    """The two published (secret, headers, body) -> signature vectors."""
    vectors: list[dict[str, Any]] = json.loads(documented("signature_test_vectors.json"))
    return vectors


def _contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_the_copies_are_the_documented_bytes() -> None:
    assert {name: hashlib.sha256(raw).hexdigest() for name, raw in _contents(SAMPLES).items()} == DIGESTS


def test_every_sample_is_json() -> None:
    for name, raw in _contents(SAMPLES).items():
        assert isinstance(json.loads(raw), dict | list), name
