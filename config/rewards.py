"""The rewards file: which events grant which items, as TOML checked against a strict schema.

``load_rewards()`` reads the file (``REWARDS_FILE``, default
``config/rewards.toml``); ``config/rewards.example.toml`` shows every rule kind.
Every model forbids unknown keys and is strict about types (TOML values are
already typed, so ``amount = "5"`` is a mistake worth reporting, not coercing).
Any problem becomes one ``RewardsFileError`` line that names the file, the rule
and the field, e.g. ``config/rewards.toml: twitch rule "cheer-gems" (channel.cheer): per_bits: must be at least 1``
(an unnamed rule is named by its place: ``twitch.rules[2] (channel.cheer)``). Items are written
``{ item_id = "gem", amount = 1 }`` as in ``POST /grants``; ``id`` is read too.

Channel-point rewards: a redemption rule names its reward by ``reward_id`` (the UUID Twitch gives it) or by
``reward = "<title>"``. Titles follow Twitch's rule (1-45 characters, docs/sources-sync.md §1.1) and
compare trimmed and case-insensitively (``reward_title_key``): ``"Daily chest"`` and ``" daily CHEST"`` name
the same reward. ``[[twitch.rewards]]`` tables declare the rewards the service owns, creates and updates
on Twitch (``OwnedReward``; ``OwnedReward.helix_body`` is the Create Custom Reward body).

Rule identity: each rule has a ``rule_id``, its ``name`` if given, otherwise
``<section>:<event>#<index>`` (``twitch:channel.cheer#2``). Producers build
idempotency keys from it (``twitch:<message id>:<rule_id>``), so a rule that
can be re-delivered long after a config edit (Patreon replays for weeks) should
carry a ``name``: inserting a rule above an unnamed one changes its index and
therefore its id.

This module only parses and validates; what each field does at event time is
documented here and implemented by the producers.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from config.domain import MAX_ITEM_ID_LENGTH, InvalidInput, is_discord_id, is_platform_user_id, item_id
from config.domain import amount as checked_amount
from config.domain_fields import pydantic_check
from config.errors import RewardsFileError, format_rewards_problem
from config.keyring import RuleGuild

__all__ = [
    "PATREON_EVENTS",
    "TWITCH_EVENTS",
    "ChannelPointsRedemptionRule",
    "CheerRule",
    "FollowRule",
    "ItemAmount",
    "OwnedReward",
    "PatreonRule",
    "PatreonSection",
    "PledgeCreateRule",
    "PledgeUpdateRule",
    "RaidRule",
    "RenewalRule",
    "RewardsConfig",
    "SubscribeRule",
    "SubscriptionGiftRule",
    "SubscriptionMessageRule",
    "TwitchRule",
    "TwitchSection",
    "load_rewards",
    "parse_rewards",
    "reward_title_key",
]

#: Items per rule. One rule's items go out in one request, and one request can
#: also carry other coalesced grants, so keep a single rule's share modest.
MAX_ITEMS_PER_RULE = 50

#: Names exclude ":" and "#", so a name can never equal a derived ``<section>:<event>#<i>`` id,
#: and stay within characters that are safe inside Redis keys and idempotency keys.
_RULE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: What a missing rewards file says. A ``git push`` deploy ships none: ``config/rewards.toml`` is git-ignored.
MISSING_FILE_PROBLEM = (
    "file not found: copy config/rewards.example.toml there and edit it, or set REWARDS_FILE to your rules"
    " file (config/rewards.toml is git-ignored, so a git push deploy does not ship it)"
)
_BARE_TOML_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")

#: Twitch's limits for a custom reward (docs/sources-sync.md §1.1): a title of at most 45 characters,
#: unique in the channel; a prompt of at most 200; a cost of at least 1 point; at most 50 rewards per channel.
MAX_REWARD_TITLE = 45
MAX_REWARD_PROMPT = 200
MAX_CHANNEL_REWARDS = 50
#: Longest global cooldown accepted, 7 days (docs/sources-sync.md §1.1 says how sure that ceiling is).
MAX_REWARD_COOLDOWN_S = 604_800
#: A custom reward's id as Twitch writes it: a lowercase UUID (``reward.id`` in the event).
_REWARD_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")


def _snowflake(value: Any) -> Any:
    """Check a Discord id: a *quoted* string of 17-20 digits that fits in 64 bits."""
    if not is_discord_id(value):
        raise ValueError("must be a Discord id: a quoted string of 17-20 digits")
    return value


def _twitch_user_id(value: Any) -> Any:
    if not is_platform_user_id(value):
        raise ValueError("must be a Twitch user id: a quoted string of digits")
    return value


def _reward_id(value: Any) -> Any:
    if isinstance(value, str) and not _REWARD_ID_RE.fullmatch(value):
        raise ValueError(
            "must be a Twitch reward id: a lowercase UUID such as 92af127c-7326-4483-a52b-b0da0be61c01"
            ' (or name the reward by its title: reward = "<title>")'
        )
    return value


def reward_title_key(title: str) -> str:
    """How reward titles compare: trimmed and case-insensitively, so the file need not match Twitch's casing."""
    return title.strip().casefold()


