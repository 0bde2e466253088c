"""Twitch EventSub notifications → the grants (and links) the rewards file asks for. Pure: no I/O.

``plan_notification`` reads one event against ``[[twitch.rules]]`` and returns
a ``Plan``; the router (``producers/twitch/webhook.py``) carries it out. Each matching
rule is its own grant with its own idempotency key,
``twitch:<event id, else message id>:<rule id>``, so a redelivery (same message
id) or the same redemption under a new message id maps to the same keys and
creates nothing new. A follow rule with ``once_per_viewer`` (the default) keys
on who follows whom instead, ``twitch:follow-<broadcaster>-<follower>:<rule id>``,
and its claim never expires (``NewGrant.keep_claim``): unfollowing and following
again, however much later, grants nothing more. One event gives each rule at
most one recipient, which is why the other keys need no recipient part:

- ``channel.subscribe`` rewards the subscriber (for ``is_gift: true``, only when
  the rule's ``gifted`` is ``recipient`` or ``both``);
- ``channel.subscription.gift`` rewards the gifter, through its own rules and
  through the *gifter share* of ``channel.subscribe`` rules whose ``gifted`` is
  ``gifter`` or ``both`` (the per-recipient events do not name the gifter, so
  that share is paid once per gift event, scaled by ``total``). A gift bomb is
  thus never counted twice: recipients are paid from their own events, the
  gifter from the gift event.

A redemption rule matches by ``reward_id``, or by the title it names: through ``RewardIds`` (titles
resolved to ids through Helix) when the title is resolved, else by the event's ``reward.title``
(trimmed, case-insensitively), so a title rule works before, or without, any resolution.

An event that lacks a field a matching rule needs (or has it with the wrong
type) raises ``MalformedEvent`` before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from config.domain import MAX_ABS_AMOUNT, is_discord_id, is_platform_user_id
from config.errors import WetbotRewardsError
from config.rewards import (
    ChannelPointsRedemptionRule,
    CheerRule,
    FollowRule,
    ItemAmount,
    RaidRule,
    SubscribeRule,
    SubscriptionGiftRule,
    SubscriptionMessageRule,
    TwitchSection,
    reward_title_key,
)
from worker.grant import GrantItem, NewGrant

__all__ = [
    "LinkRequest",
    "MalformedEvent",
    "Plan",
    "PlannedGrant",
    "RewardIds",
    "discord_id_from_input",
    "plan_notification",
]

#: Longest event id used in idempotency keys; longer ones fall back to the message id.
MAX_EVENT_ID_LEN = 200
#: Characters of a user-chosen text (login, reward title) kept in a grant's reason.
MAX_NAME_IN_REASON = 100
#: A Discord mention (``<@123>`` or ``<@!123>``), accepted as well as the bare id in ``user_input``.
_MENTION = re.compile(r"<@!?([0-9]+)>")


class MalformedEvent(WetbotRewardsError, ValueError):
    """Raised when an event lacks a field a matching rule needs, or has it with the wrong type."""


@dataclass(frozen=True)
class PlannedGrant:
    """One grant to submit for a Twitch user (the Discord user is resolved, or the grant parked, later)."""

    rule_id: str
    guild_id: str
    twitch_user_id: str
    items: tuple[GrantItem, ...]
    idempotency_key: str
    reason: str
    #: The key is a once-ever fact; its claim never expires (``NewGrant.keep_claim``).
    keep_claim: bool = False
    #: the user's login and display name as the event gives them (``NewGrant.names``: for searching).
    names: tuple[str, ...] = ()

    def to_new_grant(self, message_id: str) -> NewGrant:
        """The ledger request; ``user_id`` stays empty until ``submit_for_identity`` resolves the link."""
        return NewGrant(
            guild_id=self.guild_id,
            user_id="",
            items=self.items,
            source="twitch",
            idempotency_key=self.idempotency_key,
            source_ref=message_id,
            rule=self.rule_id,
            reason=self.reason,
            platform="twitch",
            external_id=self.twitch_user_id,
            keep_claim=self.keep_claim,
            names=self.names,
        )


@dataclass(frozen=True)
class LinkRequest:
    """A ``link_reward`` redemption: link ``twitch_user_id`` to the Discord id the viewer typed."""

    rule_id: str
    twitch_user_id: str
    #: None when ``user_input`` is not a Discord id (no link is made).
    discord_user_id: str | None


@dataclass(frozen=True)
class Plan:
    """What one notification asks for. Links come first: their grants then go to the linked user."""

    grants: tuple[PlannedGrant, ...] = ()
    links: tuple[LinkRequest, ...] = ()
    #: ``<rule id>: why`` for each rule of this event type that granted nothing (for logs).
    skipped: tuple[str, ...] = ()


class RewardIds(Mapping[str, str]):
    """Reward titles resolved to reward ids (through Helix): title → id, looked up as ``reward_title_key``
    compares, so ``"Daily chest"`` and ``"daily CHEST "`` are one entry. Empty means nothing is resolved yet."""

    def __init__(self, ids_by_title: Mapping[str, str] | None = None) -> None:
        self._ids = {reward_title_key(title): reward_id for title, reward_id in (ids_by_title or {}).items()}

    def __getitem__(self, title: str) -> str:
        return self._ids[reward_title_key(title)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


#: No title resolved: title rules match on the event's ``reward.title``.
NO_REWARD_IDS = RewardIds()


class _Builder:
    """Collects a plan for one event; the ``_plan_*`` functions below call it per rule."""

    def __init__(self, key_base: str, event: Mapping[str, Any], reward_ids: RewardIds) -> None:
        self.key_base = key_base
        self.event = event
        self.reward_ids = reward_ids
        self.grants: list[PlannedGrant] = []
        self.links: list[LinkRequest] = []
        self.skipped: list[str] = []

    def grant(self, rule: Any, user_id: str, reason: str, factor: int = 1, *, once_key: str | None = None) -> None:
        """Plan ``rule``'s grant for ``user_id``; ``once_key`` replaces the event's key base for good (a follow)."""
        items = tuple(GrantItem(item.id, _scaled(item, factor)) for item in rule.items)
        self.grants.append(
            PlannedGrant(
                rule_id=rule.rule_id,
                guild_id=rule.effective_guild_id,
                twitch_user_id=user_id,
                items=items,
                idempotency_key=f"twitch:{once_key or self.key_base}:{rule.rule_id}",
                reason=(rule.reason or reason)[:500],
                keep_claim=once_key is not None,
                names=_names_of(self.event, user_id),
            )
        )

    def skip(self, rule: Any, why: str) -> None:
        self.skipped.append(f"{rule.rule_id}: {why}")

    def plan(self) -> Plan:
        return Plan(tuple(self.grants), tuple(self.links), tuple(self.skipped))


def plan_notification(
    section: TwitchSection,
    subscription_type: str,
    event: Mapping[str, Any],
    message_id: str,
    reward_ids: RewardIds = NO_REWARD_IDS,
) -> Plan:
    """The grants and links ``event`` (of ``subscription_type``) earns under ``section``'s rules.

    Parameters:
      section: ``rewards.twitch``.
      subscription_type: ``subscription.type`` from the signed body.
      event: the notification's ``event`` object.
      message_id: the ``Twitch-Eventsub-Message-Id``; the key base when the event has no ``id``.
      reward_ids: the reward titles resolved so far; a title rule whose title is not in it matches
        on the event's ``reward.title``.

    Raises:
      MalformedEvent: a field a matching rule needs is missing or mistyped.
    """
    planner = _PLANNERS.get(subscription_type)
    if planner is None:
        return Plan()
    builder = _Builder(_key_base(event, message_id), event, reward_ids)
    planner(section, event, builder)
    return builder.plan()


def discord_id_from_input(text: Any) -> str | None:
    """The Discord user id in a redemption's ``user_input`` (bare id or mention), or None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    mention = _MENTION.fullmatch(text)
    candidate = mention[1] if mention else text
    if is_discord_id(candidate):
        return candidate
    return None


