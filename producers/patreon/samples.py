"""Patreon webhook bodies for ``patreon send-test`` and the tests, modelled on Patreon's documented payloads.

The shape follows the real captures (docs/patreon.md §4): a ``member`` with
its attributes, ``currently_entitled_tiers`` and ``user`` relationships, and
``included`` campaign, user (with ``social_connections``) and tier objects.
Ids are fictional. ``encode`` writes what Patreon sends on the wire: compact
JSON, sorted keys, non-ASCII escaped (docs/patreon.md §1, "Wire format").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CAMPAIGN_ID",
    "MEMBER_ID",
    "PLEDGE_START",
    "TIER_ID",
    "USER_ID",
    "Member",
    "encode",
    "now_iso",
    "portal_test",
]

MEMBER_ID = "0c9a3f7e-1b2d-4e5f-8a6b-7c8d9e0f1a2b"
USER_ID = "11223344"
CAMPAIGN_ID = "9441253"
TIER_ID = "9512103"
#: Every sample pledge started here, so a create, its renewals and its deletion name the same pledge.
PLEDGE_START = "2024-03-08T08:23:58.615+00:00"


def now_iso() -> str:
    """The current time as Patreon writes dates (``2024-04-08T09:02:11.000+00:00``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")


@dataclass(frozen=True)
class Member:
    """One patron's state; ``document()`` turns it into a webhook body."""

    member_id: str = MEMBER_ID
    user_id: str = USER_ID
    discord_id: str | None = None
    status: str | None = "Paid"
    charge_date: str | None = "2024-03-08T08:24:05.000+00:00"
    pledge_start: str | None = PLEDGE_START
    #: Entitled tiers and their amounts; none entitled means 0 cents and an empty tier list.
    tiers: tuple[tuple[str, int], ...] = ((TIER_ID, 500),)
    will_pay_cents: int | None = None
    patron_status: str | None = None

    def document(self) -> dict[str, Any]:
        """The JSON:API document of a ``members:*`` webhook for this member."""
        cents = max((amount for _, amount in self.tiers), default=0)
        declined = self.status in ("Declined", "Fraud", "Refunded")
        attributes = {
            "campaign_lifetime_support_cents": cents,
            "currently_entitled_amount_cents": cents,
            "email": "patron@example.com",
            "full_name": "Test Patron",
            "is_follower": False,
            "last_charge_date": self.charge_date,
            "last_charge_status": self.status,
            "lifetime_support_cents": cents,
            "next_charge_date": None,
            "note": "",
            "patron_status": self.patron_status or ("declined_patron" if declined else "active_patron"),
            "pledge_cadence": 1,
            "pledge_relationship_start": self.pledge_start,
            "will_pay_amount_cents": cents if self.will_pay_cents is None else self.will_pay_cents,
        }
        user = {
            "attributes": {
                "full_name": "Test Patron",
                "social_connections": {
                    "discord": None if self.discord_id is None else {"url": None, "user_id": self.discord_id},
                    "twitch": None,
                    "youtube": None,
                },
                "url": f"https://www.patreon.com/user?u={self.user_id}",
            },
            "id": self.user_id,
            "type": "user",
        }
        tiers = [
            {
                "attributes": {
                    "amount_cents": amount,
                    "discord_role_ids": None,
                    "published": True,
                    "title": f"Tier {tier_id}",
                },
                "id": tier_id,
                "type": "tier",
            }
            for tier_id, amount in self.tiers
        ]
        campaign = {"attributes": {"is_monthly": True, "vanity": "sample"}, "id": CAMPAIGN_ID, "type": "campaign"}
        return {
            "data": {
                "attributes": attributes,
                "id": self.member_id,
                "relationships": {
                    "address": {"data": None},
                    "campaign": {"data": {"id": CAMPAIGN_ID, "type": "campaign"}},
                    "currently_entitled_tiers": {"data": [{"id": t, "type": "tier"} for t, _ in self.tiers]},
                    "user": {"data": {"id": self.user_id, "type": "user"}},
                },
                "type": "member",
            },
            "included": [campaign, user, *tiers],
            "links": {"self": f"https://www.patreon.com/api/oauth2/v2/members/{self.member_id}"},
        }


def portal_test() -> dict[str, Any]:
    """The portal's "Send Test" shape: ``data.id`` null, no tiers, placeholder ids (docs/patreon.md §4)."""
    return {
        "data": {
            "attributes": {
                "access_expires_at": None,
                "campaign_currency": "USD",
                "campaign_pledge_amount_cents": 200,
                "full_name": "FIRST LAST",
                "is_follower": False,
                "last_charge_date": "2014-04-01T00:00:00.000+00:00",
                "last_charge_status": "Paid",
                "patron_status": "active_patron",
                "pledge_amount_cents": 200,
                "pledge_relationship_start": "2014-03-14T00:00:00.000+00:00",
            },
            "id": None,
            "relationships": {
                "campaign": {"data": {"id": "******", "type": "campaign"}},
                "user": {"data": {"id": "***********", "type": "user"}},
            },
            "type": "member",
        },
        "included": [],
    }


def encode(document: dict[str, Any]) -> bytes:
    """Wire bytes as Patreon sends them: compact, sorted keys, ASCII with ``\\uXXXX`` escapes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
