"""The channel's custom rewards, kept in line with the rules file: rewards by name, not by id.

``RewardSync.run_once`` is one pass, made at start and every few minutes by the Twitch process:

1. It lists the channel's rewards through Helix twice, all of them and those our client id may manage
   (``only_manageable_rewards=true``): only those can be updated, or have their redemptions fulfilled or
   refunded (docs/sources-sync.md §1.1).
2. Each ``[[twitch.rewards]]`` table is found on Twitch, first by the id the last pass gave it (so a
   reward the streamer renamed on the dashboard is still ours, and gets its title back), then by title.
   Missing: created. Ours with fields that differ from the file: updated, sending only what changed.
   A reward with the same title made by another app (or on the dashboard) is reported and left alone:
   creating another would be refused by Twitch, and its redemptions could never be refunded.
3. Each title a redemption rule names (``reward = "<title>"``) is resolved to a reward id. No match, or
   several (titles compare trimmed and case-insensitively, Twitch's own check is stricter), is a one-line
   problem naming the rule; the other rules keep working. A title that no longer matches but whose
   reward the last pass resolved still exists (renamed on Twitch) stays resolved to that id, with a note:
   a renamed reward keeps matching its rule.
4. The result (``Catalogue``) is stored in Redis in one write (``Keys.twitch_reward_catalogue``). The
   webhook and WebSocket path read the resolved ids from there (``RewardIdsCache``), so matching is by
   reward id, whatever the reward is called today.

A title that matches several rewards resolves to no id at all (``AMBIGUOUS``): its rule then matches
nothing, rather than granting for whichever of them was redeemed.

A pass that Twitch refuses (not connected, 5xx, 401 after the refresh) keeps the last catalogue and
records why; a 429 also makes the next passes wait until Helix's bucket is full again (``HelixRateLimited``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from config.rewards import ChannelPointsRedemptionRule, OwnedReward, TwitchSection, reward_title_key
from producers.twitch.broadcaster_api import BroadcasterHelix, ChannelReward, HelixRateLimited
from producers.twitch.helix import HelixError
from producers.twitch.oauth import TwitchAuthError
from producers.twitch.rules import NO_REWARD_IDS, RewardIds
from worker.keys import Keys

__all__ = [
    "AMBIGUOUS",
    "SYNC_EVERY_S",
    "Catalogue",
    "CatalogueReward",
    "RewardCatalogue",
    "RewardIdsCache",
    "RewardSync",
    "SyncResult",
    "reward_changes",
]

logger = logging.getLogger("wetbot_rewards.twitch")

#: The id a title matching several rewards resolves to: no event's reward has it, so its rule matches nothing.
AMBIGUOUS = ""
#: Seconds between two passes in the Twitch process (``producers.twitch.runner``); the first runs at its start.
SYNC_EVERY_S = 300.0
#: Seconds the webhook path reuses the resolved ids it read (a sync runs every few minutes).
IDS_CACHE_S = 2.0
#: The Helix limits a table sets: (switch, value) in the Create/Update Custom Reward body. One changed
#: means both are sent, since Twitch wants the value with its switch.
_SETTINGS = (
    ("is_max_per_stream_enabled", "max_per_stream"),
    ("is_max_per_user_per_stream_enabled", "max_per_user_per_stream"),
    ("is_global_cooldown_enabled", "global_cooldown_seconds"),
)


@dataclass(frozen=True)
class CatalogueReward:
    """One reward on the channel as the console shows it."""

    id: str
    title: str
    cost: int
    #: Our client id created it: its redemptions can be fulfilled and refunded.
    ours: bool


@dataclass(frozen=True)
class Catalogue:
    """What the last sync found (``Keys.twitch_reward_catalogue``)."""

    #: When the rewards were last listed (epoch seconds; 0: never).
    at: float = 0.0
    rewards: tuple[CatalogueReward, ...] = ()
    #: ``reward_title_key`` of each title a rule names -> its reward id (``AMBIGUOUS`` for several).
    ids: Mapping[str, str] = field(default_factory=dict)
    #: ``reward_title_key`` of each ``[[twitch.rewards]]`` table -> the id of our reward for it.
    owned: Mapping[str, str] = field(default_factory=dict)
    #: One line each: titles that match no reward or several, another app's reward in the way, refusals.
    problems: tuple[str, ...] = ()
    #: One line each: what the last pass changed or noticed (created, updated, renamed on Twitch).
    notes: tuple[str, ...] = ()
    #: Why the last pass did not finish ("" when it did); the rest is then the last complete pass's.
    error: str = ""
    #: When that failed pass was (epoch seconds; 0: the last pass finished).
    error_at: float = 0.0

    def reward_ids(self) -> RewardIds:
        """The resolved titles as the rules read them."""
        return RewardIds(self.ids)

    def reward(self, reward_id: str) -> CatalogueReward | None:
        """The reward with this id, as last listed."""
        return next((reward for reward in self.rewards if reward.id == reward_id), None)

    def is_ours(self, reward_id: str) -> bool:
        """True when our client id created this reward (its redemptions can be fulfilled or refunded)."""
        found = self.reward(reward_id)
        return found is not None and found.ours

    def to_json(self) -> str:
        return json.dumps(
            {
                "at": self.at,
                "rewards": [{"id": r.id, "title": r.title, "cost": r.cost, "ours": r.ours} for r in self.rewards],
                "ids": dict(self.ids),
                "owned": dict(self.owned),
                "problems": list(self.problems),
                "notes": list(self.notes),
                "error": self.error,
                "error_at": self.error_at,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Catalogue:
        """The stored catalogue; an unreadable record reads as an empty one (the next pass writes it again)."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return cls(error="the stored reward catalogue is unreadable")
        if not isinstance(data, dict):
            return cls(error="the stored reward catalogue is unreadable")
        rewards = tuple(
            CatalogueReward(str(r.get("id", "")), str(r.get("title", "")), _int(r.get("cost")), r.get("ours") is True)
            for r in data.get("rewards") or []
            if isinstance(r, dict)
        )
        return cls(
            at=_float(data.get("at")),
            rewards=rewards,
            ids=_text_map(data.get("ids")),
            owned=_text_map(data.get("owned")),
            problems=_lines(data.get("problems")),
            notes=_lines(data.get("notes")),
            error=str(data.get("error") or ""),
            error_at=_float(data.get("error_at")),
        )