def _reward_title(value: Any) -> Any:
    """A reward title, trimmed; 1-45 characters once trimmed (Twitch's limit)."""
    if not isinstance(value, str):
        return value  # the strict str check reports the type
    title = value.strip()
    if not title:
        raise ValueError("must not be empty")
    if len(title) > MAX_REWARD_TITLE:
        raise ValueError(f"must have at most {MAX_REWARD_TITLE} characters (Twitch's limit for a reward title)")
    return title


def _hex_color(value: Any) -> Any:
    if isinstance(value, str) and not _HEX_COLOR_RE.fullmatch(value):
        raise ValueError("must be a colour written #RRGGBB, e.g. #9147FF")
    return value


def _rule_name(value: Any) -> Any:
    if isinstance(value, str) and not _RULE_NAME_RE.fullmatch(value):
        raise ValueError("must be 1-64 characters from A-Z a-z 0-9 _ . - (it becomes part of idempotency keys)")
    return value


def _amount(value: Any) -> Any:
    """Amounts may be fractional (WetBot has fractional items), never zero, never beyond ±1e9."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value  # the strict float check reports the type
    try:
        checked_amount(value)
    except InvalidInput as exc:
        raise ValueError(exc.problem) from None
    return value


Snowflake = Annotated[str, BeforeValidator(_snowflake)]
TwitchUserId = Annotated[str, BeforeValidator(_twitch_user_id)]
RuleName = Annotated[str, BeforeValidator(_rule_name)]
RewardId = Annotated[str, BeforeValidator(_reward_id)]
RewardTitle = Annotated[str, BeforeValidator(_reward_title)]
HexColor = Annotated[str, BeforeValidator(_hex_color)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=100)]
#: ``config.domain.item_id`` (as ``POST /grants``), after the length bounds that read better in this file's errors.
ItemId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ITEM_ID_LENGTH), AfterValidator(pydantic_check(item_id))
]
Tier = Literal["1000", "2000", "3000"]
RevokeTrigger = Literal["members:pledge:delete", "Declined", "Refunded", "Fraud"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _field_error(field: str, problem: str) -> PydanticCustomError:
    """An error of a model-level check that still names its field (``parse_rewards`` reads it back)."""
    return PydanticCustomError("rewards_field", "{field}: {problem}", {"field": field, "problem": problem})


class ItemAmount(_Model):
    """One item and how many of it to grant (negative takes away)."""

    #: WetBot item id (``itemID`` in the API body). Written ``item_id``, as ``POST /grants`` names it;
    #: ``id`` (the older spelling) is read too.
    id: ItemId = Field(validation_alias=AliasChoices("item_id", "id"))
    amount: Annotated[float, BeforeValidator(_amount)]

    @model_validator(mode="before")
    @classmethod
    def _one_id_spelling(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "id" in data and "item_id" in data:
            raise ValueError("give item_id or id, not both")
        return data


# -- rules ---------------------------------------------------------------------------


class _Rule(_Model):
    """Fields every rule has. ``event`` (set by each kind) selects the kind."""

    event: str
    #: Stable id for idempotency keys; unique across the file. See the module docstring.
    name: RuleName | None = None
    #: Discord guild the items go to; defaults to the file's top-level ``guild_id``.
    guild_id: Snowflake | None = None
    items: list[ItemAmount] = Field(min_length=1, max_length=MAX_ITEMS_PER_RULE)
    #: Free text kept on the grant (ledger, CLI, Sentry), e.g. "Thanks for the sub!".
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None

    _rule_id: str | None = PrivateAttr(None)
    _guild_id: str | None = PrivateAttr(None)

    @field_validator("items")
    @classmethod
    def _unique_item_ids(cls, items: list[ItemAmount]) -> list[ItemAmount]:
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            if item.id in seen:
                raise ValueError(f"item id {item.id!r} appears twice (items[{seen[item.id]}] and items[{index}])")
            seen[item.id] = index
        return items

    @property
    def rule_id(self) -> str:
        """``name`` if set, else ``<section>:<event>#<index>`` (assigned when its section is validated)."""
        if self.name is not None:
            return self.name
        if self._rule_id is None:
            raise RuntimeError("an unnamed rule gets its id from its section; build it inside a section")
        return self._rule_id

    @property
    def effective_guild_id(self) -> str:
        """The guild the items go to: the rule's own ``guild_id`` or the file's (resolved by ``RewardsConfig``)."""
        guild = self.guild_id or self._guild_id
        if guild is None:
            raise RuntimeError("rule has no guild_id and was not loaded through RewardsConfig")
        return guild


