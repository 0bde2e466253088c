"""Rewards file: the example loads, every rule kind parses, and every error names file, rule and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config import (
    ChannelPointsRedemptionRule,
    CheerRule,
    ConfigError,
    FollowRule,
    PledgeCreateRule,
    PledgeUpdateRule,
    RaidRule,
    RenewalRule,
    RewardsConfig,
    RewardsFileError,
    SubscribeRule,
    SubscriptionGiftRule,
    SubscriptionMessageRule,
    load_rewards,
    parse_rewards,
)
from config.rewards import PATREON_EVENTS, TWITCH_EVENTS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "rewards.example.toml"

GUILD = "111111111111111111"
HEADER = f'guild_id = "{GUILD}"\n'
ONE_ITEM = 'items = [{ id = "gem", amount = 1 }]\n'
REWARD_ID = "92af127c-7326-4483-a52b-b0da0be61c01"
REDEMPTION = "channel.channel_points_custom_reward_redemption.add"
FOLLOW = '[[twitch.rules]]\nevent = "channel.follow"\n' + ONE_ITEM


def write(tmp_path: Path, text: str, name: str = "rewards.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> RewardsFileError:
    path = write(tmp_path, text)
    with pytest.raises(RewardsFileError) as caught:
        load_rewards(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return caught.value


# -- the example ------------------------------------------------------------------------


def test_example_file_loads() -> None:
    config = load_rewards(EXAMPLE)
    assert config.guild_id == GUILD
    assert config.twitch.links == {"1337": "222222222222222222"}
    kinds = {type(rule) for rule in config.all_rules()}
    assert kinds == {
        SubscribeRule,
        SubscriptionGiftRule,
        SubscriptionMessageRule,
        CheerRule,
        ChannelPointsRedemptionRule,
        FollowRule,
        RaidRule,
        PledgeCreateRule,
        RenewalRule,
        PledgeUpdateRule,
    }
    assert [rule.event for rule in config.twitch.rules] == list(TWITCH_EVENTS)
    assert [rule.event for rule in config.patreon.rules] == list(PATREON_EVENTS)
    raid = config.twitch.rules_for("channel.raid")[0]
    assert raid.effective_guild_id == "333333333333333333"
    assert config.twitch.rules_for("channel.follow")[0].effective_guild_id == GUILD
    assert config.discord_user_for_twitch("1337") == "222222222222222222"
    assert config.discord_user_for_twitch("1") is None


def test_interface_md_sample_loads(tmp_path: Path) -> None:
    """The rewards-file sample of the published interface (layout, commands, rules file), verbatim."""
    text = """
guild_id = "111111111111111111"          # default guild for every rule

[[twitch.rules]]
event = "channel.subscribe"              # EventSub subscription type
tier = "1000"                            # optional filter
items = [{ id = "sub-chest", amount = 1 }]

[[twitch.rules]]
event = "channel.cheer"
per_bits = 100                           # amount x floor(bits / per_bits)
items = [{ id = "gem", amount = 1 }]

[[twitch.rules]]
event = "channel.channel_points_custom_reward_redemption.add"
reward_id = "92af127c-7326-4483-a52b-b0da0be61c01"
items = [{ id = "potion", amount = 3 }]

[twitch.links]                           # Twitch user id -> Discord user id
"1337" = "222222222222222222"

[[patreon.rules]]
event = "members:pledge:create"          # also "renewal" for a paid monthly charge
tier_id = "9999999"                      # optional filter
items = [{ id = "patron-crate", amount = 1 }]
"""
    config = load_rewards(write(tmp_path, text))
    assert [rule.rule_id for rule in config.all_rules()] == [
        "twitch:channel.subscribe#0",
        "twitch:channel.cheer#1",
        "twitch:channel.channel_points_custom_reward_redemption.add#2",
        "patreon:members:pledge:create#0",
    ]


# -- every rule kind ----------------------------------------------------------------------


def test_every_twitch_rule_kind_parses(tmp_path: Path) -> None:
    text = (
        HEADER
        + """
[[twitch.rules]]
event = "channel.subscribe"
tier = "3000"
gifted = "both"
items = [{ id = "a", amount = 1 }]

[[twitch.rules]]
event = "channel.subscription.gift"
tier = "2000"
scale_by_total = false
anonymous = true
items = [{ id = "a", amount = 2 }]

[[twitch.rules]]
event = "channel.subscription.message"
min_cumulative_months = 6
items = [{ id = "a", amount = 0.5 }]

[[twitch.rules]]
event = "channel.cheer"
per_bits = 100
min_bits = 500
anonymous = true
items = [{ id = "a", amount = -1 }, { id = "b", amount = 1000000000 }]

