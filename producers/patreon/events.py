"""Patreon webhook bodies (JSON:API documents) → a small typed ``MemberEvent``.

Only the facts the rules need are kept: who (member, Patreon user, connected
Discord account), what they pledge (entitled tiers and cents), and the charge
(status and date). Everything else in the document is ignored, so new fields
Patreon adds cannot break parsing; a field we *use* that has the wrong type
makes the whole body malformed (the receiver answers 400).

Facts behind the shape: docs/patreon.md §4 (payloads, the portal test
payload, ``social_connections``). Dates are normalised to UTC
``YYYYMMDDTHHMMSSZ``: that form sorts as text in time order and is safe inside
Redis keys and idempotency keys. Sub-second parts are dropped (two charges of
one member never fall within the same second).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.domain import is_discord_id, is_platform_user_id
from config.errors import WetbotRewardsError

__all__ = [
    "MEMBER_TRIGGERS",
    "MalformedEvent",
    "MemberEvent",
    "NotAMemberEvent",
    "normalise_date",
    "parse_event",
]

#: v2 member triggers (docs/patreon.md §2). Posts and legacy v1 ``pledges:*`` carry no member.
MEMBER_TRIGGERS = frozenset(
    {
        "members:create",
        "members:update",
        "members:delete",
        "members:pledge:create",
        "members:pledge:update",
        "members:pledge:delete",
    }
)

#: Member ids are UUIDs; accept any id made of these, since they become part of Redis keys.
_MEMBER_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
#: Tier ids are digits too, but only ever compared, so anything short without separators will do.
_TIER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class MalformedEvent(WetbotRewardsError, ValueError):
    """Raised when a body is not a JSON:API document of the expected shape.

    The message names the field (``data.attributes.last_charge_date: must be
    an ISO 8601 date or null``) and never repeats the value.
    """


class NotAMemberEvent(WetbotRewardsError):
    """Raised when an authentic body carries no member (posts, legacy v1 pledges): nothing to grant."""


#: Characters of a member's full name kept.
MAX_NAME_CHARS = 100


@dataclass(frozen=True)
class MemberEvent:
    """One member webhook, reduced to what the rules decide on.

    ``member_id`` is None only for the portal's "Send Test" payload (``is_test``).
    Dates are normalised (see the module docstring); cents are US cents.
    """

    trigger: str
    member_id: str | None
    #: ``data.relationships.user.data.id``: the key of a ``patreon`` link.
    patreon_user_id: str | None
    #: ``included[type=user].attributes.social_connections.discord.user_id``, when connected.
    discord_user_id: str | None
    patron_status: str | None
    last_charge_status: str | None
    last_charge_date: str | None
    pledge_start: str | None
    entitled_cents: int | None
    will_pay_cents: int | None
    #: Sorted ids of ``currently_entitled_tiers``; None when the relationship is absent (test payloads).
    tier_ids: tuple[str, ...] | None
    #: ``amount_cents`` of each included tier, by id.
    tier_cents: dict[str, int]
    #: ``data.attributes.full_name`` (for people to search by; "" when absent or not text).
    full_name: str = ""

    @property
    def is_test(self) -> bool:
        """The portal's "Send Test" payload: ``data.id`` is null (docs/patreon.md §4)."""
        return self.member_id is None

    @property
    def level_cents(self) -> int | None:
        """How much the member is entitled to: ``currently_entitled_amount_cents``, else the best included tier."""
        if self.entitled_cents is not None:
            return self.entitled_cents
        known = [self.tier_cents[t] for t in self.tier_ids or () if t in self.tier_cents]
        return max(known) if known else None


