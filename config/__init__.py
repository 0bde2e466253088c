"""Configuration: process settings from the environment, and the rewards (rules) file.

Nothing here reads the environment or a file at import time: entry points call
``settings_or_exit()`` / ``load_rewards()`` and pass the results down.

The names below are imported on first use (PEP 562), so importing one submodule does not load them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from config.errors import ConfigError, RewardsFileError, WetbotRewardsError
    from config.rewards import (
        PATREON_EVENTS,
        TWITCH_EVENTS,
        ChannelPointsRedemptionRule,
        CheerRule,
        FollowRule,
        ItemAmount,
        OwnedReward,
        PatreonRule,
        PatreonSection,
        PledgeCreateRule,
        PledgeUpdateRule,
        RaidRule,
        RenewalRule,
        RewardsConfig,
        SubscribeRule,
        SubscriptionGiftRule,
        SubscriptionMessageRule,
        TwitchRule,
        TwitchSection,
        load_rewards,
        parse_rewards,
    )
    from config.settings import RateLimit, Settings, load_settings, settings_or_exit

__all__ = [  # grouped by concept, as Dramatiq groups its own
    # errors
    "ConfigError",
    "RewardsFileError",
    "WetbotRewardsError",
    # settings
    "RateLimit",
    "Settings",
    "load_settings",
    "settings_or_exit",
    # rewards file
    "PATREON_EVENTS",
    "TWITCH_EVENTS",
    "ItemAmount",
    "OwnedReward",
    "PatreonSection",
    "RewardsConfig",
    "TwitchSection",
    "load_rewards",
    "parse_rewards",
    # rewards file: rule kinds
    "ChannelPointsRedemptionRule",
    "CheerRule",
    "FollowRule",
    "PatreonRule",
    "PledgeCreateRule",
    "PledgeUpdateRule",
    "RaidRule",
    "RenewalRule",
    "SubscribeRule",
    "SubscriptionGiftRule",
    "SubscriptionMessageRule",
    "TwitchRule",
]

#: Where each exported name lives.
_HOMES = {
    "ConfigError": "config.errors",
    "RewardsFileError": "config.errors",
    "WetbotRewardsError": "config.errors",
    "PATREON_EVENTS": "config.rewards",
    "TWITCH_EVENTS": "config.rewards",
    "ChannelPointsRedemptionRule": "config.rewards",
    "CheerRule": "config.rewards",
    "FollowRule": "config.rewards",
    "ItemAmount": "config.rewards",
    "OwnedReward": "config.rewards",
    "PatreonRule": "config.rewards",
    "PatreonSection": "config.rewards",
    "PledgeCreateRule": "config.rewards",
    "PledgeUpdateRule": "config.rewards",
    "RaidRule": "config.rewards",
    "RenewalRule": "config.rewards",
    "RewardsConfig": "config.rewards",
    "SubscribeRule": "config.rewards",
    "SubscriptionGiftRule": "config.rewards",
    "SubscriptionMessageRule": "config.rewards",
    "TwitchRule": "config.rewards",
    "TwitchSection": "config.rewards",
    "load_rewards": "config.rewards",
    "parse_rewards": "config.rewards",
    "RateLimit": "config.settings",
    "Settings": "config.settings",
    "load_settings": "config.settings",
    "settings_or_exit": "config.settings",
}

__getattr__ = lazy_exports(__name__, _HOMES)