[[twitch.rules]]
event = "channel.channel_points_custom_reward_redemption.add"
reward_id = "0a1b2c3d-0000-4000-8000-000000000001"
link_reward = true
items = [{ id = "a", amount = 1 }]

[[twitch.rules]]
event = "channel.follow"
name = "follow-bonus"
reason = "Welcome!"
items = [{ id = "a", amount = 1 }]

[[twitch.rules]]
event = "channel.raid"
min_viewers = 0
guild_id = "13333333333333333333"
items = [{ id = "a", amount = -1000000000 }]
"""
    )
    rules = load_rewards(write(tmp_path, text)).twitch.rules
    sub, gift, message, cheer, redemption, follow, raid = rules
    assert isinstance(sub, SubscribeRule) and (sub.tier, sub.gifted) == ("3000", "both")
    assert isinstance(gift, SubscriptionGiftRule)
    assert (gift.tier, gift.scale_by_total, gift.anonymous) == ("2000", False, True)
    assert isinstance(message, SubscriptionMessageRule) and message.min_cumulative_months == 6
    assert message.items[0].amount == 0.5
    assert isinstance(cheer, CheerRule) and (cheer.per_bits, cheer.min_bits, cheer.anonymous) == (100, 500, True)
    assert [(item.id, item.amount) for item in cheer.items] == [("a", -1), ("b", 1e9)]
    assert isinstance(redemption, ChannelPointsRedemptionRule)
    assert (redemption.reward_id, redemption.link_reward) == ("0a1b2c3d-0000-4000-8000-000000000001", True)
    assert isinstance(follow, FollowRule) and follow.rule_id == "follow-bonus" and follow.reason == "Welcome!"
    assert isinstance(raid, RaidRule) and raid.min_viewers == 0
    assert raid.effective_guild_id == "13333333333333333333"
    assert cheer.rule_id == "twitch:channel.cheer#3"


def test_twitch_rule_defaults(tmp_path: Path) -> None:
    text = HEADER + "".join(
        f'[[twitch.rules]]\nevent = "{event}"\nitems = [{{ id = "a", amount = 1 }}]\n'
        + (f'reward_id = "{REWARD_ID}"\n' if event.startswith("channel.channel_points") else "")
        for event in TWITCH_EVENTS
    )
    sub, gift, message, cheer, redemption, _follow, raid = load_rewards(write(tmp_path, text)).twitch.rules
    assert isinstance(sub, SubscribeRule) and (sub.tier, sub.gifted) == (None, "recipient")
    assert isinstance(gift, SubscriptionGiftRule) and (gift.tier, gift.scale_by_total, gift.anonymous) == (
        None,
        True,
        False,
    )
    assert isinstance(message, SubscriptionMessageRule) and message.min_cumulative_months is None
    assert isinstance(cheer, CheerRule) and (cheer.per_bits, cheer.min_bits, cheer.anonymous) == (None, None, False)
    assert isinstance(redemption, ChannelPointsRedemptionRule) and redemption.link_reward is False
    assert isinstance(raid, RaidRule) and raid.min_viewers is None
    assert all(rule.name is None and rule.guild_id is None and rule.reason is None for rule in (sub, gift, raid))


def test_every_patreon_rule_kind_parses(tmp_path: Path) -> None:
    text = (
        HEADER
        + """
[[patreon.rules]]
event = "members:pledge:create"
tier_id = "9512023"
min_cents = 0
require_paid = true
revoke_on = ["members:pledge:delete", "Declined", "Refunded", "Fraud"]
items = [{ id = "crate", amount = 1 }]

[[patreon.rules]]
event = "renewal"
tier_id = "9512023"
min_cents = 500
revoke_on = ["Refunded"]
items = [{ id = "crate", amount = 1 }]

[[patreon.rules]]
event = "members:pledge:update"
upgrade_only = true
items = [{ id = "crate", amount = 1 }]