class _TwitchRule(_Rule):
    """Base of the ``[[twitch.rules]]`` kinds."""


class SubscribeRule(_TwitchRule):
    """``channel.subscribe``: a new (non-resub) subscription, including each recipient of a gift.

    Gifted subs arrive twice: one ``channel.subscription.gift`` for the gifter
    and one ``channel.subscribe`` with ``is_gift: true`` per recipient, so
    ``gifted`` says who a gifted ``channel.subscribe`` rewards. The gifter is
    not named in that event; ``gifter``/``both`` need the matching gift event.
    Do not also reward the gifter through a ``channel.subscription.gift`` rule
    unless both rewards are intended.
    """

    event: Literal["channel.subscribe"]
    #: Only this tier ("1000" also covers Prime); none = any tier.
    tier: Tier | None = None
    #: For ``is_gift: true``: reward the "recipient", the "gifter", "both", or "none".
    gifted: Literal["recipient", "gifter", "both", "none"] = "recipient"


class SubscriptionGiftRule(_TwitchRule):
    """``channel.subscription.gift``: someone gifts ``total`` subs; rewards the gifter."""

    event: Literal["channel.subscription.gift"]
    tier: Tier | None = None
    #: Multiply every amount by the number of subs in the gift (``total``).
    scale_by_total: bool = True
    #: Grant for gifts flagged ``is_anonymous`` too. Twitch usually withholds the
    #: user id then, in which case there is no one to grant to.
    anonymous: bool = False


class SubscriptionMessageRule(_TwitchRule):
    """``channel.subscription.message``: a resub the viewer shared in chat."""

    event: Literal["channel.subscription.message"]
    tier: Tier | None = None
    #: Only when ``cumulative_months`` is at least this; none = any.
    min_cumulative_months: int | None = Field(None, ge=1)


class CheerRule(_TwitchRule):
    """``channel.cheer``: bits cheered."""

    event: Literal["channel.cheer"]
    #: Grant amount x floor(bits / per_bits) (nothing if that is 0); none = amount once per cheer.
    per_bits: int | None = Field(None, ge=1)
    #: Ignore cheers below this many bits; none = any.
    min_bits: int | None = Field(None, ge=1)
    #: Grant for cheers flagged ``is_anonymous`` too (only possible when a user id is present).
    anonymous: bool = False


