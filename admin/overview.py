"""The state of the service at a glance, per guild and its API key: what waits, what failed, what went out.

Everything is read from indexes in a few pipelined round trips (``worker.grant_index``: a guild's
grants per state; ``Keys.traffic``: webhook deliveries per hour), never by walking grants, so it
costs the same with a hundred grants or a million. The backlog ETA is ``worker.eta``'s, counted
for the key's whole backlog: its window's slots as they free, ``limit`` requests a window, one per
waiting grant, after any 429 block or 401/403 pause; ``worker.eta`` estimates single grants more
closely (one request per waiting member, with coalescing).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum

from redis import Redis

from config.keyring import Keyring
from config.settings import Settings
from producers.inbox import EventInbox, InboxEvent, Outcome
from worker import redis_values as values
from worker.eta import earliest_start, request_start
from worker.grant import GrantState
from worker.key_health import KeyHealth, read_key_healths
from worker.keys import Keys
from worker.limiter import effective_window_s, held_slot_times

__all__ = [
    "WAITING_STATES",
    "GuildOverview",
    "KeyState",
    "KeyStatus",
    "Overview",
    "Traffic",
    "backlog_eta_s",
    "overview",
]

#: States whose grants are still to go out (or to be decided), counted per guild.
WAITING_STATES = (GrantState.QUEUED, GrantState.RETRYING, GrantState.SENDING, GrantState.PARKED)
COUNTED_STATES = (*WAITING_STATES, GrantState.UNKNOWN, GrantState.DEAD, GrantState.CANCELLED, GrantState.DELIVERED)
#: Hours of webhook traffic shown.
TRAFFIC_HOURS = 24


class KeyStatus(StrEnum):
    """What a guild's API key can do now; the value is what the console shows."""

    OK = "ok"
    #: WetBot answered 429: nothing starts until the block ends.
    THROTTLED = "throttled"
    #: WetBot refused the key for the guild (401/403): nothing starts until the pause ends.
    PAUSED = "paused"
    #: refused and paused before, the pause over: one request probes the key.
    REFUSED = "refused"
    #: this process knows no key for the guild: its grants wait parked.
    NO_KEY = "no key"


@dataclass(frozen=True)
class KeyState:
    """A guild's API key as the worker left it: ``ok``, ``throttled`` (429) until, ``paused``/``refused`` (401/403)."""

    #: the key's fingerprint, or "" when this process knows no key for the guild.
    key_id: str
    status: KeyStatus
    #: epoch seconds the throttle or pause ends (None: not throttled or paused).
    until: float | None = None
    #: WetBot's message, for a pause or a refusal.
    message: str = ""
    #: requests the key started in the last window, and how many it may.
    used: int = 0
    limit: int = 0
    #: when each of those requests' slots counts from (epoch seconds, oldest first; ``SlidingWindowLimiter``).
    slots: tuple[float, ...] = ()
    #: the earliest a request of the key for the guild may start (epoch seconds): after a 429 block or a pause.
    ready_at: float = 0.0


@dataclass(frozen=True)
class GuildOverview:
    guild_id: str
    counts: dict[GrantState, int]
    delivered_today: int
    #: the grant waiting longest (queued, retrying or parked) and since when it waits in that state.
    oldest_id: str | None
    oldest_since: float | None
    key: KeyState
    #: seconds until the guild's queued and retrying grants are expected out (None: nothing waits, or no key).
    backlog_eta_s: float | None


@dataclass(frozen=True)
class Traffic:
    """Webhook deliveries of the last ``TRAFFIC_HOURS`` hours: (source, outcome) -> count."""

    hours: int
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def sources(self) -> list[str]:
        return sorted({source for source, _ in self.counts})

    def outcomes(self) -> list[str]:
        return [o.value for o in Outcome if any(outcome == o.value for _, outcome in self.counts)]


@dataclass(frozen=True)
class Overview:
    now: float
    #: midnight UTC today, where "delivered today" starts.
    day_start: float
    guilds: list[GuildOverview]
    traffic: Traffic
    #: Twitch revocations, newest first: subscriptions Twitch stopped sending.
    revocations: list[InboxEvent]


def _guild_ids(redis: Redis, keys: Keys, keyring: Keyring, rule_guilds: list[str]) -> list[str]:
    known = set(values.texts(redis.smembers(keys.guilds())))
    return sorted(known | set(keyring.guilds()) | set(rule_guilds))


def _key_state(
    block: bytes | None, slots: list[float], health: KeyHealth | None, key_id: str | None, now: float, limit: int
) -> KeyState:
    """The guild's key from its 429 block, its held slots (``SlidingWindowLimiter.held_slots``) and its health."""
    if key_id is None or health is None:
        return KeyState("", KeyStatus.NO_KEY, message="no WETBOT_API_KEYS entry for this guild: its grants wait parked")
    status, until, message = KeyStatus.OK, None, ""
    if health.paused:
        status, until, message = KeyStatus.PAUSED, now + health.pause_left_s, health.pause_reason
    elif health.refusal is not None:
        status, message = KeyStatus.REFUSED, health.refusal
    elif block is not None and int(block) / 1_000_000 > now:
        status, until, message = KeyStatus.THROTTLED, int(block) / 1_000_000, "WetBot answered 429"
    ready_at, _ = earliest_start(block, health, now)
    return KeyState(key_id, status, until, message, len(slots), limit, tuple(slots), ready_at)


