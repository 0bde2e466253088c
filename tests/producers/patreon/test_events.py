"""Parsing Patreon webhook bodies: the documented samples, the portal test payload, malformed bodies, signatures."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.rewards import parse_rewards
from producers.patreon.events import (
    MEMBER_TRIGGERS,
    MalformedEvent,
    MemberEvent,
    NotAMemberEvent,
    normalise_date,
    parse_event,
)
from producers.patreon.rules import MemberMemory, decide
from producers.patreon.samples import Member, encode, portal_test
from producers.patreon.webhook import signature
from tests.conftest import GUILD

#: The documented samples (docs/patreon.md §7), copied byte for byte into the repository.
SAMPLES = Path(__file__).parent / "data"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_signature_matches_the_published_test_vectors() -> None:
    # docs/patreon.md §1, test vector 1 (ghostrider-05/patreon-api.ts, recomputed there).
    assert signature("secret", b"testing") == "a964f51f0ae9c643aca91bfbc66f6d78"
    assert signature("secret", b'{"data":{"type":"post"}}') == "607ab2394f5c0de6f35b1aabecd0c851"


def test_the_discord_linked_sample_parses_to_its_facts() -> None:
    event = parse_event("members:pledge:create", sample("members_pledge_create_discord_linked.json"))
    assert event == MemberEvent(
        trigger="members:pledge:create",
        member_id="0c9a3f7e-1b2d-4e5f-8a6b-7c8d9e0f1a2b",
        patreon_user_id="11223344",
        discord_user_id="123456789012345678",
        patron_status="active_patron",
        last_charge_status="Paid",
        last_charge_date="20240308T082405Z",
        pledge_start="20240308T082358Z",
        entitled_cents=500,
        will_pay_cents=500,
        tier_ids=("9512103",),
        tier_cents={"9512103": 500},
        full_name="Test Patron",
    )
    assert not event.is_test and event.level_cents == 500


@pytest.mark.parametrize(
    ("name", "trigger", "discord", "tiers", "status"),
    [
        ("members_pledge_update.json", "members:pledge:update", None, ("9512023", "9512103"), "Paid"),
        ("members_pledge_create.json", "members:pledge:create", None, ("9512023", "9512103"), "Paid"),
        ("members_pledge_delete.json", "members:pledge:delete", None, ("9512023", "9512103"), "Paid"),
        ("members_create.json", "members:create", None, (), None),
        ("members_update_renewal_paid.json", "members:update", "123456789012345678", ("9512103",), "Paid"),
        ("members_update_declined.json", "members:update", "123456789012345678", (), "Declined"),
        ("members_pledge_update_upgrade.json", "members:pledge:update", "123456789012345678", ("9512023",), "Paid"),
        ("members_pledge_delete_cancelled.json", "members:pledge:delete", "123456789012345678", ("9512103",), "Paid"),
    ],
)
def test_every_documented_member_sample_parses(
    name: str, trigger: str, discord: str | None, tiers: tuple[str, ...], status: str | None
) -> None:
    event = parse_event(trigger, sample(name))
    assert (event.discord_user_id, event.tier_ids, event.last_charge_status) == (discord, tiers, status)
    assert event.member_id and event.patreon_user_id and event.patreon_user_id.isdigit()


def test_the_portal_test_sample_is_recognised_as_a_test() -> None:
    event = parse_event("members:pledge:create", sample("members_pledge_create_portal_test.json"))
    assert event.is_test and event.tier_ids is None and event.patreon_user_id is None


def test_posts_and_legacy_pledges_carry_no_member() -> None:
    with pytest.raises(NotAMemberEvent):
        parse_event("posts:publish", sample("posts_publish.json"))
    with pytest.raises(NotAMemberEvent):
        parse_event("pledges:create", b'{"data": {"type": "pledge", "id": "1"}}')


def test_the_builder_matches_the_parser() -> None:
    member = Member(discord_id="123456789012345678", status="Pending", charge_date="2024-04-08T09:02:11Z")
    event = parse_event("members:update", encode(member.document()))
    assert (event.discord_user_id, event.last_charge_status, event.last_charge_date) == (
        "123456789012345678",
        "Pending",
        "20240408T090211Z",
    )
    assert parse_event("members:pledge:create", encode(portal_test())).is_test


def test_dates_normalise_to_utc_and_sort_as_text() -> None:
    assert normalise_date("2024-04-08T09:02:11.000+00:00") == "20240408T090211Z"
    assert normalise_date("2024-04-08T11:02:11.999+02:00") == "20240408T090211Z"
    assert normalise_date("2024-04-08T09:02:11") == "20240408T090211Z"
    assert normalise_date("2023-12-31T23:59:59Z") < normalise_date("2024-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="out of range"):
        normalise_date("0001-01-01T00:00:00+01:00")
    assert normalise_date("0001-01-01T00:00:00+00:00") == "00010101T000000Z"  # four digits, not ``1``
    assert normalise_date("0999-12-31T23:59:59Z") < normalise_date("1000-01-01T00:00:00Z")
    assert normalise_date("9999-12-31T23:59:59+14:00") == "99991231T095959Z"


#: A rule of every kind, so ``decide`` takes every branch that compares or parses a date.
_RULE_KINDS: list[tuple[str, dict[str, Any]]] = [
    ("welcome", {"event": "members:pledge:create", "revoke_on": ["members:pledge:delete"]}),
    ("paid", {"event": "members:pledge:create", "require_paid": True}),
    ("monthly", {"event": "renewal"}),
    ("upgrade", {"event": "members:pledge:update", "upgrade_only": True}),
]
RULES = parse_rewards(
    {
        "guild_id": GUILD,
        "patreon": {"rules": [{"name": n, "items": [{"id": "gem", "amount": 1}], **spec} for n, spec in _RULE_KINDS]},
    }
).patreon.rules

#: Dates at the edges: the first and last years, the widest offsets and beyond, leap seconds, odd forms.
EDGE_DATES = [
    "0001-01-01T00:00:00", "0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00-14:00", "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59.999999Z",
    "2024-01-01T00:00:00+23:59", "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00+99:99",
    "2024-01-01T00:00:00+00:00:00.000001", "2016-12-31T23:59:60Z", "2016-12-31T23:59:60.5+00:00",
    "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-W01-1", "20240101T000000",
    "2024-01-01", "2024", "", " ", "\x00", "\ud800", "2024-01-01T00:00:00\u200f",
    "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0660\u0661",  # Arabic-Indic digits
]  # fmt: skip


def _with_offset(moment: datetime, minutes: int | None) -> str:
    """``moment`` in ISO 8601 with an offset of ``minutes`` (None: naive), valid or far beyond ±24 h."""
    if minutes is None:
        return moment.isoformat()
    return f"{moment.isoformat()}{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


dates = (
    st.sampled_from(EDGE_DATES)
    | st.text(max_size=40)
    | st.builds(_with_offset, st.datetimes(), st.none() | st.integers(min_value=-100 * 60, max_value=100 * 60))
)


@settings(max_examples=400, deadline=None)
@given(
    date=dates,
    field=st.sampled_from(["last_charge_date", "pledge_relationship_start"]),
    trigger=st.sampled_from(sorted(MEMBER_TRIGGERS)),
)
def test_any_date_parses_and_decides_or_is_a_malformed_field(date: str, field: str, trigger: str) -> None:
    """A date the rules use either parses to a form the rules can use, or makes the body malformed."""
    try:
        event = parse_event(trigger, mutate(["data", "attributes", field], date))
    except MalformedEvent as exc:
        assert field in str(exc)
        return
    parsed = event.last_charge_date if field == "last_charge_date" else event.pledge_start
    if date == "":  # Patreon once sent empty charge dates: no date, not a malformed one
        assert parsed is None
        return
    assert parsed is not None and re.fullmatch(r"[0-9]{8}T[0-9]{6}Z", parsed)
    assert datetime.strptime(parsed, "%Y%m%dT%H%M%SZ")  # what the rules parse back
    for memory in (MemberMemory(), MemberMemory(charge_date=parsed, pledge_start=parsed, cents=500)):
        decide(event, memory, RULES)  # never raises: every branch compares or parses the date


def mutate(path: list[str], value: Any) -> bytes:
    document = Member().document()
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return encode(document)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{not json", "body"),
        (b"\xff\xfe\x00", "body"),
        (b"[" * 100_000, "body"),  # deeper than the JSON parser's recursion limit
        (b"[]", "body"),
        (b'{"data": []}', "data"),
        (b'{"data": {"type": "post"}}', "data.type"),
        (mutate(["data", "id"], 5), "data.id"),
        (mutate(["data", "id"], "has:colons"), "data.id"),
        (mutate(["data", "attributes"], "x"), "data.attributes"),
        (mutate(["data", "attributes", "last_charge_date"], "last tuesday"), "last_charge_date"),
        (mutate(["data", "attributes", "last_charge_status"], 3), "last_charge_status"),
        (mutate(["data", "attributes", "currently_entitled_amount_cents"], "500"), "currently_entitled"),
        (mutate(["data", "attributes", "currently_entitled_amount_cents"], True), "currently_entitled"),
        (mutate(["data", "attributes", "will_pay_amount_cents"], -1), "will_pay"),
        (mutate(["data", "relationships", "user"], None), "user.data.id"),
        (mutate(["data", "relationships", "currently_entitled_tiers"], {"data": {}}), "currently_entitled_tiers"),
        (mutate(["included"], {}), "included"),
        (mutate(["included"], [1]), "included[0]"),
    ],
)
def test_malformed_bodies_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(MalformedEvent, match=re.escape(field)):
        parse_event("members:update", body)


def test_an_unusable_discord_id_counts_as_not_connected() -> None:
    document = Member(discord_id="123456789012345678").document()
    document["included"][1]["attributes"]["social_connections"]["discord"]["user_id"] = "12"
    assert parse_event("members:update", encode(document)).discord_user_id is None
    document["included"][1]["attributes"]["social_connections"] = None
    assert parse_event("members:update", encode(document)).discord_user_id is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    path=st.sampled_from(
        [
            ["data"],
            ["data", "attributes"],
            ["data", "relationships"],
            ["included"],
            ["data", "relationships", "user", "data"],
            ["data", "attributes", "last_charge_date"],
            ["data", "relationships", "currently_entitled_tiers", "data"],
        ]
    ),
    value=json_values,
)
def test_any_value_anywhere_parses_or_is_malformed(path: list[str], value: Any) -> None:
    try:
        parse_event("members:update", mutate(path, value))
    except MalformedEvent as exc:
        assert json.dumps(value) not in str(exc) or len(json.dumps(value)) < 5  # never echoes the value