# -- one planner per subscription type -------------------------------------------------


def _plan_subscribe(section: TwitchSection, event: Mapping[str, Any], out: _Builder) -> None:
    rules = [r for r in section.rules_for("channel.subscribe") if isinstance(r, SubscribeRule)]
    if not rules:
        return
    tier = _str(event, "tier")
    is_gift = _bool(event, "is_gift")
    for rule in rules:
        if rule.tier is not None and rule.tier != tier:
            out.skip(rule, f"tier {tier} is not {rule.tier}")
        elif is_gift and rule.gifted not in ("recipient", "both"):
            out.skip(rule, f"gifted sub, and gifted = {rule.gifted!r} does not reward the recipient")
        elif (user := _user(event, "user_id")) is None:
            out.skip(rule, "no user id")
        else:
            kind = "gifted sub" if is_gift else "sub"
            out.grant(rule, user, f"Twitch {kind} (tier {tier}){_by(event)}")


def _plan_gift(section: TwitchSection, event: Mapping[str, Any], out: _Builder) -> None:
    gift_rules = [r for r in section.rules_for("channel.subscription.gift") if isinstance(r, SubscriptionGiftRule)]
    sub_rules = [
        r
        for r in section.rules_for("channel.subscribe")
        if isinstance(r, SubscribeRule) and r.gifted in ("gifter", "both")
    ]
    if not gift_rules and not sub_rules:
        return
    tier = _str(event, "tier")
    total = _int(event, "total", minimum=1)
    anonymous = _bool(event, "is_anonymous", default=False)
    user = _user(event, "user_id")
    reason = f"Twitch gift of {total} tier {tier} sub{'s' if total != 1 else ''}{_by(event)}"
    candidates: list[SubscriptionGiftRule | SubscribeRule] = [*gift_rules, *sub_rules]
    for rule in candidates:
        allow_anonymous = isinstance(rule, SubscriptionGiftRule) and rule.anonymous
        if rule.tier is not None and rule.tier != tier:
            out.skip(rule, f"tier {tier} is not {rule.tier}")
        elif anonymous and not allow_anonymous:
            out.skip(rule, "anonymous gift")
        elif user is None:
            out.skip(rule, "the gifter has no user id")
        else:
            scale = rule.scale_by_total if isinstance(rule, SubscriptionGiftRule) else True
            out.grant(rule, user, reason, factor=total if scale else 1)