[[patreon.rules]]
event = "members:pledge:create"
items = [{ id = "crate", amount = 1 }]
"""
    )
    create, renewal, update, plain = load_rewards(write(tmp_path, text)).patreon.rules
    assert isinstance(create, PledgeCreateRule)
    assert (create.tier_id, create.min_cents, create.require_paid) == ("9512023", 0, True)
    assert create.revoke_on == ["members:pledge:delete", "Declined", "Refunded", "Fraud"]
    assert isinstance(renewal, RenewalRule) and (renewal.min_cents, renewal.revoke_on) == (500, ["Refunded"])
    assert isinstance(update, PledgeUpdateRule) and update.upgrade_only is True and update.tier_id is None
    assert isinstance(plain, PledgeCreateRule)
    assert (plain.tier_id, plain.min_cents, plain.require_paid, plain.revoke_on) == (None, None, False, [])
    assert plain.rule_id == "patreon:members:pledge:create#3"
    assert [rule.rule_id for rule in load_rewards(write(tmp_path, text)).patreon.rules_for("renewal")] == [
        "patreon:renewal#1"
    ]


def test_rule_guild_overrides_without_top_level_guild(tmp_path: Path) -> None:
    text = '[[twitch.rules]]\nevent = "channel.follow"\nguild_id = "222222222222222222"\n' + ONE_ITEM
    config = load_rewards(write(tmp_path, text))
    assert config.guild_id is None
    assert config.twitch.rules[0].effective_guild_id == "222222222222222222"


def test_models_are_frozen(tmp_path: Path) -> None:
    config = load_rewards(EXAMPLE)
    with pytest.raises(ValueError, match="frozen"):
        config.guild_id = "222222222222222222"


# -- errors: file, rule, field ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            HEADER + FOLLOW + FOLLOW + '[[twitch.rules]]\nevent = "channel.cheer"\nper_bits = 0\n' + ONE_ITEM,
            "twitch.rules[2] (channel.cheer): per_bits: must be at least 1",
            id="per_bits",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.foo"\n' + ONE_ITEM,
            "twitch.rules[0]: event: unknown event 'channel.foo' (known: channel.subscribe, ",
            id="unknown-event",
        ),
        pytest.param(
            HEADER + "[[twitch.rules]]\n" + ONE_ITEM,
            "twitch.rules[0]: event: required (one of: channel.subscribe, ",
            id="missing-event",
        ),
        pytest.param(
            HEADER + '[[patreon.rules]]\nevent = "members:update"\n' + ONE_ITEM,
            "patreon.rules[0]: event: unknown event 'members:update' (known: members:pledge:create, renewal, ",
            id="unknown-patreon-event",
        ),
        pytest.param(
            HEADER + FOLLOW + '[[twitch.rules]]\nevent = "channel.subscribe"\nitems = [{ id = "a", amount = 1e10 }]\n',
            "twitch.rules[1] (channel.subscribe): items[0].amount: must be between -1000000000 and 1000000000",
            id="amount-too-big",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("amount = 1", "amount = -1000000001"),
            "twitch.rules[0] (channel.follow): items[0].amount: must be between -1000000000 and 1000000000",
            id="amount-too-small",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("amount = 1", "amount = 0"),
            "twitch.rules[0] (channel.follow): items[0].amount: must not be 0",
            id="amount-zero",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("amount = 1", "amount = nan"),
            "twitch.rules[0] (channel.follow): items[0].amount: must be a finite number",
            id="amount-nan",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("amount = 1", 'amount = "1"'),
            "twitch.rules[0] (channel.follow): items[0].amount: must be a number",
            id="amount-string",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("amount = 1", "amount = true"),
            "twitch.rules[0] (channel.follow): items[0].amount: must be a number",
            id="amount-bool",
        ),
        pytest.param(
            HEADER + FOLLOW.replace('id = "gem"', 'id = ""'),
            "twitch.rules[0] (channel.follow): items[0].id: must not be empty",
            id="empty-item-id",
        ),
        pytest.param(
            HEADER + FOLLOW.replace('id = "gem"', f'id = "{"x" * 101}"'),
            "twitch.rules[0] (channel.follow): items[0].id: must have at most 100 characters",
            id="long-item-id",
        ),
        pytest.param(
            HEADER + FOLLOW.replace(", amount = 1", ", amount = 1, count = 2"),
            "twitch.rules[0] (channel.follow): items[0].count: unknown key",
            id="unknown-item-key",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.follow"\nitems = []\n',
            "twitch.rules[0] (channel.follow): items: must not be empty",
            id="no-items",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.follow"\n',
            "twitch.rules[0] (channel.follow): items: required",
            id="missing-items",
        ),
        pytest.param(
            HEADER
            + '[[twitch.rules]]\nevent = "channel.follow"\nitems = ['
            + ", ".join(f'{{ id = "i{n}", amount = 1 }}' for n in range(51))
            + "]\n",
            "twitch.rules[0] (channel.follow): items: must have at most 50 entries",
            id="too-many-items",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("amount = 1 }", 'amount = 1 }, { id = "gem", amount = -2 }'),
            "twitch.rules[0] (channel.follow): items: item id 'gem' appears twice (items[0] and items[1])",
            id="duplicate-item",
        ),
        pytest.param(
            HEADER + '[[patreon.rules]]\nevent = "renewal"\ntierid = "1"\n' + ONE_ITEM,
            "patreon.rules[0] (renewal): tierid: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            HEADER + '[[patreon.rules]]\nevent = "renewal"\nupgrade_only = true\n' + ONE_ITEM,
            "patreon.rules[0] (renewal): upgrade_only: unknown key",
            id="key-of-another-kind",
        ),
        pytest.param(
            HEADER + '[[patreon.rules]]\nevent = "renewal"\nmin_cents = -1\n' + ONE_ITEM,
            "patreon.rules[0] (renewal): min_cents: must be at least 0",
            id="min-cents",
        ),
        pytest.param(
            HEADER + '[[patreon.rules]]\nevent = "renewal"\nrevoke_on = ["Refunded", "Refunded"]\n' + ONE_ITEM,
            "patreon.rules[0] (renewal): revoke_on: 'Refunded' is listed twice",
            id="revoke-twice",
        ),
        pytest.param(
            HEADER + '[[patreon.rules]]\nevent = "renewal"\nrevoke_on = ["Paid"]\n' + ONE_ITEM,
            "patreon.rules[0] (renewal): revoke_on[0]: must be 'members:pledge:delete', 'Declined', 'Refunded' or 'F",
            id="revoke-unknown",
        ),
        pytest.param(
            HEADER + '[[patreon.rules]]\nevent = "members:pledge:create"\ntier_id = 9999999\n' + ONE_ITEM,
            "patreon.rules[0] (members:pledge:create): tier_id: must be a quoted string",
            id="tier-id-int",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.subscribe"\ntier = 1000\n' + ONE_ITEM,
            "twitch.rules[0] (channel.subscribe): tier: must be '1000', '2000' or '3000'",
            id="tier-int",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.subscribe"\ngifted = "everyone"\n' + ONE_ITEM,
            "twitch.rules[0] (channel.subscribe): gifted: must be 'recipient', 'gifter', 'both' or 'none'",
            id="gifted",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.subscription.message"\nmin_cumulative_months = 0\n' + ONE_ITEM,
            "twitch.rules[0] (channel.subscription.message): min_cumulative_months: must be at least 1",
            id="months",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.cheer"\nmin_bits = 1.5\n' + ONE_ITEM,
            "twitch.rules[0] (channel.cheer): min_bits: must be a whole number",
            id="min-bits-float",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.cheer"\nanonymous = "yes"\n' + ONE_ITEM,
            "twitch.rules[0] (channel.cheer): anonymous: must be true or false",
            id="bool",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.raid"\nmin_viewers = -1\n' + ONE_ITEM,
            "twitch.rules[0] (channel.raid): min_viewers: must be at least 0",
            id="min-viewers",
        ),
        pytest.param(
            HEADER + '[[twitch.rules]]\nevent = "channel.channel_points_custom_reward_redemption.add"\n' + ONE_ITEM,
            "twitch.rules[0] (channel.channel_points_custom_reward_redemption.add): reward: required: name the reward"
            ' by reward = "<title>" or reward_id = "<its UUID>"',
            id="reward-id",
        ),
        pytest.param(
            HEADER
            + FOLLOW
            + FOLLOW.replace("[[twitch.rules]]\n", '[[twitch.rules]]\nname = "dup"\n')
            + FOLLOW
            + '[[patreon.rules]]\nevent = "renewal"\nname = "dup"\n'
            + ONE_ITEM,
            "patreon.rules[0] (renewal): name: duplicate rule name 'dup' (also twitch.rules[1])",
            id="duplicate-name",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("[[twitch.rules]]\n", '[[twitch.rules]]\nname = "a:b"\n'),
            "twitch.rules[0] (channel.follow): name: must be 1-64 characters from A-Z a-z 0-9 _ . -",
            id="bad-name",
        ),
        pytest.param(
            'guild_id = "1234"\n' + FOLLOW,
            "guild_id: must be a Discord id: a quoted string of 17-20 digits",
            id="bad-top-snowflake",
        ),
        pytest.param(
            "guild_id = 111111111111111111\n" + FOLLOW,
            "guild_id: must be a Discord id: a quoted string of 17-20 digits",
            id="unquoted-snowflake",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("[[twitch.rules]]\n", '[[twitch.rules]]\nguild_id = "011111111111111111"\n'),
            "twitch.rules[0] (channel.follow): guild_id: must be a Discord id: a quoted string of 17-20 digits",
            id="bad-rule-snowflake",
        ),
        pytest.param(
            HEADER + FOLLOW.replace("[[twitch.rules]]\n", '[[twitch.rules]]\nguild_id = "99999999999999999999"\n'),
            "twitch.rules[0] (channel.follow): guild_id: must be a Discord id",
            id="snowflake-over-64-bits",
        ),
        pytest.param(
            FOLLOW
            + FOLLOW.replace("[[twitch.rules]]\n", '[[twitch.rules]]\nguild_id = "222222222222222222"\n')
            + FOLLOW,
            "twitch.rules[0] (channel.follow): guild_id: required: the file has no top-level guild_id",
            id="missing-guild",
        ),
        pytest.param(
            '[[twitch.rules]]\nguild_id = "222222222222222222"\nevent = "channel.follow"\n'
            + ONE_ITEM
            + '[[patreon.rules]]\nevent = "renewal"\n'
            + ONE_ITEM,
            "patreon.rules[0] (renewal): guild_id: required: the file has no top-level guild_id",
            id="missing-guild-patreon",
        ),
        pytest.param(
            HEADER + '[twitch.links]\n"1337" = "2"\n',
            "twitch.links.1337: must be a Discord id",
            id="bad-link-value",
        ),
        pytest.param(
            HEADER + '[twitch.links]\ncool_user = "222222222222222222"\n',
            "twitch.links.cool_user: key must be a Twitch user id",
            id="bad-link-key",
        ),
        pytest.param(HEADER + "[twitch]\nmax_twitch_accounts = 0\n", "twitch.max_twitch_accounts:", id="cap-zero"),
        pytest.param(
            HEADER + FOLLOW.replace('"channel.follow"\n', '"channel.follow"\nonce_per_viewer = "yes"\n'),
            "twitch.rules[0] (channel.follow): once_per_viewer:",
            id="once-per-viewer-not-bool",
        ),
        pytest.param(HEADER + "guild = 1\n", "guild: unknown key", id="unknown-top-level-key"),
        pytest.param(HEADER + "[twitch]\nrule = []\n", "twitch.rule: unknown key", id="unknown-section-key"),
        pytest.param(HEADER + "[discord]\nx = 1\n", "discord: unknown key", id="unknown-section"),
        pytest.param(HEADER + "twitch = 1\n", "twitch: must be a table", id="section-not-table"),
        pytest.param(HEADER + "[twitch]\nrules = 1\n", "twitch.rules: must be an array", id="rules-not-array"),
        pytest.param(HEADER + "[twitch]\nrules = [1]\n", "twitch.rules[0]: must be a table", id="rule-not-table"),
    ],
)
def test_schema_error_names_file_rule_and_field(tmp_path: Path, text: str, expected: str) -> None:
    error = error_for(tmp_path, text)
    assert str(error).startswith(f"{tmp_path / 'rewards.toml'}: {expected}")


def test_error_attributes(tmp_path: Path) -> None:
    error = error_for(tmp_path, HEADER + '[[patreon.rules]]\nevent = "renewal"\ntierid = "1"\n' + ONE_ITEM)
    assert error.path == str(tmp_path / "rewards.toml")
    assert error.locator == "patreon.rules[0] (renewal)"
    assert error.field == "tierid"
    assert error.problem == "unknown key"
    assert error.variables == ("REWARDS_FILE",)
    assert isinstance(error, ConfigError)
    assert error.__cause__ is None and error.__suppress_context__


def test_relative_path_is_shown_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    write(tmp_path / "config", HEADER + '[[twitch.rules]]\nevent = "channel.cheer"\nper_bits = 0\n' + ONE_ITEM)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RewardsFileError) as caught:
        load_rewards(Path("config/rewards.toml"))
    assert str(caught.value) == "config/rewards.toml: twitch.rules[0] (channel.cheer): per_bits: must be at least 1"


def test_several_problems_stay_on_one_line(tmp_path: Path) -> None:
    rules = "".join(
        f'[[twitch.rules]]\nevent = "channel.cheer"\nper_bits = 0\nmin_bits = 0\n{ONE_ITEM}' for _ in range(3)
    )
    error = error_for(tmp_path, HEADER + rules)
    assert len(error.problems) == 6
    assert all(problem.startswith(f"{error.path}: twitch.rules[") for problem in error.problems)
    text = str(error)
    assert text.startswith(f"{error.path}: twitch.rules[0] (channel.cheer): per_bits: must be at least 1 (also: ")
    assert "twitch.rules[0] (channel.cheer): min_bits: must be at least 1" in text
    assert text.endswith("; and 2 more)")


# -- TOML syntax, missing file -------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    error = error_for(tmp_path, HEADER + "\n[[twitch.rules]]\nevent = channel.follow\n")
    assert error.locator == "line 4, column 9"
    assert str(error).startswith(f"{error.path}: line 4, column 9: invalid TOML: ")


def test_toml_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    error = error_for(tmp_path, HEADER + HEADER)
    assert "line 2" in str(error) and "invalid TOML" in str(error)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "rewards.toml"
    path.write_bytes(b'guild_id = "\xff"\n')
    with pytest.raises(RewardsFileError, match=r"rewards\.toml: not UTF-8 text \(byte 12\)$"):
        load_rewards(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(RewardsFileError) as caught:
        load_rewards(path)
    assert str(caught.value).startswith(f"{path}: file not found")


def test_missing_file_ok_gives_empty_config(tmp_path: Path) -> None:
    config = load_rewards(tmp_path / "nope.toml", missing_ok=True)
    assert config == RewardsConfig()
    assert config.all_rules() == []
    assert config.twitch.links == {}


def test_directory_is_not_readable(tmp_path: Path) -> None:
    with pytest.raises(RewardsFileError, match="cannot be read"):
        load_rewards(tmp_path, missing_ok=True)


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    assert load_rewards(write(tmp_path, "")) == RewardsConfig()


def test_parse_rewards_uses_source_name() -> None:
    data: dict[str, Any] = {"twitch": {"rules": [{"event": "channel.follow", "items": [{"id": "a", "amount": 1}]}]}}
    with pytest.raises(RewardsFileError, match=r"^<memory>: twitch\.rules\[0\] \(channel\.follow\): guild_id: "):
        parse_rewards(data, source="<memory>")


# -- item_id spelling and named rules in errors -------------------------------------------


def test_items_take_item_id_as_the_api_does_and_id_still_works(tmp_path: Path) -> None:
    both = HEADER + (
        '[[twitch.rules]]\nevent = "channel.follow"\nitems = [{ item_id = "gem", amount = 2 }]\n'
        '[[twitch.rules]]\nevent = "channel.raid"\nitems = [{ id = "coin", amount = 3 }]\n'
    )
    config = load_rewards(write(tmp_path, both))
    assert [(i.id, i.amount) for r in config.twitch.rules for i in r.items] == [("gem", 2), ("coin", 3)]


def test_an_item_with_both_spellings_is_an_error(tmp_path: Path) -> None:
    text = HEADER + '[[twitch.rules]]\nevent = "channel.follow"\nitems = [{ item_id = "a", id = "b", amount = 1 }]\n'
    assert str(error_for(tmp_path, text)).endswith(
        "twitch.rules[0] (channel.follow): items[0]: give item_id or id, not both"
    )


def test_a_bad_item_id_is_reported_under_the_spelling_used(tmp_path: Path) -> None:
    text = HEADER + '[[twitch.rules]]\nevent = "channel.follow"\nitems = [{ item_id = "", amount = 1 }]\n'
    assert str(error_for(tmp_path, text)).endswith("items[0].item_id: must not be empty")


def test_errors_name_a_named_rule_by_its_name(tmp_path: Path) -> None:
    text = (
        HEADER
        + FOLLOW * 3
        + '[[twitch.rules]]\nname = "cheer-gems"\nevent = "channel.cheer"\nitems = [{ item_id = "gem", amount = 0 }]\n'
    )
    error = error_for(tmp_path, text)
    assert str(error).endswith('twitch rule "cheer-gems" (channel.cheer): items[0].amount: must not be 0')
    assert error.locator == 'twitch rule "cheer-gems" (channel.cheer)'


def test_a_missing_guild_names_the_rule_by_its_name(tmp_path: Path) -> None:
    text = '[[patreon.rules]]\nname = "patron-monthly"\nevent = "renewal"\n' + ONE_ITEM
    assert str(error_for(tmp_path, text)).endswith(
        'patreon rule "patron-monthly" (renewal): guild_id: required: the file has no top-level guild_id'
    )


# -- channel-point rewards: by title, refunds, the rewards the service owns -------------------------

OWNED = '[[twitch.rewards]]\ntitle = "Daily chest"\ncost = 500\n'


def redemption(**fields: str) -> str:
    """A redemption rule with ``fields`` written as given (TOML values)."""
    lines = "".join(f"{key} = {value}\n" for key, value in fields.items())
    return f'[[twitch.rules]]\nevent = "{REDEMPTION}"\n{lines}' + ONE_ITEM


def test_a_redemption_rule_names_its_reward_by_title_trimmed(tmp_path: Path) -> None:
    config = load_rewards(write(tmp_path, HEADER + redemption(reward='"  Daily Chest "', refund="false")))
    [rule] = config.twitch.rules
    assert isinstance(rule, ChannelPointsRedemptionRule)
    assert (rule.reward, rule.reward_id, rule.title_key, rule.refund) == ("Daily Chest", None, "daily chest", False)


def test_refund_defaults_to_true(tmp_path: Path) -> None:
    [rule] = load_rewards(write(tmp_path, HEADER + redemption(reward_id=f'"{REWARD_ID}"'))).twitch.rules
    assert isinstance(rule, ChannelPointsRedemptionRule)
    assert (rule.refund, rule.reward, rule.title_key) == (True, None, None)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"reward": '"Daily chest"', "reward_id": f'"{REWARD_ID}"'},
            "reward: give reward_id or reward (the title), not both",
            id="both",
        ),
        pytest.param(
            {"reward_id": '"r-1"'},
            "reward_id: must be a Twitch reward id: a lowercase UUID such as 92af127c-7326-4483-a52b-b0da0be61c01",
            id="id-not-a-uuid",
        ),
        pytest.param(
            {"reward_id": f'"{REWARD_ID.upper()}"'}, "reward_id: must be a Twitch reward id", id="id-uppercase"
        ),
        pytest.param({"reward_id": f'"{REWARD_ID}x"'}, "reward_id: must be a Twitch reward id", id="id-too-long"),
        pytest.param({"reward_id": "12"}, "reward_id: must be a quoted string", id="id-not-a-string"),
        pytest.param({"reward": '"   "'}, "reward: must not be empty", id="title-blank"),
        pytest.param(
            {"reward": f'"{"x" * 46}"'},
            "reward: must have at most 45 characters (Twitch's limit for a reward title)",
            id="title-too-long",
        ),
        pytest.param({"reward": "1"}, "reward: must be a quoted string", id="title-not-a-string"),
        pytest.param({"reward": '"a"', "refund": '"no"'}, "refund: must be true or false", id="refund-not-bool"),
    ],
)
def test_redemption_reward_errors_name_the_rule(tmp_path: Path, fields: dict[str, str], expected: str) -> None:
    text = HEADER + redemption(name='"chest"', **fields)
    assert str(error_for(tmp_path, text)).startswith(
        f'{tmp_path / "rewards.toml"}: twitch rule "chest" ({REDEMPTION}): {expected}'
    )


def test_a_title_of_45_characters_is_accepted_once_trimmed(tmp_path: Path) -> None:
    title = "x" * 45
    [rule] = load_rewards(write(tmp_path, HEADER + redemption(reward=f'" {title} "'))).twitch.rules
    assert isinstance(rule, ChannelPointsRedemptionRule) and rule.reward == title


def test_owned_rewards_parse_with_every_field(tmp_path: Path) -> None:
    text = (
        HEADER
        + """