def parse_event(trigger: str, body: bytes) -> MemberEvent:
    """Parse ``body`` (the raw bytes the signature covered) sent with ``X-Patreon-Event: trigger``.

    Raises:
      MalformedEvent: not JSON, or a field the rules use has the wrong shape.
      NotAMemberEvent: a trigger or document without a member (``posts:*``,
        legacy ``pledges:*``); the caller acknowledges and ignores it.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise MalformedEvent("body: not a JSON document") from None
    root = _object(document, "body")
    if trigger not in MEMBER_TRIGGERS:
        raise NotAMemberEvent(trigger)
    data = _object(root.get("data"), "data")
    if data.get("type") != "member":
        raise MalformedEvent("data.type: must be member for a members:* trigger")
    member_id = _optional_id(data.get("id"), "data.id", _MEMBER_ID)
    attributes = _object(data.get("attributes", {}), "data.attributes")
    relationships = _object(data.get("relationships") or {}, "data.relationships")
    included = _included(root.get("included"))
    user_id = _related_id(relationships, "user")
    if member_id is None:  # portal test payload: placeholders such as "****" where ids would be
        user_id = None
    elif user_id is None or not is_platform_user_id(user_id):
        raise MalformedEvent("data.relationships.user.data.id: must be the Patreon user id (digits)")
    return MemberEvent(
        trigger=trigger,
        member_id=member_id,
        patreon_user_id=user_id,
        discord_user_id=_discord_id(included, user_id),
        patron_status=_optional_str(attributes.get("patron_status"), "data.attributes.patron_status"),
        last_charge_status=_optional_str(attributes.get("last_charge_status"), "data.attributes.last_charge_status"),
        last_charge_date=_optional_date(attributes.get("last_charge_date"), "data.attributes.last_charge_date"),
        pledge_start=_optional_date(
            attributes.get("pledge_relationship_start"), "data.attributes.pledge_relationship_start"
        ),
        entitled_cents=_optional_cents(
            attributes.get("currently_entitled_amount_cents"), "data.attributes.currently_entitled_amount_cents"
        ),
        will_pay_cents=_optional_cents(
            attributes.get("will_pay_amount_cents"), "data.attributes.will_pay_amount_cents"
        ),
        tier_ids=_tier_ids(relationships),
        tier_cents=_tier_cents(included),
        full_name=_display_name(attributes.get("full_name")),
    )


def _display_name(value: object) -> str:
    """A name to show and search by: never a reason to refuse the event, so anything odd is dropped."""
    return " ".join(value.split())[:MAX_NAME_CHARS] if isinstance(value, str) and value.isprintable() else ""


def normalise_date(text: str) -> str:
    """ISO 8601 (``2024-04-08T09:02:11.000+00:00``) → UTC ``20240408T090211Z``; naive times count as UTC.

    Raises:
      ValueError: not an ISO 8601 date, or out of range once moved to UTC.
    """
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        utc = moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC form
        raise ValueError("date out of range") from None
    # Not ``strftime("%Y")``: it writes year 1 as ``1``, not ``0001``, and the result would neither sort
    # as text nor parse back (``rules._parse``). Four digits always: ``datetime`` stops at year 9999.
    return f"{utc.year:04d}{utc.month:02d}{utc.day:02d}T{utc.hour:02d}{utc.minute:02d}{utc.second:02d}Z"


# -- field helpers: each names its field, none repeats the value ---------------------------------


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEvent(f"{where}: must be an object")
    return value


def _optional_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MalformedEvent(f"{where}: must be text or null")


def _optional_id(value: Any, where: str, pattern: re.Pattern[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    raise MalformedEvent(f"{where}: must be an id or null")


def _optional_cents(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    raise MalformedEvent(f"{where}: must be a whole number of cents or null")


def _optional_date(value: Any, where: str) -> str | None:
    if value is None or value == "":  # Patreon once sent empty charge dates (docs/patreon.md §6.6)
        return None
    if isinstance(value, str):
        try:
            return normalise_date(value)
        except ValueError:
            pass
    raise MalformedEvent(f"{where}: must be an ISO 8601 date or null")


def _related_id(relationships: dict[str, Any], name: str) -> str | None:
    """``relationships.<name>.data.id`` when it is text, else None."""
    relation = relationships.get(name)
    data = relation.get("data") if isinstance(relation, dict) else None
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def _included(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedEvent("included: must be a list")
    for index, entry in enumerate(value):
        _object(entry, f"included[{index}]")
    return value


def _discord_id(included: list[dict[str, Any]], user_id: str | None) -> str | None:
    """The connected Discord account of the member's user, if any (docs/patreon.md §4 "Discord identity")."""
    if user_id is None:
        return None
    for entry in included:
        if entry.get("type") != "user" or entry.get("id") != user_id:
            continue
        attributes = entry.get("attributes")
        connections = attributes.get("social_connections") if isinstance(attributes, dict) else None
        discord = connections.get("discord") if isinstance(connections, dict) else None
        found = discord.get("user_id") if isinstance(discord, dict) else None
        if is_discord_id(found):
            return found
    return None


def _tier_ids(relationships: dict[str, Any]) -> tuple[str, ...] | None:
    relation = relationships.get("currently_entitled_tiers")
    if relation is None:
        return None
    where = "data.relationships.currently_entitled_tiers.data"
    entries = _object(relation, "data.relationships.currently_entitled_tiers").get("data")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise MalformedEvent(f"{where}: must be a list")
    ids = {
        _optional_id(_object(entry, f"{where}[{i}]").get("id"), f"{where}[{i}].id", _TIER_ID)
        for i, entry in enumerate(entries)
    }
    return tuple(sorted(tier for tier in ids if tier is not None))


def _tier_cents(included: list[dict[str, Any]]) -> dict[str, int]:
    """Included tiers with a usable ``amount_cents``; tiers are informative only, so odd ones are skipped."""
    out: dict[str, int] = {}
    for entry in included:
        attributes = entry.get("attributes")
        tier_id = entry.get("id")
        if entry.get("type") != "tier" or not isinstance(tier_id, str) or not isinstance(attributes, dict):
            continue
        cents = attributes.get("amount_cents")
        if isinstance(cents, int) and not isinstance(cents, bool) and cents >= 0:
            out[tier_id] = cents
    return out