@dataclass(frozen=True)
class SyncResult:
    """What one pass did."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    #: Why the pass stopped ("" when it finished).
    error: str = ""
    #: The pass was not made: Helix's bucket is not full again before this (epoch seconds).
    waiting_until: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and not self.waiting_until


class RewardCatalogue:
    """The stored catalogue (one Redis string), read by the console and written by ``RewardSync``."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def load(self) -> Catalogue:
        """The last stored catalogue (an empty one before the first pass)."""
        raw = self._redis.get(self._keys.twitch_reward_catalogue())
        if not isinstance(raw, str | bytes):
            return Catalogue()
        return Catalogue.from_json(raw)

    def save(self, catalogue: Catalogue) -> None:
        self._redis.set(self._keys.twitch_reward_catalogue(), catalogue.to_json())


class RewardIdsCache:
    """The resolved reward ids for the event path, read from Redis at most every ``IDS_CACHE_S`` seconds."""

    def __init__(self, ttl_s: float = IDS_CACHE_S) -> None:
        self._ttl_s = ttl_s
        self._read_at = float("-inf")
        self._ids = NO_REWARD_IDS

    async def get(self, aredis: AsyncRedis, keys: Keys) -> RewardIds:
        """The ids the last sync resolved (none before the first: title rules then match the event's title)."""
        now = time.monotonic()
        if now - self._read_at >= self._ttl_s:
            raw = await aredis.get(keys.twitch_reward_catalogue())
            self._ids = Catalogue.from_json(raw).reward_ids() if isinstance(raw, str | bytes) else NO_REWARD_IDS
            self._read_at = now
        return self._ids


