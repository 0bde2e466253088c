"""The EventSub subscriptions the rules need (``twitch subscribe`` for webhooks, the Twitch process for its
WebSocket session)."""

from __future__ import annotations

from dataclasses import dataclass

from config.rewards import ChannelPointsRedemptionRule, TwitchSection
from producers.twitch.helix import Subscription
from producers.twitch.samples import SAMPLE_TYPES

__all__ = ["WantedSubscription", "wanted_subscriptions"]


@dataclass(frozen=True)
class WantedSubscription:
    """One EventSub subscription the rules need."""

    type: str
    version: str
    condition: dict[str, str]

    def describe(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in sorted(self.condition.items()))
        return f"{self.type} v{self.version} ({shown})"

    def matched_by(self, existing: Subscription, callback: str) -> bool:
        """Same type, version, webhook callback and condition.

        A redemption subscription without a ``reward_id`` covers every reward of the broadcaster.
        """
        wanted = (self.type, self.version, "webhook", callback)
        if (existing.type, existing.version, existing.method, existing.callback) != wanted:
            return False
        if existing.condition == self.condition:
            return True
        all_rewards = {k: v for k, v in self.condition.items() if k != "reward_id"}
        return self.type == "channel.channel_points_custom_reward_redemption.add" and existing.condition == all_rewards


def wanted_subscriptions(section: TwitchSection, broadcaster_id: str) -> list[WantedSubscription]:
    """The subscriptions ``section``'s rules need, in rule order, without repeats.

    Conditions per docs/twitch.md §2: ``channel.follow`` v2 also needs
    ``moderator_user_id`` (the broadcaster), ``channel.raid`` is keyed on the
    receiving channel (``to_broadcaster_user_id``), and a redemption rule asks
    for its own ``reward_id``; a rule naming its reward by title asks for every
    reward (its id is not known here), which makes the per-reward ones redundant.
    A ``channel.subscribe`` rule that rewards gifters
    also needs ``channel.subscription.gift`` (the gifter is named only there).
    """
    wanted: list[WantedSubscription] = []

    def add(subscription_type: str, condition: dict[str, str]) -> None:
        item = WantedSubscription(subscription_type, SAMPLE_TYPES[subscription_type], condition)
        if item not in wanted:
            wanted.append(item)

    broadcaster = {"broadcaster_user_id": broadcaster_id}
    for rule in section.rules:
        if rule.event == "channel.raid":
            add(rule.event, {"to_broadcaster_user_id": broadcaster_id})
        elif rule.event == "channel.follow":
            add(rule.event, {**broadcaster, "moderator_user_id": broadcaster_id})
        elif isinstance(rule, ChannelPointsRedemptionRule):
            add(rule.event, broadcaster if rule.reward_id is None else {**broadcaster, "reward_id": rule.reward_id})
        else:
            add(rule.event, broadcaster)
            if rule.event == "channel.subscribe" and getattr(rule, "gifted", "") in ("gifter", "both"):
                add("channel.subscription.gift", broadcaster)
    redemption = "channel.channel_points_custom_reward_redemption.add"
    if WantedSubscription(redemption, SAMPLE_TYPES[redemption], broadcaster) in wanted:
        wanted = [w for w in wanted if w.type != redemption or "reward_id" not in w.condition]
    return wanted