[[twitch.rewards]]
title = " Daily chest "
cost = 500
prompt = "Type your Discord id"
enabled = false
max_per_stream = 20
max_per_user_per_stream = 1
cooldown_s = 604800
background_color = "#9147FF"
user_input_required = true
"""
    )
    [reward] = load_rewards(write(tmp_path, text)).twitch.rewards
    assert (reward.title, reward.title_key, reward.cost, reward.prompt) == (
        "Daily chest",
        "daily chest",
        500,
        "Type your Discord id",
    )
    assert reward.helix_body() == {
        "title": "Daily chest",
        "cost": 500,
        "prompt": "Type your Discord id",
        "is_enabled": False,
        "background_color": "#9147FF",
        "is_user_input_required": True,
        "is_max_per_stream_enabled": True,
        "max_per_stream": 20,
        "is_max_per_user_per_stream_enabled": True,
        "max_per_user_per_stream": 1,
        "is_global_cooldown_enabled": True,
        "global_cooldown_seconds": 604800,
        "should_redemptions_skip_request_queue": False,
    }


def test_an_owned_reward_sends_every_switch_off_and_never_skips_the_queue(tmp_path: Path) -> None:
    """Switches are sent off too (an update must clear a limit the file dropped); the queue is never skipped,
    or a failed grant's points could not be refunded."""
    [reward] = load_rewards(write(tmp_path, HEADER + OWNED)).twitch.rewards
    assert (reward.enabled, reward.user_input_required, reward.prompt, reward.cooldown_s) == (True, False, None, None)
    assert reward.helix_body() == {
        "title": "Daily chest",
        "cost": 500,
        "is_enabled": True,
        "is_user_input_required": False,
        "is_max_per_stream_enabled": False,
        "is_max_per_user_per_stream_enabled": False,
        "is_global_cooldown_enabled": False,
        "should_redemptions_skip_request_queue": False,
    }


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param("cost = 0\n", 'twitch.rewards[1] ("Potion"): cost: must be at least 1', id="cost-zero"),
        pytest.param("cost = 1.5\n", 'twitch.rewards[1] ("Potion"): cost: must be a whole number', id="cost-float"),
        pytest.param("", 'twitch.rewards[1] ("Potion"): cost: required', id="cost-missing"),
        pytest.param(
            f'cost = 1\nprompt = "{"p" * 201}"\n',
            'twitch.rewards[1] ("Potion"): prompt: must have at most 200 characters',
            id="prompt-too-long",
        ),
        pytest.param(
            "cost = 1\ncooldown_s = 0\n",
            'twitch.rewards[1] ("Potion"): cooldown_s: must be at least 1',
            id="cooldown-0",
        ),
        pytest.param(
            "cost = 1\ncooldown_s = 604801\n",
            'twitch.rewards[1] ("Potion"): cooldown_s: must be at most 604800',
            id="cooldown-over-7-days",
        ),
        pytest.param(
            "cost = 1\nmax_per_stream = 0\n",
            'twitch.rewards[1] ("Potion"): max_per_stream: must be at least 1',
            id="max-per-stream-0",
        ),
        pytest.param(
            "cost = 1\nmax_per_user_per_stream = 0\n",
            'twitch.rewards[1] ("Potion"): max_per_user_per_stream: must be at least 1',
            id="max-per-user-0",
        ),
        pytest.param(
            'cost = 1\nbackground_color = "9147FF"\n',
            'twitch.rewards[1] ("Potion"): background_color: must be a colour written #RRGGBB, e.g. #9147FF',
            id="colour-without-hash",
        ),
        pytest.param(
            'cost = 1\nbackground_color = "#9147F"\n',
            'twitch.rewards[1] ("Potion"): background_color: must be a colour written #RRGGBB',
            id="colour-short",
        ),
        pytest.param(
            'cost = 1\nenabled = "yes"\n', 'twitch.rewards[1] ("Potion"): enabled: must be true or false', id="enabled"
        ),
        pytest.param(
            "cost = 1\nskip_queue = true\n", 'twitch.rewards[1] ("Potion"): skip_queue: unknown key', id="unknown-key"
        ),
    ],
)
def test_owned_reward_errors_name_the_table(tmp_path: Path, extra: str, expected: str) -> None:
    text = HEADER + OWNED + '[[twitch.rewards]]\ntitle = "Potion"\n' + extra
    assert str(error_for(tmp_path, text)).startswith(f"{tmp_path / 'rewards.toml'}: {expected}")