class ChannelPointsRedemptionRule(_TwitchRule):
    """``channel.channel_points_custom_reward_redemption.add``: a viewer redeems a custom reward."""

    event: Literal["channel.channel_points_custom_reward_redemption.add"]
    #: The custom reward's id (``reward.id`` in the event, a UUID). Exactly one of ``reward_id`` and ``reward``.
    reward_id: RewardId | None = None
    #: The custom reward's title (trimmed, compared case-insensitively: ``reward_title_key``).
    reward: RewardTitle | None = None
    #: When the redemption's grant ends ``dead`` or ``cancelled``, give the viewer their points back
    #: (possible only for rewards the service's client id created, docs/sources-sync.md §1.1).
    refund: bool = True
    #: The redemption is also a link request: its ``user_input`` is the viewer's
    #: Discord user id, linked to their Twitch account before granting.
    link_reward: bool = False

    @model_validator(mode="after")
    def _one_reward(self) -> ChannelPointsRedemptionRule:
        if self.reward_id is not None and self.reward is not None:
            raise _field_error("reward", "give reward_id or reward (the title), not both")
        if self.reward_id is None and self.reward is None:
            raise _field_error("reward", 'required: name the reward by reward = "<title>" or reward_id = "<its UUID>"')
        return self

    @property
    def title_key(self) -> str | None:
        """``reward_title_key`` of the title this rule names, or None for a rule by ``reward_id``."""
        return None if self.reward is None else reward_title_key(self.reward)


class FollowRule(_TwitchRule):
    """``channel.follow`` (v2). Unfollow and re-follow sends a new event under a new message id."""

    event: Literal["channel.follow"]
    #: Reward each viewer once per channel, ever (default); false: once per follow notification, so
    #: unfollowing and following again earns the reward again.
    once_per_viewer: bool = True


class RaidRule(_TwitchRule):
    """``channel.raid``: rewards the raiding broadcaster (``from_broadcaster_user_id``)."""

    event: Literal["channel.raid"]
    #: Only raids bringing at least this many viewers; none = any.
    min_viewers: int | None = Field(None, ge=0)


class _PatreonRule(_Rule):
    """Base of the ``[[patreon.rules]]`` kinds: the filters and revocation every Patreon rule has."""

    #: Only members entitled to this tier (an id from ``currently_entitled_tiers``); none = any.
    tier_id: ShortText | None = None
    #: Take the granted items back (negative grant) when the member's pledge is
    #: deleted or a charge ends in one of these statuses.
    revoke_on: list[RevokeTrigger] = Field(default_factory=list)

    @field_validator("revoke_on")
    @classmethod
    def _unique_revoke_on(cls, values: list[str]) -> list[str]:
        for index, value in enumerate(values):
            if value in values[:index]:
                raise ValueError(f"{value!r} is listed twice")
        return values


class PledgeCreateRule(_PatreonRule):
    """``members:pledge:create``: a new pledge (also a follower becoming a patron)."""

    event: Literal["members:pledge:create"]
    #: Only when ``currently_entitled_amount_cents`` is at least this (US cents); none = any.
    min_cents: int | None = Field(None, ge=0)
    #: Only when ``last_charge_status`` is "Paid"; Patreon also sends this event
    #: for pending and declined first charges.
    require_paid: bool = False


class RenewalRule(_PatreonRule):
    """``renewal``: a paid recurring charge, seen as ``members:update`` with Paid and a newer ``last_charge_date``.

    Patreon has no renewal trigger (docs/patreon.md §5); the producer derives it.
    """

    event: Literal["renewal"]
    min_cents: int | None = Field(None, ge=0)


class PledgeUpdateRule(_PatreonRule):
    """``members:pledge:update``: the member changed their pledge."""

    event: Literal["members:pledge:update"]
    #: Only when the entitled amount went up.
    upgrade_only: bool = False


