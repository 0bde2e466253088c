"""Configuration: process settings from the environment, and the rewards (rules) file.

Nothing here reads the environment or a file at import time: entry points call
``settings_or_exit()`` / ``load_rewards()`` and pass the results down.
"""

from config.errors import ConfigError, RewardsFileError, WetbotRewardsError
from config.rewards import (
    PATREON_EVENTS,
    TWITCH_EVENTS,
    ChannelPointsRedemptionRule,
    CheerRule,
    FollowRule,
    ItemAmount,
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
