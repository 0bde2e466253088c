"""What the console's Twitch page shows: the connection, its token, the scopes, the rewards, the missed periods.

Everything is read from Redis as the other processes left it: the token vault's state
(``producers.twitch.tokens``; no token is ever read into the page), the reward catalogue of the last sync
(``producers.twitch.reward_catalogue``) and the missed periods the Twitch process recorded
(``producers.twitch.runner``). The only decryption tried is whether this process' key opens the stored
tokens (``TokenVault.key_fits``), so a wrong key shows as such without changing what others see.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.rewards import ChannelPointsRedemptionRule, TwitchSection, reward_title_key
from producers.twitch.gaps import MissedPeriod
from producers.twitch.oauth import missing_scopes, scopes_for
from producers.twitch.reward_catalogue import AMBIGUOUS, Catalogue, CatalogueReward
from producers.twitch.tokens import AuthState, VaultState

__all__ = [
    "NOT_OURS",
    "RewardRow",
    "TitleRow",
    "TokenStatus",
    "TwitchStatus",
    "reward_rows",
    "title_rows",
    "token_status",
    "twitch_status",
]

#: Why another app's reward can never be refunded (docs/sources-sync.md §1.1).
NOT_OURS = (
    "not possible: another app (or the dashboard) made this reward, and Twitch lets only the client id "
    "that created a reward update its redemptions"
)


@dataclass(frozen=True)
class TokenStatus:
    """The token's state in a word (``valid``, ``refresh failed``, ``revoked``, ``missing encryption key``,
    ``wrong key``, ``not connected``) and a plain sentence of what to do."""

    label: str
    todo: str
    #: ``ok``, ``warn`` or ``error`` (the page colours it).
    tone: str


@dataclass(frozen=True)
class RewardRow:
    """One reward on the channel with whether its redemptions are refunded when their grant fails."""

    reward: CatalogueReward
    #: The names of the rules redeeming it.
    rules: tuple[str, ...]
    refundable: bool
    #: Why (or why not), in a few words.
    refund: str


@dataclass(frozen=True)
class TitleRow:
    """A title a rule names and what the last sync resolved it to."""

    title: str
    rules: tuple[str, ...]
    #: The reward id ("" when unresolved or ambiguous).
    reward_id: str
    problem: str


@dataclass(frozen=True)
class TwitchStatus:
    vault: VaultState
    token: TokenStatus
    #: The broadcaster's display name when the service has seen it ("" otherwise).
    display_name: str
    needed: tuple[str, ...]
    granted: tuple[str, ...]
    missing: tuple[str, ...]
    #: Granted but needed by no rule (harmless; a new connection would not ask for them).
    extra: tuple[str, ...]
    catalogue: Catalogue
    rewards: tuple[RewardRow, ...]
    titles: tuple[TitleRow, ...]
    #: Newest first.
    missed: tuple[MissedPeriod, ...]
    #: The rules file names rewards by title or declares ``[[twitch.rewards]]`` (a sync has something to list).
    declares_rewards: bool

    @property
    def connected(self) -> bool:
        """Tokens are stored (whatever their state)."""
        return self.vault.state is not AuthState.NOT_CONNECTED


def token_status(vault: VaultState, key_problem: str | None, key_fits: bool | None) -> TokenStatus:
    """The token's state for the page: the vault's, unless this process has no key or the wrong one.

    ``key_problem``: why this process has no usable ``TOKEN_ENCRYPTION_KEY`` (None: it has one).
    ``key_fits``: whether that key opens the stored tokens (None: nothing stored, or no key).
    """
    if vault.state is AuthState.NOT_CONNECTED:
        return TokenStatus("not connected", "No channel is connected yet: connect it below.", "warn")
    if key_problem is not None:
        return TokenStatus(
            "missing encryption key",
            f"{key_problem}. Set TOKEN_ENCRYPTION_KEY (the key the tokens were stored with) on every process, "
            "then restart them.",
            "error",
        )
    if key_fits is False or vault.state is AuthState.UNDECRYPTABLE:
        return TokenStatus(
            "wrong key",
            "The stored tokens cannot be decrypted with this TOKEN_ENCRYPTION_KEY. Set the key they were stored "
            "with on every process, or connect again (that replaces them).",
            "error",
        )
    if vault.state is AuthState.REVOKED:
        return TokenStatus(
            "revoked",
            f"Twitch refused the token ({vault.reason or 'no reason given'}): the channel disconnected the app or "
            "the token expired unused. Connect again; until then nothing from Twitch is fulfilled or refunded.",
            "error",
        )
    if vault.state is AuthState.REFRESH_FAILED:
        return TokenStatus(
            "refresh failed",
            f"The last refresh did not get through ({vault.reason or 'no reason given'}). Nothing to do if it "
            "is brief: the next use tries again. If it lasts, check that Twitch is reachable from the server.",
            "warn",
        )
    if vault.validation and vault.validation != "ok":
        return TokenStatus(
            "valid",
            f"The last validation said: {vault.validation}. The Twitch process validates again within the hour.",
            "warn",
        )
    return TokenStatus("valid", "Nothing to do: the Twitch process validates the token every hour.", "ok")


def reward_rows(section: TwitchSection, catalogue: Catalogue) -> tuple[RewardRow, ...]:
    """Every listed reward, with the rules redeeming it and whether their redemptions can be refunded."""
    rows = []
    for reward in catalogue.rewards:
        rules = [rule for rule in _redemption_rules(section) if _reward_id(rule, catalogue) == reward.id]
        names = tuple(rule.rule_id for rule in rules)
        if not reward.ours:
            rows.append(RewardRow(reward, names, False, NOT_OURS))
        elif rules and not any(rule.refund for rule in rules):
            rows.append(RewardRow(reward, names, False, "off: refund = false in the rule"))
        else:
            rows.append(RewardRow(reward, names, True, "yes: made by this service"))
    return tuple(rows)


def title_rows(section: TwitchSection, catalogue: Catalogue) -> tuple[TitleRow, ...]:
    """Each title the rules name, with the reward id it resolved to, or why it did not."""
    rows = []
    for title in section.reward_titles():
        key = reward_title_key(title)
        names = tuple(rule.rule_id for rule in _redemption_rules(section) if rule.title_key == key)
        found = catalogue.ids.get(key)
        if found is None:
            problem = "not resolved yet" if not catalogue.at else "matches no reward on the channel"
            rows.append(TitleRow(title, names, "", problem))
        elif found == AMBIGUOUS:
            rows.append(TitleRow(title, names, "", "matches several rewards: rename all but one on Twitch"))
        else:
            rows.append(TitleRow(title, names, found, ""))
    return tuple(rows)


def twitch_status(
    vault: VaultState,
    *,
    key_problem: str | None,
    key_fits: bool | None,
    section: TwitchSection,
    catalogue: Catalogue,
    missed: list[MissedPeriod],
    display_names: dict[str, tuple[str, str]],
) -> TwitchStatus:
    """The whole page's view. ``display_names``: Twitch id -> (login, display name) the service has seen."""
    needed = scopes_for(section)
    granted = tuple(sorted(vault.scopes))
    return TwitchStatus(
        vault=vault,
        token=token_status(vault, key_problem, key_fits),
        display_name=display_names.get(vault.user_id, ("", ""))[1] if vault.user_id else "",
        needed=needed,
        granted=granted,
        missing=missing_scopes(needed, granted) if vault.state is not AuthState.NOT_CONNECTED else needed,
        extra=tuple(sorted(set(granted) - set(needed))),
        catalogue=catalogue,
        rewards=reward_rows(section, catalogue),
        titles=title_rows(section, catalogue),
        missed=tuple(reversed(missed)),
        declares_rewards=bool(section.reward_titles() or section.rewards),
    )


def _redemption_rules(section: TwitchSection) -> list[ChannelPointsRedemptionRule]:
    return [rule for rule in section.rules if isinstance(rule, ChannelPointsRedemptionRule)]


def _reward_id(rule: ChannelPointsRedemptionRule, catalogue: Catalogue) -> str | None:
    if rule.reward_id is not None:
        return str(rule.reward_id)
    found = catalogue.ids.get(rule.title_key or "")
    return found or None