TwitchRule = Annotated[
    SubscribeRule
    | SubscriptionGiftRule
    | SubscriptionMessageRule
    | CheerRule
    | ChannelPointsRedemptionRule
    | FollowRule
    | RaidRule,
    Field(discriminator="event"),
]
PatreonRule = Annotated[
    PledgeCreateRule | RenewalRule | PledgeUpdateRule,
    Field(discriminator="event"),
]


def _events(rule_union: Any) -> tuple[str, ...]:
    members = get_args(get_args(rule_union)[0])
    return tuple(get_args(member.model_fields["event"].annotation)[0] for member in members)


#: Event names a rule may use, per section, in declaration order.
TWITCH_EVENTS: tuple[str, ...] = _events(TwitchRule)
PATREON_EVENTS: tuple[str, ...] = _events(PatreonRule)
_EVENTS = {"twitch": TWITCH_EVENTS, "patreon": PATREON_EVENTS}


def _assign_rule_ids(rules: list[Any], section: str) -> None:
    for index, rule in enumerate(rules):
        rule._rule_id = f"{section}:{rule.event}#{index}"


# -- rewards the service owns -----------------------------------------------------------


class OwnedReward(_Model):
    """``[[twitch.rewards]]``: a channel-point reward the service creates (and keeps updated) on Twitch.

    Only rewards created by the service's own client id can have their redemptions fulfilled or refunded
    (docs/sources-sync.md §1.1), which is why the file declares them instead of pointing at existing ones.
    A field left out is Twitch's default: no limit, no cooldown, no prompt.
    """

    #: Unique among the tables, compared as ``reward_title_key`` does; a redemption rule names it by
    #: ``reward = "<title>"``.
    title: RewardTitle
    #: Channel points a redemption costs.
    cost: int = Field(ge=1)
    #: Text shown to the viewer when redeeming; Twitch wants one when ``user_input_required``.
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REWARD_PROMPT)] | None = None
    #: Viewers see (and can redeem) only enabled rewards.
    enabled: bool = True
    #: Redemptions per live stream, all viewers together; none = no limit.
    max_per_stream: int | None = Field(None, ge=1)
    #: Redemptions per viewer per live stream; none = no limit.
    max_per_user_per_stream: int | None = Field(None, ge=1)
    #: Seconds between two redemptions by anyone; none = no cooldown (Twitch's UI shows only cooldowns of 60 s or more).
    cooldown_s: int | None = Field(None, ge=1, le=MAX_REWARD_COOLDOWN_S)
    #: ``#RRGGBB``; none = Twitch's default colour.
    background_color: HexColor | None = None
    #: The viewer must type a text (a ``link_reward`` rule reads its Discord id from it).
    user_input_required: bool = False

    @property
    def title_key(self) -> str:
        """``reward_title_key`` of the title."""
        return reward_title_key(self.title)

    def helix_body(self) -> dict[str, str | int | bool]:
        """The body of Helix's Create Custom Rewards (and Update Custom Reward) for this table.

        Every switch is sent, off as well as on, so an update also clears a limit the file no longer sets.
        ``should_redemptions_skip_request_queue`` is always false: a skipped-queue redemption is FULFILLED
        by Twitch at once, and Update Redemption Status acts only on UNFULFILLED ones, so its points could
        never be refunded when the grant fails (docs/sources-sync.md §1.1).
        """
        body: dict[str, str | int | bool] = {
            "title": self.title,
            "cost": self.cost,
            "is_enabled": self.enabled,
            "is_user_input_required": self.user_input_required,
            "is_max_per_stream_enabled": self.max_per_stream is not None,
            "is_max_per_user_per_stream_enabled": self.max_per_user_per_stream is not None,
            "is_global_cooldown_enabled": self.cooldown_s is not None,
            "should_redemptions_skip_request_queue": False,
        }
        optional: dict[str, str | int | None] = {
            "prompt": self.prompt,
            "background_color": self.background_color,
            "max_per_stream": self.max_per_stream,
            "max_per_user_per_stream": self.max_per_user_per_stream,
            "global_cooldown_seconds": self.cooldown_s,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        return body


# -- sections and the file -----------------------------------------------------------


class TwitchSection(_Model):
    """``[twitch]``: rules, the rewards the service owns, and static Twitch → Discord links."""

    rules: list[TwitchRule] = Field(default_factory=list)
    #: ``[[twitch.rewards]]``: at most 50, Twitch's limit per channel (which also counts rewards made elsewhere).
    rewards: list[OwnedReward] = Field(default_factory=list, max_length=MAX_CHANNEL_REWARDS)
    #: Twitch user id → Discord user id. Run-time links (``POST /links``) add to these.
    links: dict[TwitchUserId, Snowflake] = Field(default_factory=dict)
    #: Most Twitch accounts one Discord id may link to itself by redeeming a ``link_reward``
    #: (operator and static links do not count); more would let one viewer farm rewards.
    max_twitch_accounts: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _ids(self) -> TwitchSection:
        _assign_rule_ids(self.rules, "twitch")
        return self

    @field_validator("rewards")
    @classmethod
    def _unique_titles(cls, rewards: list[OwnedReward]) -> list[OwnedReward]:
        seen: dict[str, int] = {}
        for index, reward in enumerate(rewards):
            if reward.title_key in seen:
                raise _field_error(
                    f"[{index}].title",
                    f"{reward.title!r} is also the title of twitch.rewards[{seen[reward.title_key]}]"
                    " (titles compare ignoring case and surrounding spaces)",
                )
            seen[reward.title_key] = index
        return rewards

    def rules_for(self, event: str) -> list[TwitchRule]:
        """The rules for one EventSub subscription type, in file order."""
        return [rule for rule in self.rules if rule.event == event]

    def reward_titles(self) -> list[str]:
        """The reward titles redemption rules name (``reward = ...``), each once, as first written, in file
        order: what has to be resolved to reward ids through Helix."""
        titles: dict[str, str] = {}
        for rule in self.rules:
            if isinstance(rule, ChannelPointsRedemptionRule) and rule.reward is not None:
                titles.setdefault(reward_title_key(rule.reward), rule.reward)
        return list(titles.values())

    def owned_reward(self, title: str) -> OwnedReward | None:
        """The ``[[twitch.rewards]]`` table with this title (as ``reward_title_key`` compares), if any."""
        key = reward_title_key(title)
        return next((reward for reward in self.rewards if reward.title_key == key), None)


class PatreonSection(_Model):
    """``[patreon]``: rules. Discord ids come from the patron's connected Discord account."""

    rules: list[PatreonRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ids(self) -> PatreonSection:
        _assign_rule_ids(self.rules, "patreon")
        return self

    def rules_for(self, event: str) -> list[PatreonRule]:
        """The rules for one trigger (or ``renewal``), in file order."""
        return [rule for rule in self.rules if rule.event == event]


class RewardsConfig(_Model):
    """The whole rewards file. An empty config (no rules) is valid: nothing is granted."""

    #: Default Discord guild for every rule without its own ``guild_id``.
    guild_id: Snowflake | None = None
    twitch: TwitchSection = Field(default_factory=TwitchSection)
    patreon: PatreonSection = Field(default_factory=PatreonSection)

    @model_validator(mode="after")
    def _check_rules(self) -> RewardsConfig:
        """Names unique across the file; every rule resolves to a guild."""
        named: dict[str, str] = {}
        for section, rules in (("twitch", self.twitch.rules), ("patreon", self.patreon.rules)):
            for index, rule in enumerate(rules):
                locator = rule_locator(section, index, rule.name, rule.event)
                if rule.name is not None:
                    if rule.name in named:
                        raise _rule_error(
                            f"{section}.rules[{index}] ({rule.event})",
                            "name",
                            f"duplicate rule name {rule.name!r} (also {named[rule.name]})",
                        )
                    named[rule.name] = f"{section}.rules[{index}]"
                if rule.guild_id is None and self.guild_id is None:
                    raise _rule_error(locator, "guild_id", "required: the file has no top-level guild_id")
                rule._guild_id = rule.guild_id or self.guild_id
        return self

    def rule_guilds(self) -> list[RuleGuild]:
        """Each rule (as errors name it) with the guild its grants go to, for ``config.keyring.check_rule_guilds``."""
        return [
            RuleGuild(rule_locator(section, index, rule.name, rule.event), rule.effective_guild_id)
            for section, rules in (("twitch", self.twitch.rules), ("patreon", self.patreon.rules))
            for index, rule in enumerate(rules)
        ]

    def all_rules(self) -> list[TwitchRule | PatreonRule]:
        """Every rule, Twitch first, in file order."""
        return [*self.twitch.rules, *self.patreon.rules]

    def discord_user_for_twitch(self, twitch_user_id: str) -> str | None:
        """The statically linked Discord user of a Twitch user, if the file has one."""
        return self.twitch.links.get(twitch_user_id)


def rule_locator(section: str, index: int, name: Any, event: Any) -> str:
    """How errors name a rule: ``twitch rule "cheer-gems" (channel.cheer)`` when it has a valid ``name``
    (what the operator wrote and searches for), else ``twitch.rules[3] (channel.cheer)``. The event is
    named only when it is a real one (an unknown event name is the problem itself)."""
    if isinstance(name, str) and _RULE_NAME_RE.fullmatch(name):
        locator = f'{section} rule "{name}"'
    else:
        locator = f"{section}.rules[{index}]"
    return locator + (f" ({event})" if event in _EVENTS.get(section, ()) else "")


def _rule_error(locator: str, field: str, problem: str) -> PydanticCustomError:
    """An error raised above the rule (pydantic's ``loc`` cannot point into it) that still names rule and field."""
    return PydanticCustomError(
        "rewards_rule", "{locator}: {field}: {problem}", {"locator": locator, "field": field, "problem": problem}
    )


# -- loading -------------------------------------------------------------------------


def load_rewards(path: Path, *, missing_ok: bool = False) -> RewardsConfig:
    """Read and validate the rewards file.

    Parameters:
      path: the TOML file (``Settings.rewards_file``).
      missing_ok: return an empty ``RewardsConfig`` (no rules) when the file
        does not exist, instead of failing. Demo mode (``Settings.demo_mode``) and the CLI use it;
        web and worker outside demo mode do not: a service with no rules would grant nothing, silently.

    Raises:
      RewardsFileError: the file is missing (unless ``missing_ok``) or
        unreadable, is not UTF-8 TOML (the message gives line and column), or
        breaks the schema (the message names the rule and field).
    """
    path = Path(path)  # tolerate a str from callers that skip Settings
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return RewardsConfig()
        raise RewardsFileError(shown, MISSING_FILE_PROBLEM) from None
    except OSError as exc:
        raise RewardsFileError(shown, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RewardsFileError(shown, f"not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(shown, exc) from None
    return parse_rewards(data, source=shown)


def parse_rewards(data: Mapping[str, Any], *, source: str = "<rewards>") -> RewardsConfig:
    """Validate already-parsed TOML (or any mapping of the same shape).

    ``source`` is the name used in error messages (normally the file path).

    Raises:
      RewardsFileError: naming ``source``, the rule and the field.
    """
    try:
        return RewardsConfig.model_validate(data)
    except ValidationError as exc:
        located = [_locate(error, data) for error in exc.errors(include_url=False)]
        (locator, field, problem), *rest = located
        more = tuple(format_rewards_problem(source, p, locator=loc, field=f) for loc, f, p in rest)
        raise RewardsFileError(source, problem, locator=locator, field=field, more=more) from None


def _toml_error(shown: str, exc: tomllib.TOMLDecodeError) -> RewardsFileError:
    """Python 3.11's TOMLDecodeError keeps the position only in its text: "... (at line 3, column 7)"."""
    text = str(exc)
    match = re.fullmatch(r"(?s)(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)", text)
    if match is None:
        return RewardsFileError(shown, f"invalid TOML: {text}")
    return RewardsFileError(
        shown, f"invalid TOML: {match['msg']}", locator=f"line {match['line']}, column {match['col']}"
    )


def _locate(error: Any, data: Mapping[str, Any]) -> tuple[str | None, str | None, str]:
    """Split a pydantic error into (rule locator, field path, problem)."""
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind == "rewards_rule":
        return ctx["locator"], ctx["field"], ctx["problem"]
    loc: tuple[Any, ...] = tuple(error["loc"])
    problem = _problem(kind, ctx, error["msg"])
    if kind == "rewards_field":
        loc, problem = (*loc, *_field_parts(ctx["field"])), ctx["problem"]
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc = loc[:-1]
        problem = f"key {problem}" if kind == "value_error" else f"key: {problem}"

    if len(loc) >= 3 and loc[0] in _EVENTS and loc[1] == "rules" and isinstance(loc[2], int):
        section, index, rest = loc[0], loc[2], loc[3:]
        known = _EVENTS[section]
        if rest and isinstance(rest[0], str) and rest[0] in known:
            event: Any = rest[0]
            rest = rest[1:]
        else:
            event = _raw_event(data, section, index, "event")
        locator = rule_locator(section, index, _raw_event(data, section, index, "name"), event)
        if kind == "union_tag_invalid":
            return locator, "event", f"unknown event {ctx.get('tag')!r} (known: {', '.join(known)})"
        if kind == "union_tag_not_found":
            return locator, "event", f"required (one of: {', '.join(known)})"
        return locator, _path(rest) or None, problem
    if len(loc) >= 3 and loc[:2] == ("twitch", "rewards") and isinstance(loc[2], int):
        return _reward_locator(data, loc[2]), _path(loc[3:]) or None, problem
    return None, _path(loc) or None, problem


def _reward_locator(data: Mapping[str, Any], index: int) -> str:
    """How errors name a ``[[twitch.rewards]]`` table: ``twitch.rewards[1] ("Daily chest")``."""
    try:
        title = data["twitch"]["rewards"][index].get("title")
    except (KeyError, IndexError, TypeError, AttributeError):
        title = None
    if not isinstance(title, str) or not title.strip():
        return f"twitch.rewards[{index}]"
    shown = title.strip()
    shown = shown if len(shown) <= MAX_REWARD_TITLE else shown[:MAX_REWARD_TITLE] + "..."
    return f"twitch.rewards[{index}] ({json.dumps(shown, ensure_ascii=False)})"


def _field_parts(field: str) -> tuple[str | int, ...]:
    """``"[2].title"`` → ``(2, "title")``: a ``_field_error`` field as ``loc`` parts."""
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", field))


def _raw_event(data: Mapping[str, Any], section: str, index: int, key: str) -> Any:
    """The rule's raw ``key`` (``event`` or ``name``) as written, or None."""
    try:
        return data[section]["rules"][index].get(key)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def _path(parts: tuple[Any, ...]) -> str:
    """``('items', 0, 'amount')`` → ``items[0].amount``; keys that are not bare TOML keys are quoted."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = str(part) if _BARE_TOML_KEY_RE.fullmatch(str(part)) else f'"{part}"'
            text += f".{key}" if text else key
    return text


def _problem(kind: str, ctx: dict[str, Any], fallback: str) -> str:
    if kind == "value_error":
        return str(ctx.get("error", fallback))
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}"
    if kind in ("too_short", "string_too_short"):
        minimum = ctx.get("min_length")
        if minimum == 1:
            return "must not be empty"
        return f"must have at least {minimum} {'characters' if kind == 'string_too_short' else 'entries'}"
    if kind in ("too_long", "string_too_long"):
        unit = "characters" if kind == "string_too_long" else "entries"
        return f"must have at most {ctx.get('max_length')} {unit}"
    messages = {
        "extra_forbidden": "unknown key",
        "missing": "required",
        "model_type": "must be a table",
        "model_attributes_type": "must be a table",
        "dict_type": "must be a table",
        "list_type": "must be an array",
        "string_type": "must be a quoted string",
        "int_type": "must be a whole number",
        "float_type": "must be a number",
        "bool_type": "must be true or false",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
    }
    return messages.get(kind, fallback)
