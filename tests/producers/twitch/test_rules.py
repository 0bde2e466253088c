"""Twitch events → planned grants, rule kind by rule kind (pure: no Redis)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from config.rewards import RewardsConfig, TwitchSection, parse_rewards
from producers.twitch.rules import MalformedEvent, Plan, RewardIds, discord_id_from_input, plan_notification
from producers.twitch.samples import SAMPLE_REWARD_ID, sample_event
from tests.conftest import GUILD
from tests.producers.twitch.test_samples import documented
from worker.grant import GrantItem

MSG = "msg-1"
REDEMPTION = "channel.channel_points_custom_reward_redemption.add"
R1 = "0a1b2c3d-0000-4000-8000-000000000001"
R2 = "0a1b2c3d-0000-4000-8000-000000000002"


def section(*rules: dict[str, Any], **extra: Any) -> TwitchSection:
    config: RewardsConfig = parse_rewards({"guild_id": GUILD, "twitch": {"rules": list(rules), **extra}})
    return config.twitch


def rule(event: str, name: str, amount: float = 1, **options: Any) -> dict[str, Any]:
    return {"event": event, "name": name, "items": [{"id": "gem", "amount": amount}], **options}


def plan(twitch: TwitchSection, subscription_type: str, **fields: Any) -> Plan:
    """Plan the documented sample of ``subscription_type`` with ``fields`` replaced (``user_id=None`` makes it null)."""
    event = sample_event(
        subscription_type,
        reward_id=fields.pop("reward_id", SAMPLE_REWARD_ID),
        user_input=fields.pop("user_input", "pogchamp"),
    )
    event.update(fields)
    return plan_notification(twitch, subscription_type, event, MSG)


def granted(result: Plan) -> list[tuple[str, str, float]]:
    """(rule id, Twitch user, amount of the first item) per grant."""
    return [(g.rule_id, g.twitch_user_id, g.items[0].amount) for g in result.grants]


@pytest.mark.parametrize(
    ("name", "expected_user"),
    [
        ("channel.subscribe", "1234"),
        ("channel.subscription.gift", "1234"),
        ("channel.subscription.message", "1234"),
        ("channel.cheer", "1234"),
        ("channel.channel_points_custom_reward_redemption.add", "9001"),
        ("channel.follow", "1234"),
        ("channel.raid", "1234"),
    ],
)
def test_each_documented_sample_grants_to_the_right_user(name: str, expected_user: str) -> None:
    payload = json.loads(documented(f"{name}.json"))
    options: dict[str, Any] = {"reward_id": SAMPLE_REWARD_ID} if "redemption" in name else {}
    twitch = section(rule(name, "r", **options))
    result = plan_notification(twitch, payload["subscription"]["type"], payload["event"], MSG)
    [grant] = result.grants
    assert grant.twitch_user_id == expected_user and grant.guild_id == GUILD
    base = payload["event"].get("id", MSG)
    if name == "channel.follow":  # once per viewer and channel (``once_per_viewer``, the default)
        base = f"follow-{payload['event']['broadcaster_user_id']}-{expected_user}"
    assert grant.idempotency_key == f"twitch:{base}:r"
    assert grant.keep_claim is (name == "channel.follow")
    new = grant.to_new_grant(MSG)
    assert (new.source, new.source_ref, new.platform, new.external_id, new.user_id) == (
        "twitch",
        MSG,
        "twitch",
        expected_user,
        "",
    )


def test_subscribe_filters_by_tier_and_uses_the_reason() -> None:
    twitch = section(
        rule("channel.subscribe", "t1", tier="1000", reason="Thanks!"),
        rule("channel.subscribe", "t3", tier="3000"),
        rule("channel.subscribe", "any"),
    )
    result = plan(twitch, "channel.subscribe")
    assert granted(result) == [("t1", "1234", 1), ("any", "1234", 1)]
    assert result.grants[0].reason == "Thanks!"
    assert result.grants[1].reason == "Twitch sub (tier 1000) by cool_user"
    assert result.skipped == ("t3: tier 1000 is not 3000",)


@pytest.mark.parametrize(
    ("gifted", "recipient_paid", "gifter_paid"),
    [("recipient", True, False), ("gifter", False, True), ("both", True, True), ("none", False, False)],
)
def test_a_gift_bomb_pays_each_party_once(gifted: str, recipient_paid: bool, gifter_paid: bool) -> None:
    """Five gifted subs arrive as one gift event (gifter 1234) and five is_gift subscribe events (no gifter)."""
    twitch = section(rule("channel.subscribe", "sub", amount=2, gifted=gifted))
    gift = plan(twitch, "channel.subscription.gift", user_id="1234", total=5)
    recipients = [plan(twitch, "channel.subscribe", user_id=str(500 + n), is_gift=True) for n in range(5)]
    assert granted(gift) == ([("sub", "1234", 10)] if gifter_paid else [])
    paid = [g for r in recipients for g in granted(r)]
    assert paid == ([("sub", str(500 + n), 2) for n in range(5)] if recipient_paid else [])


def test_gift_rules_scale_by_total_and_respect_anonymity() -> None:
    twitch = section(
        rule("channel.subscription.gift", "scaled", amount=1.5),
        rule("channel.subscription.gift", "flat", scale_by_total=False),
        rule("channel.subscription.gift", "anon-ok", anonymous=True, tier="1000"),
    )
    assert granted(plan(twitch, "channel.subscription.gift", total=4)) == [
        ("scaled", "1234", 6.0),
        ("flat", "1234", 1),
        ("anon-ok", "1234", 4),
    ]
    anonymous_with_id = plan(twitch, "channel.subscription.gift", total=4, is_anonymous=True)
    assert granted(anonymous_with_id) == [("anon-ok", "1234", 4)]
    anonymous_no_id = plan(twitch, "channel.subscription.gift", total=4, is_anonymous=True, user_id=None)
    assert anonymous_no_id.grants == ()
    assert "anon-ok: the gifter has no user id" in anonymous_no_id.skipped


def test_a_sub_rule_and_a_gift_rule_on_one_gift_event_are_separate_grants() -> None:
    twitch = section(rule("channel.subscribe", "sub", gifted="gifter"), rule("channel.subscription.gift", "gift"))
    result = plan(twitch, "channel.subscription.gift", total=3)
    assert sorted(g.idempotency_key for g in result.grants) == [f"twitch:{MSG}:gift", f"twitch:{MSG}:sub"]


def test_resub_minimum_months() -> None:
    twitch = section(
        rule("channel.subscription.message", "loyal", min_cumulative_months=12),
        rule("channel.subscription.message", "any"),
    )
    assert granted(plan(twitch, "channel.subscription.message", cumulative_months=15)) == [
        ("loyal", "1234", 1),
        ("any", "1234", 1),
    ]
    assert granted(plan(twitch, "channel.subscription.message", cumulative_months=3)) == [("any", "1234", 1)]


def test_cheer_per_bits_min_bits_and_anonymous() -> None:
    twitch = section(
        rule("channel.cheer", "per100", amount=2, per_bits=100),
        rule("channel.cheer", "big", min_bits=500),
        rule("channel.cheer", "anon", per_bits=1000, anonymous=True),
    )
    assert granted(plan(twitch, "channel.cheer", bits=1050)) == [
        ("per100", "1234", 20),
        ("big", "1234", 1),
        ("anon", "1234", 1),
    ]
    small = plan(twitch, "channel.cheer", bits=99)
    assert small.grants == () and len(small.skipped) == 3
    # Anonymous: Twitch documents null user fields, twitch-cli sends "" - both mean no one to grant.
    for blank in (None, ""):
        anonymous = plan(twitch, "channel.cheer", bits=5000, is_anonymous=True, user_id=blank)
        assert anonymous.grants == ()
    with_id = plan(twitch, "channel.cheer", bits=5000, is_anonymous=True)
    assert granted(with_id) == [("anon", "1234", 5)]


def test_amounts_are_exact_and_capped() -> None:
    twitch = section(
        rule("channel.cheer", "tenth", amount=0.1, per_bits=1), rule("channel.cheer", "huge", amount=1e9, per_bits=1)
    )
    result = plan(twitch, "channel.cheer", bits=3)
    assert [g.items for g in result.grants] == [(GrantItem("gem", 0.3),), (GrantItem("gem", 1e9),)]


def test_redemption_by_reward_id_keys_on_the_redemption_id() -> None:
    twitch = section(rule("channel.channel_points_custom_reward_redemption.add", "potion", reward_id=R1))
    event = sample_event("channel.channel_points_custom_reward_redemption.add", reward_id=R1)
    first = plan_notification(twitch, "channel.channel_points_custom_reward_redemption.add", event, "m1")
    again = plan_notification(twitch, "channel.channel_points_custom_reward_redemption.add", event, "m2")
    assert first.grants[0].idempotency_key == again.grants[0].idempotency_key == f"twitch:{event['id']}:potion"
    assert first.grants[0].reason == "Twitch channel points: title by cooler_user"
    other = plan(twitch, "channel.channel_points_custom_reward_redemption.add", reward_id=R2)
    assert other.grants == ()


def test_link_reward_reads_the_discord_id_from_the_input() -> None:
    twitch = section(
        rule("channel.channel_points_custom_reward_redemption.add", "link", reward_id=R1, link_reward=True)
    )
    result = plan(
        twitch, "channel.channel_points_custom_reward_redemption.add", reward_id=R1, user_input=" 222222222222222222 "
    )
    assert [(link.twitch_user_id, link.discord_user_id) for link in result.links] == [("1234", "222222222222222222")]
    assert len(result.grants) == 1
    bad = plan(twitch, "channel.channel_points_custom_reward_redemption.add", reward_id=R1, user_input="hello")
    assert bad.links[0].discord_user_id is None and len(bad.grants) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("222222222222222222", "222222222222222222"),
        ("<@222222222222222222>", "222222222222222222"),
        ("<@!22222222222222222>", "22222222222222222"),
        ("12345", None),
        ("99999999999999999999", None),
        ("2222 2222 2222 2222 22", None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_discord_id_from_input(text: Any, expected: str | None) -> None:
    assert discord_id_from_input(text) == expected


def test_follow_and_raid() -> None:
    twitch = section(rule("channel.follow", "follow"), rule("channel.raid", "raid", min_viewers=10))
    assert granted(plan(twitch, "channel.follow", user_id="77")) == [("follow", "77", 1)]
    raid = plan(twitch, "channel.raid", from_broadcaster_user_id="88", viewers=10)
    assert granted(raid) == [("raid", "88", 1)]
    assert raid.grants[0].reason == "Twitch raid with 10 viewers by cool_user"
    assert plan(twitch, "channel.raid", viewers=9).grants == ()


def test_unknown_types_and_types_without_rules_plan_nothing() -> None:
    twitch = section(rule("channel.follow", "follow"))
    assert plan_notification(twitch, "stream.online", {"anything": 1}, MSG) == Plan()
    assert plan(twitch, "channel.cheer") == Plan()


@pytest.mark.parametrize(
    ("subscription_type", "override"),
    [
        ("channel.cheer", {"bits": "1000"}),
        ("channel.cheer", {"bits": -1}),
        ("channel.cheer", {"user_id": 1234}),
        ("channel.cheer", {"user_id": "not-digits"}),
        ("channel.subscribe", {"tier": None}),
        ("channel.subscribe", {"is_gift": "no"}),
        ("channel.subscription.gift", {"total": 0}),
        ("channel.raid", {"viewers": True}),
        ("channel.channel_points_custom_reward_redemption.add", {"reward": "x"}),
    ],
)
def test_malformed_fields_raise(subscription_type: str, override: dict[str, Any]) -> None:
    options: dict[str, Any] = {"reward_id": SAMPLE_REWARD_ID} if "redemption" in subscription_type else {}
    twitch = section(rule(subscription_type, "r", **options))
    with pytest.raises(MalformedEvent):
        plan(twitch, subscription_type, **override)


# -- redemption rules naming their reward by title ------------------------------------------------


def redeem(title: str, *rules: dict[str, Any], reward_id: str = R1, reward_ids: RewardIds | None = None) -> Plan:
    """Plan a sample redemption of reward (``reward_id``, ``title``) under ``rules``."""
    event = sample_event(REDEMPTION, reward_id=reward_id, reward_title=title)
    twitch = section(*rules)
    if reward_ids is None:
        return plan_notification(twitch, REDEMPTION, event, MSG)
    return plan_notification(twitch, REDEMPTION, event, MSG, reward_ids)


def test_a_title_rule_matches_the_event_title_ignoring_case_and_spaces() -> None:
    chest = rule(REDEMPTION, "chest", reward="Daily chest")
    assert granted(redeem("  DAILY Chest ", chest)) == [("chest", "1234", 1)]
    other = redeem("Weekly chest", chest)
    assert other.grants == () and other.skipped == ("chest: reward 'Weekly chest' is not 'Daily chest'",)


def test_a_resolved_title_matches_by_id_whatever_the_event_calls_it() -> None:
    """Once the title is resolved, a renamed reward still matches and a same-titled other reward does not."""
    chest = rule(REDEMPTION, "chest", reward="Daily chest")
    resolved = RewardIds({"daily CHEST": R1})
    assert granted(redeem("Renamed chest", chest, reward_ids=resolved)) == [("chest", "1234", 1)]
    impostor = redeem("Daily chest", chest, reward_id=R2, reward_ids=resolved)
    assert impostor.grants == () and impostor.skipped == (f"chest: reward {R2} is not {R1} ('Daily chest')",)
    # Another title's resolution leaves this one on the event's title.
    assert granted(redeem("Daily chest", chest, reward_id=R2, reward_ids=RewardIds({"Potion": R1}))) == [
        ("chest", "1234", 1)
    ]


def test_reward_ids_look_titles_up_ignoring_case_and_spaces() -> None:
    ids = RewardIds({" Daily Chest": R1, "Potion": R2})
    assert (ids["daily chest "], ids.get("POTION"), ids.get("Sword"), len(ids)) == (R1, R2, None, 2)
    assert dict(ids) == {"daily chest": R1, "potion": R2}
    assert RewardIds() == {}


def test_rules_by_id_ignore_titles_and_reward_ids() -> None:
    by_id = rule(REDEMPTION, "potion", reward_id=R1)
    assert granted(redeem("Anything", by_id, reward_ids=RewardIds({"Anything": R2}))) == [("potion", "1234", 1)]
    assert redeem("Anything", by_id, reward_id=R2).skipped == (f"potion: reward {R2} is not {R1}",)


def test_title_and_id_rules_side_by_side() -> None:
    rules = (
        rule(REDEMPTION, "by-title", reward="Potion"),
        rule(REDEMPTION, "by-id", reward_id=R1, amount=2),
        rule(REDEMPTION, "other", reward="Sword"),
    )
    result = redeem("potion", *rules)
    assert granted(result) == [("by-title", "1234", 1), ("by-id", "1234", 2)]
    assert result.skipped == ("other: reward 'potion' is not 'Sword'",)
    assert {g.idempotency_key.rsplit(":", 1)[1] for g in result.grants} == {"by-title", "by-id"}


def test_an_unresolved_title_rule_needs_the_event_title() -> None:
    twitch = section(rule(REDEMPTION, "chest", reward="Daily chest"))
    event = sample_event(REDEMPTION, reward_id=R1)
    del event["reward"]["title"]
    with pytest.raises(MalformedEvent, match="title"):
        plan_notification(twitch, REDEMPTION, event, MSG)
    [grant] = plan_notification(twitch, REDEMPTION, event, MSG, RewardIds({"Daily chest": R1})).grants
    assert grant.reason == "Twitch channel points by cooler_user"