def test_owned_reward_titles_are_required_bounded_and_unique_ignoring_case(tmp_path: Path) -> None:
    assert "twitch.rewards[0]: title: required" in str(error_for(tmp_path, HEADER + "[[twitch.rewards]]\ncost = 1\n"))
    long = f'[[twitch.rewards]]\ntitle = "{"t" * 46}"\ncost = 1\n'
    assert f'twitch.rewards[0] ("{"t" * 45}..."): title: must have at most 45 characters' in str(
        error_for(tmp_path, HEADER + long)
    )
    twice = HEADER + OWNED + '[[twitch.rewards]]\ntitle = "Potion"\ncost = 1\n' + OWNED.replace("Daily", " DAILY")
    assert str(error_for(tmp_path, twice)).endswith(
        ": twitch.rewards[2] (\"DAILY chest\"): title: 'DAILY chest' is also the title of twitch.rewards[0]"
        " (titles compare ignoring case and surrounding spaces)"
    )


def test_at_most_50_owned_rewards(tmp_path: Path) -> None:
    tables = "".join(f'[[twitch.rewards]]\ntitle = "Reward {n}"\ncost = 1\n' for n in range(51))
    assert "twitch.rewards: must have at most 50 entries" in str(error_for(tmp_path, HEADER + tables))
    assert len(load_rewards(write(tmp_path, HEADER + tables.rsplit("[[twitch.rewards]]", 1)[0])).twitch.rewards) == 50