def _oldest(firsts: list[list[tuple[str, float]]]) -> tuple[str, float] | None:
    """The longest-waiting entry among the first entries of a guild's waiting-state indexes."""
    entries = [entry for first in firsts for entry in first]
    return min(entries, key=lambda entry: entry[1], default=None)


def overview(
    redis: Redis, keys: Keys, settings: Settings, keyring: Keyring, inbox: EventInbox, rule_guilds: list[str]
) -> Overview:
    """Read everything the overview shows (a handful of pipelined round trips)."""
    now = values.redis_time(redis).s
    day_start = math.floor(now / 86400) * 86400.0
    rate = settings.wetbot_rate_limit
    window_s = effective_window_s(rate)
    guilds = _guild_ids(redis, keys, keyring, rule_guilds)
    key_ids = {guild: keyring.key_id_for(guild) for guild in guilds}
    pipe = redis.pipeline(transaction=False)
    for guild in guilds:
        for state in COUNTED_STATES:
            pipe.zcard(keys.guild_state(guild, state.value))
        pipe.zcount(keys.guild_state(guild, GrantState.DELIVERED.value), day_start, "+inf")
        for state in (GrantState.QUEUED, GrantState.RETRYING, GrantState.PARKED):
            pipe.zrange(keys.guild_state(guild, state.value), 0, 0, withscores=True)
        key_id = key_ids[guild]
        if key_id is not None:
            pipe.get(keys.rate_block(key_id))
            pipe.zrange(keys.rate_window(key_id), 0, -1, withscores=True)
            pipe.zrange(keys.rate_pending(key_id), 0, -1, withscores=True)
    hour = int(now // 3600)
    for back in range(TRAFFIC_HOURS):
        pipe.hgetall(keys.traffic(hour - back))
    replies = iter(pipe.execute())
    healths = read_key_healths(redis, keys, [(key_id, guild) for guild, key_id in key_ids.items() if key_id])
    rows: list[GuildOverview] = []
    waiting_by_key: dict[str, int] = {}
    partial: list[tuple[str, dict[GrantState, int], int, tuple[str, float] | None, KeyState]] = []
    for guild in guilds:
        counts = {state: int(next(replies)) for state in COUNTED_STATES}
        today = int(next(replies))
        firsts = [values.scored(next(replies)) for _ in range(3)]
        oldest = _oldest(firsts)
        key_id = key_ids[guild]
        block: bytes | None = None
        slots: list[float] = []
        if key_id is not None:
            block = next(replies)
            window = values.scored(next(replies))
            pending = values.scored(next(replies))
            slots = held_slot_times(window, dict(pending), now_s=now, window_s=window_s)
            waiting_by_key[key_id] = (
                waiting_by_key.get(key_id, 0) + counts[GrantState.QUEUED] + counts[GrantState.RETRYING]
            )
        key = _key_state(block, slots, healths.get((key_id or "", guild)), key_id, now, rate.limit)
        partial.append((guild, counts, today, oldest, key))
    for guild, counts, today, oldest, key in partial:
        eta = None
        if key.key_id and counts[GrantState.QUEUED] + counts[GrantState.RETRYING]:
            eta = backlog_eta_s(waiting_by_key[key.key_id], key, now, window_s)
        rows.append(
            GuildOverview(guild, counts, today, oldest[0] if oldest else None, oldest[1] if oldest else None, key, eta)
        )
    traffic: dict[tuple[str, str], int] = {}
    for _ in range(TRAFFIC_HOURS):
        for name, count in values.text_map(next(replies)).items():
            source, _, outcome = name.partition(":")
            traffic[(source, outcome)] = traffic.get((source, outcome), 0) + int(count)
    revocations = inbox.recent(outcome=Outcome.REVOCATION, limit=10)
    return Overview(now, day_start, rows, Traffic(TRAFFIC_HOURS, traffic), revocations)


def backlog_eta_s(waiting: int, key: KeyState, now: float, window_s: float) -> float:
    """Seconds until ``waiting`` requests of ``key`` have started (``worker.eta.request_start``, as for one
    grant): its window's slots as they free, after a block or pause, then ``limit`` a window. One request
    per grant: coalescing only shortens it. ``window_s`` is the limiter's effective window."""
    if waiting <= 0:
        return 0.0
    floor = max(now, key.ready_at)
    return request_start(key.slots, waiting - 1, floor=floor, limit=key.limit, window_s=window_s) - now


def revoked_subscription(event: InboxEvent) -> tuple[str, str]:
    """(subscription type, status) of a Twitch revocation, as far as its body says."""
    try:
        subscription = json.loads(event.body).get("subscription", {})
        return str(subscription.get("type", "?")), str(subscription.get("status", "?"))
    except (ValueError, AttributeError):
        return "?", "?"