class RewardSync:
    """One pass at a time of creating, updating and resolving the rewards (see the module docstring).

    Parameters:
      helix: Helix as the broadcaster.
      section: ``rewards.twitch`` (its ``[[twitch.rewards]]`` tables and redemption rules).
      catalogue: where the result is kept.
      clock: epoch seconds (``time.time``).
    """

    def __init__(
        self,
        helix: BroadcasterHelix,
        section: TwitchSection,
        catalogue: RewardCatalogue,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._helix = helix
        self._section = section
        self._catalogue = catalogue
        self._clock = clock
        self._not_before = 0.0

    def run_once(self) -> SyncResult:
        """One pass. Never raises for what Twitch answers: a refusal is recorded and the last catalogue kept."""
        now = self._clock()
        if now < self._not_before:
            return SyncResult(waiting_until=self._not_before)
        previous = self._catalogue.load()
        try:
            broadcaster_id = self._helix.broadcaster_id
            listed = self._listed(broadcaster_id)
            owned, done = self._own(broadcaster_id, listed, previous)
        except HelixRateLimited as exc:
            self._not_before = max(exc.reset_at, now + 1.0)
            return self._failed(previous, f"{exc}; next pass after Helix's bucket refills", now, self._not_before)
        except (HelixError, TwitchAuthError) as exc:
            return self._failed(previous, str(exc), now)
        ids, resolved = self._resolve(listed, previous)
        problems = (*done.problems, *resolved.problems)
        catalogue = Catalogue(
            at=now,
            rewards=tuple(
                CatalogueReward(r.id, r.title, r.cost, r.ours) for r in sorted(listed.values(), key=_by_title)
            ),
            ids=ids,
            owned=owned,
            problems=problems,
            notes=(*done.notes, *resolved.notes),
        )
        self._catalogue.save(catalogue)
        for line in problems:
            if line not in previous.problems:
                logger.warning("twitch rewards: %s", line)
        for line in catalogue.notes:
            if line not in previous.notes:  # a rename is noted on every pass until the file says the new title
                logger.info("twitch rewards: %s", line)
        return SyncResult(created=tuple(done.created), updated=tuple(done.updated), problems=problems)

    # -- steps ------------------------------------------------------------------------------------
    def _listed(self, broadcaster_id: str) -> dict[str, ChannelReward]:
        """Every reward on the channel by id, each marked ours or not."""
        ours = {reward.id for reward in self._helix.list_rewards(broadcaster_id, only_manageable=True)}
        return {
            reward.id: replace(reward, ours=reward.id in ours) for reward in self._helix.list_rewards(broadcaster_id)
        }

    def _own(
        self, broadcaster_id: str, listed: dict[str, ChannelReward], previous: Catalogue
    ) -> tuple[dict[str, str], _Done]:
        """Create or update each ``[[twitch.rewards]]`` table's reward; ``listed`` is kept up to date."""
        owned: dict[str, str] = {}
        done = _Done()
        for table in self._section.rewards:
            current, in_the_way = _find_ours(table, listed, previous.owned.get(table.title_key))
            if in_the_way is not None:
                done.problems.append(
                    f'[[twitch.rewards]] "{table.title}": a reward with this title (id {in_the_way.id}) was made'
                    " by another app or on the dashboard; not created again, and its redemptions cannot be"
                    " fulfilled or refunded by this service: delete it on Twitch, or give the table another title"
                )
                continue
            try:
                if current is None:
                    made = self._helix.create_reward(broadcaster_id, table.helix_body())
                    listed[made.id] = made
                    owned[table.title_key] = made.id
                    done.created.append(table.title)
                    done.notes.append(f'created reward "{table.title}" (id {made.id}, {table.cost} points)')
                    continue
                owned[table.title_key] = current.id
                changes = reward_changes(table, current)
                if changes:
                    listed[current.id] = self._helix.update_reward(broadcaster_id, current.id, changes)
                    done.updated.append(table.title)
                    done.notes.append(f'updated reward "{table.title}" (id {current.id}): {", ".join(sorted(changes))}')
            except HelixRateLimited:
                raise
            except HelixError as exc:
                verb = "created" if current is None else "updated"
                done.problems.append(f'[[twitch.rewards]] "{table.title}": not {verb}: {exc}')
        return owned, done

    def _resolve(self, listed: Mapping[str, ChannelReward], previous: Catalogue) -> tuple[dict[str, str], _Done]:
        """Each rule's title -> its reward id, with one line per rule whose title matches none or several."""
        by_title: dict[str, list[ChannelReward]] = {}
        for reward in sorted(listed.values(), key=_by_title):
            by_title.setdefault(reward_title_key(reward.title), []).append(reward)
        ids: dict[str, str] = {}
        done = _Done()
        for rule in _title_rules(self._section):
            key = reward_title_key(rule.reward or "")
            matches = by_title.get(key, [])
            named = f'twitch rule "{rule.rule_id}": reward = "{rule.reward}"'
            if len(matches) == 1:
                ids[key] = matches[0].id
            elif matches:
                ids[key] = AMBIGUOUS
                shown = ", ".join(f'"{r.title}" ({r.id})' for r in matches)
                done.problems.append(
                    f"{named} matches {len(matches)} rewards on the channel: {shown}; it matches none until"
                    " all but one are renamed on Twitch, or it names one by reward_id"
                )
            elif (kept := previous.ids.get(key)) and kept in listed:
                ids[key] = kept
                done.notes.append(
                    f'{named}: the reward was renamed on Twitch to "{listed[kept].title}"; still matched by its id'
                    f" {kept} (write the new title in the rules file)"
                )
            else:
                done.problems.append(
                    f"{named} matches no reward on the channel; its redemptions are not rewarded until a reward"
                    " has this title (declare it in [[twitch.rewards]] to have it created)"
                )
        return ids, done

    def _failed(self, previous: Catalogue, why: str, now: float, waiting_until: float = 0.0) -> SyncResult:
        if why != previous.error:
            logger.warning("twitch rewards: not synchronised: %s", why)
        self._catalogue.save(replace(previous, error=why, error_at=now))
        return SyncResult(error=why, waiting_until=waiting_until)


def reward_changes(table: OwnedReward, current: ChannelReward) -> dict[str, str | int | bool]:
    """The part of ``table``'s Helix body that differs from the reward on Twitch (empty: nothing to send).

    A table without a prompt clears one set on Twitch; a colour left out is whatever Twitch has.
    """
    wanted = dict(table.helix_body())
    if table.prompt is None:
        wanted["prompt"] = ""
    changes = {name: value for name, value in wanted.items() if current.fields.get(name) != value}
    for switch, value in _SETTINGS:
        if switch in changes or value in changes:
            changes[switch] = wanted[switch]
            if value in wanted:
                changes[value] = wanted[value]
    return changes


# -- helpers ------------------------------------------------------------------------------------------


@dataclass
class _Done:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _find_ours(
    table: OwnedReward, listed: Mapping[str, ChannelReward], previous_id: str | None
) -> tuple[ChannelReward | None, ChannelReward | None]:
    """(our reward for ``table``, or None; another app's reward with its title, which stops us creating one)."""
    if previous_id is not None:
        known = listed.get(previous_id)
        if known is not None and known.ours:
            return known, None
    same = [reward for reward in listed.values() if reward_title_key(reward.title) == table.title_key]
    mine = [reward for reward in same if reward.ours]
    if mine:
        return mine[0], None
    return None, (same[0] if same else None)


def _title_rules(section: TwitchSection) -> Iterable[ChannelPointsRedemptionRule]:
    for rule in section.rules:
        if isinstance(rule, ChannelPointsRedemptionRule) and rule.reward is not None:
            yield rule


def _by_title(reward: ChannelReward) -> tuple[str, str]:
    return (reward_title_key(reward.title), reward.id)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _text_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _lines(value: object) -> tuple[str, ...]:
    return tuple(str(line) for line in value) if isinstance(value, list) else ()
