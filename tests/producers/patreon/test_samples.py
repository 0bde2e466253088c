"""Patreon's webhook sample bodies, kept with the tests (docs/patreon.md §7 says where each comes from).

``DIGESTS`` pins each copy's bytes, so an edited or added sample fails here rather than quietly changing
what the webhook tests check.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SAMPLES = Path(__file__).parent / "data"
#: SHA-256 of each sample file as copied from its source.
DIGESTS = {
    "members_create.json": "7f3ef26118533073eabf5c5063cc106b1ef33e9fa618b223e047d36616d6c428",
    "members_pledge_create.json": "850c1d1608281717af7524d8a5caa7f492e7f0b1fbf5a8108d45e3b680bbbcda",
    "members_pledge_create_discord_linked.json": "56e6f91063bb0b93ecf9bf2fda9af974173ebcc091a45116b2bee1f4b591d4f8",
    "members_pledge_create_portal_test.json": "95e2f1f86cb024d4d35d55ac68424e8cf87d77bb5a78422752b559b65c1ad2ae",
    "members_pledge_delete.json": "f609af61887d6bdeb20d3b609d1430d0dc985983d9b107d4e3a0c8d117ab7f5b",
    "members_pledge_delete_cancelled.json": "855bd66c197e2e07721377dc2ea30dce77eb6f569a377e8884e20ebf542b54e0",
    "members_pledge_update.json": "0f71209ea069a59377948a53a50468c50744de96e3b63d26e7159ac1e07d6b56",
    "members_pledge_update_upgrade.json": "aee7622735d30e18e9b089c41448673f186104ac13757986933742212def89d9",
    "members_update_declined.json": "c84aa8a855b2c814269ef0e5ce54baeb493dd9a52272b6b7b60629b162ee6b94",
    "members_update_renewal_paid.json": "510fc3a307194e705927a1b99b9d1ec20942eacd230e8fc0d010dcb238d18150",
    "posts_publish.json": "c1526aadd870c4ff2c2ac7a0e296032d02f0e9257c47627e384febb0e790201f",
}


def test_the_copies_are_the_pinned_bytes() -> None:
    found = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in SAMPLES.iterdir()}
    assert found == DIGESTS


def test_every_sample_is_json() -> None:
    for path in SAMPLES.iterdir():
        assert isinstance(json.loads(path.read_bytes()), dict), path.name