def _plan_resub(section: TwitchSection, event: Mapping[str, Any], out: _Builder) -> None:
    rules = [r for r in section.rules_for("channel.subscription.message") if isinstance(r, SubscriptionMessageRule)]
    if not rules:
        return
    tier = _str(event, "tier")
    months = _optional_int(event, "cumulative_months", minimum=0)
    for rule in rules:
        if rule.tier is not None and rule.tier != tier:
            out.skip(rule, f"tier {tier} is not {rule.tier}")
        elif rule.min_cumulative_months is not None and (months is None or months < rule.min_cumulative_months):
            out.skip(rule, f"{months} cumulative months, fewer than {rule.min_cumulative_months}")
        elif (user := _user(event, "user_id")) is None:
            out.skip(rule, "no user id")
        else:
            shown = f", {months} months" if months is not None else ""
            out.grant(rule, user, f"Twitch resub (tier {tier}{shown}){_by(event)}")


def _plan_cheer(section: TwitchSection, event: Mapping[str, Any], out: _Builder) -> None:
    rules = [r for r in section.rules_for("channel.cheer") if isinstance(r, CheerRule)]
    if not rules:
        return
    bits = _int(event, "bits", minimum=0)
    anonymous = _bool(event, "is_anonymous", default=False)
    # Twitch documents null user fields for anonymous cheers; twitch-cli sends "" (both mean "no one").
    user = _user(event, "user_id")
    for rule in rules:
        factor = bits // rule.per_bits if rule.per_bits is not None else 1
        if rule.min_bits is not None and bits < rule.min_bits:
            out.skip(rule, f"{bits} bits, fewer than min_bits {rule.min_bits}")
        elif factor == 0:
            out.skip(rule, f"{bits} bits, fewer than per_bits {rule.per_bits}")
        elif anonymous and not rule.anonymous:
            out.skip(rule, "anonymous cheer")
        elif user is None:
            out.skip(rule, "no user id")
        else:
            out.grant(rule, user, f"Twitch cheer of {bits} bits{_by(event)}", factor=factor)


def _plan_redemption(section: TwitchSection, event: Mapping[str, Any], out: _Builder) -> None:
    rules = [
        r
        for r in section.rules_for("channel.channel_points_custom_reward_redemption.add")
        if isinstance(r, ChannelPointsRedemptionRule)
    ]
    if not rules:
        return
    reward = event.get("reward")
    if not isinstance(reward, Mapping):
        raise MalformedEvent("reward: must be an object")
    title = reward.get("title")
    shown = f": {title[:MAX_NAME_IN_REASON]}" if isinstance(title, str) and title else ""
    for rule in rules:
        mismatch = _reward_mismatch(rule, reward, out.reward_ids)
        if mismatch is not None:
            out.skip(rule, mismatch)
            continue
        user = _user(event, "user_id")
        if user is None:
            out.skip(rule, "no user id")
            continue
        if rule.link_reward:
            out.links.append(LinkRequest(rule.rule_id, user, discord_id_from_input(event.get("user_input"))))
        out.grant(rule, user, f"Twitch channel points{shown}{_by(event)}")


def _reward_mismatch(rule: ChannelPointsRedemptionRule, reward: Mapping[str, Any], reward_ids: RewardIds) -> str | None:
    """Why the event's reward is not the rule's (None: it is). A title rule compares ids once its title
    is resolved (a renamed reward keeps its id), the event's title until then."""
    reward_id = _str(reward, "id")
    wanted = rule.reward_id
    if rule.reward is not None:
        wanted = reward_ids.get(rule.reward)
        if wanted is None:
            title = _str(reward, "title")
            if reward_title_key(title) == reward_title_key(rule.reward):
                return None
            return f"reward {title[:MAX_NAME_IN_REASON]!r} is not {rule.reward!r}"
    if reward_id == wanted:
        return None
    named = f" ({rule.reward!r})" if rule.reward is not None else ""
    return f"reward {reward_id} is not {wanted}{named}"