def test_rules_may_name_owned_rewards_and_the_referenced_titles_are_listed(tmp_path: Path) -> None:
    text = (
        HEADER
        + OWNED
        + redemption(reward='"daily CHEST"')
        + redemption(reward_id=f'"{REWARD_ID}"')
        + redemption(reward='"Potion"')
        + redemption(reward='" Daily chest"', refund="false")
    )
    twitch = load_rewards(write(tmp_path, text)).twitch
    assert twitch.reward_titles() == ["daily CHEST", "Potion"]
    owned = twitch.owned_reward(" DAILY chest ")
    assert owned is not None and owned.title == "Daily chest"
    assert twitch.owned_reward("Potion") is None
    assert load_rewards(write(tmp_path, HEADER + FOLLOW)).twitch.reward_titles() == []


def test_the_example_shows_a_title_rule_refund_and_an_owned_reward() -> None:
    twitch = load_rewards(EXAMPLE).twitch
    [rule] = [r for r in twitch.rules if isinstance(r, ChannelPointsRedemptionRule)]
    assert rule.reward is not None and "refund" in rule.model_fields_set
    assert twitch.reward_titles() == [rule.reward] and twitch.owned_reward(rule.reward) is not None
    [reward] = twitch.rewards
    assert {"prompt", "max_per_stream", "max_per_user_per_stream", "cooldown_s", "background_color"} <= (
        reward.model_fields_set
    )