def _plan_follow(section: TwitchSection, event: Mapping[str, Any], out: _Builder) -> None:
    for rule in section.rules_for("channel.follow"):
        if not isinstance(rule, FollowRule):
            continue
        user = _user(event, "user_id")
        if user is None:
            out.skip(rule, "no user id")
            continue
        once_key = None
        if rule.once_per_viewer:
            channel = _user(event, "broadcaster_user_id")
            if channel is None:
                raise MalformedEvent("broadcaster_user_id: must be a Twitch user id (a string of digits)")
            once_key = f"follow-{channel}-{user}"
        out.grant(rule, user, f"Twitch follow{_by(event)}", once_key=once_key)


def _plan_raid(section: TwitchSection, event: Mapping[str, Any], out: _Builder) -> None:
    rules = [r for r in section.rules_for("channel.raid") if isinstance(r, RaidRule)]
    if not rules:
        return
    viewers = _int(event, "viewers", minimum=0)
    for rule in rules:
        if rule.min_viewers is not None and viewers < rule.min_viewers:
            out.skip(rule, f"{viewers} viewers, fewer than min_viewers {rule.min_viewers}")
        elif (raider := _user(event, "from_broadcaster_user_id")) is None:
            out.skip(rule, "no raiding broadcaster id")
        else:
            login = _name(event, "from_broadcaster_user_login")
            out.grant(rule, raider, f"Twitch raid with {viewers} viewers{f' by {login}' if login else ''}")


_PLANNERS: dict[str, Callable[[TwitchSection, Mapping[str, Any], _Builder], None]] = {
    "channel.subscribe": _plan_subscribe,
    "channel.subscription.gift": _plan_gift,
    "channel.subscription.message": _plan_resub,
    "channel.cheer": _plan_cheer,
    "channel.channel_points_custom_reward_redemption.add": _plan_redemption,
    "channel.follow": _plan_follow,
    "channel.raid": _plan_raid,
}


# -- field readers: strict about types, because a wrong type means we misunderstood the event ----------


def _key_base(event: Mapping[str, Any], message_id: str) -> str:
    """The event's own id (a redemption's), which survives redelivery under a new message id; else the message id."""
    event_id = event.get("id")
    if isinstance(event_id, str) and 0 < len(event_id) <= MAX_EVENT_ID_LEN and event_id.isprintable():
        return event_id
    return message_id


def _user(event: Mapping[str, Any], field: str) -> str | None:
    """A Twitch user id, or None when absent, null or "" (anonymous)."""
    value = event.get(field)
    if value is None or value == "":
        return None
    if not is_platform_user_id(value):
        raise MalformedEvent(f"{field}: must be a Twitch user id (a string of digits)")
    return value


def _names_of(event: Mapping[str, Any], user_id: str) -> tuple[str, ...]:
    """The login and display name beside the ``*user_id`` field that holds ``user_id`` (``user_login``,
    ``from_broadcaster_user_name``...), as far as the event gives them; never raises."""
    for field, value in event.items():
        if field.endswith("user_id") and value == user_id:
            stem = field.removesuffix("id")
            found = (_name(event, stem + "login"), _name(event, stem + "name"))
            return tuple(dict.fromkeys(name for name in found if name))
    return ()


def _str(event: Mapping[str, Any], field: str) -> str:
    value = event.get(field)
    if not isinstance(value, str):
        raise MalformedEvent(f"{field}: must be a string")
    return value


def _bool(event: Mapping[str, Any], field: str, *, default: bool | None = None) -> bool:
    value = event.get(field, default)
    if not isinstance(value, bool):
        raise MalformedEvent(f"{field}: must be true or false")
    return value


def _int(event: Mapping[str, Any], field: str, *, minimum: int) -> int:
    value = event.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MalformedEvent(f"{field}: must be a whole number of at least {minimum}")
    return value


def _optional_int(event: Mapping[str, Any], field: str, *, minimum: int) -> int | None:
    return None if event.get(field) is None else _int(event, field, minimum=minimum)


def _name(event: Mapping[str, Any], field: str) -> str:
    value = event.get(field)
    return value[:MAX_NAME_IN_REASON] if isinstance(value, str) else ""


def _by(event: Mapping[str, Any]) -> str:
    login = _name(event, "user_login")
    return f" by {login}" if login else ""


def _scaled(item: ItemAmount, factor: int) -> float:
    """``amount * factor``, capped at WetBot's ±1e9 (a huge cheer must not become a request WetBot refuses)."""
    amount = float(Decimal(repr(item.amount)) * factor)  # exact: 0.1 x 3 is 0.3, not 0.30000000000000004
    return max(-float(MAX_ABS_AMOUNT), min(float(MAX_ABS_AMOUNT), amount))
