"""When a waiting grant is expected to go out: its place in its key's queue at that key's rate.

Each key sends at most ``limit`` requests per window, one request per waiting
(guild, member) thanks to coalescing, so a grant's request goes out after
every member ahead of it in its key's queue (oldest first, by their oldest
waiting grant). The estimate walks the key's free and soon-free rate slots
(its window's recent requests, a 429 block, a 401/403 pause of the guild)
and adds the grant's own due time (a retry's backoff). It is an estimate:
new members do not overtake older ones, but a failure or a slow WetBot moves
everything back.

Everything is read in a few pipelined round trips; the queue is every moving
grant on the schedule (``Keys.due``), so one call costs O(moving grants) — up to
``MAX_SCANNED`` of them. A longer backlog is counted from the guilds' state
indexes instead (``EtaEstimator._from_indexes``): a few reads per grant, a
little later than the walk would say, since a member's grants each count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from redis import Redis

from config.keyring import Keyring
from config.settings import Settings
from worker import redis_values as values
from worker.grant import FINAL_STATES, Grant, GrantState
from worker.key_health import KeyHealth, read_key_health
from worker.keys import Keys
from worker.limiter import SlidingWindowLimiter

__all__ = ["MAX_SCANNED", "Eta", "EtaEstimator", "WaitReason", "describe_wait", "earliest_start", "request_start"]

#: Most grants on the schedule an estimate walks (a few ms); past that it counts from indexes instead.
MAX_SCANNED = 2000


class WaitReason(StrEnum):
    """What a waiting grant waits for, decided where the wait is: its value is what the API and CLI show."""

    #: its key's turn: the window's slots are taken, or a 429 block.
    RATE_LIMIT = "rate limit"
    #: its key was refused (401/403) for its guild and is paused.
    KEY_PAUSED = "key paused"
    #: a retry's backoff after a failure.
    RETRY = "retry"
    #: parked until its platform user is linked to a Discord user.
    LINK = "link"
    #: parked until a worker has an API key for its guild (or this process knows none).
    API_KEY = "API key"
    #: the read-back of its last request's outcome.
    READ_BACK = "read-back"


@dataclass(frozen=True)
class Eta:
    """The expected send time of one grant (``at``, epoch seconds) and why it waits; ``at`` is None when it
    cannot be told (parked: waiting for a link or a key)."""

    at: float | None
    #: requests of the grant's key that go out before the grant's own.
    requests_ahead: int
    #: what the grant waits for (None: nothing, it goes out now or is being sent).
    waiting_for: WaitReason | None
    #: the time the estimate was made (Redis' clock, epoch seconds).
    now: float

    @property
    def in_s(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - self.now)

    def describe(self) -> str:
        """``now``, ``in about 4 min``, or what it waits for."""
        if self.at is None:
            return (
                f"waits for {'a Discord link' if self.waiting_for == WaitReason.LINK else 'an API key for its guild'}"
            )
        text = describe_wait(self.in_s or 0.0)
        ahead = f", {self.requests_ahead} request(s) ahead" if self.requests_ahead else ""
        why = f" ({self.waiting_for.value}{ahead})" if self.waiting_for else (f" ({ahead[2:]})" if ahead else "")
        return text + why

    def to_dict(self) -> dict[str, object]:
        return {
            "at": None if self.at is None else round(self.at, 3),
            "in_s": None if self.in_s is None else round(self.in_s, 1),
            "requests_ahead": self.requests_ahead,
            "waiting_for": self.waiting_for.value if self.waiting_for else None,
            "text": self.describe(),
        }


def describe_wait(seconds: float) -> str:
    """``now`` under 2 s, then ``in about 40 s``, ``in about 4 min``, ``in about 3 h``."""
    if seconds < 2:
        return "now"
    if seconds < 90:
        return f"in about {max(5, round(seconds / 5) * 5)} s"
    if seconds < 90 * 60:
        return f"in about {round(seconds / 60)} min"
    return f"in about {round(seconds / 3600, 1):g} h"


@dataclass
class _PerCall:
    """What one ``for_grants`` call reads once: each key's held slots, each (key, guild)'s floor."""

    slots: dict[str, list[float]] = field(default_factory=dict)
    floors: dict[tuple[str, str], tuple[float, WaitReason | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Waiting:
    grant_id: str
    guild_id: str
    user_id: str
    state: str
    created_at: float
    due_s: float


class EtaEstimator:
    """Estimates ``Eta`` for grants, given the keys of their guilds and the limiter's rate."""

    def __init__(self, redis: Redis, keys: Keys, keyring: Keyring, limiter: SlidingWindowLimiter) -> None:
        self._redis = redis
        self._keys = keys
        self._keyring = keyring
        self._limiter = limiter

    @classmethod
    def build(cls, redis: Redis, settings: Settings, keyring: Keyring) -> EtaEstimator:
        keys = Keys(settings.redis_key_prefix)
        return cls(redis, keys, keyring, SlidingWindowLimiter(redis, keys, settings.wetbot_rate_limit))

    def for_grants(self, grants: Sequence[Grant]) -> dict[str, Eta]:
        """An ``Eta`` for each waiting grant of ``grants`` (final grants are left out).

        The queue is read once per call, and each key's line, window and each guild's pause once per key
        and guild, however many grants are asked about (``grants list`` asks for a page at a time).
        """
        waiting = [g for g in grants if g.state not in FINAL_STATES]
        if not waiting:
            return {}
        parked = self._parked_for_key(waiting)
        if not any(_waits_in_line(g, self._keyring.key_id_for(g.guild_id)) for g in waiting):
            return self._from_indexes(waiting, parked)  # parked or sending only: nothing to count (and no walk)
        if values.integer(self._redis.zcard(self._keys.due())) > MAX_SCANNED:
            return self._from_indexes(waiting, parked)
        now, queue = self._queue()
        lines: dict[str, dict[tuple[str, str], float]] = {}
        due = {entry.grant_id: entry.due_s for entry in queue}
        out: dict[str, Eta] = {}
        seen = _PerCall()
        for grant in waiting:
            key_id = self._keyring.key_id_for(grant.guild_id)
            eta = _not_in_line(grant, key_id, now, parked)
            if eta is None and key_id is not None:
                if key_id not in lines:
                    lines[key_id] = self._line(key_id, queue)
                ahead = _groups_ahead(grant, lines[key_id])
                eta = self._in_line(grant, key_id, now, ahead, due.get(grant.id, now), seen)
            if eta is not None:
                out[grant.id] = eta
        return out

    def _parked_for_key(self, waiting: list[Grant]) -> set[str]:
        """The ids of the parked grants of ``waiting`` that wait for their guild's key, not for a link: those
        in their guild's key-parked index (``Keys.parked_for_key``), where parking them for want of a key put
        them and whence ``Ledger.release_key_parked`` takes them."""
        parked = [grant for grant in waiting if grant.state == GrantState.PARKED]
        if not parked:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for grant in parked:
            pipe.sismember(self._keys.parked_for_key(grant.guild_id), grant.id)
        return {grant.id for grant, member in zip(parked, pipe.execute(), strict=True) if member}

    def _from_indexes(self, waiting: list[Grant], parked: set[str]) -> dict[str, Eta]:
        """``for_grants`` for a backlog too long to walk: the requests ahead of a grant are the queued and
        retrying grants of its key's guilds that entered their state before it (read from the guilds'
        state indexes, ``worker.grant_index``). A member with several waiting grants counts once per grant
        here, not once, so the estimate errs late; each grant costs a few index reads, whatever the backlog."""
        now = values.redis_time(self._redis).s
        out: dict[str, Eta] = {}
        lined: list[tuple[Grant, str]] = []
        for grant in waiting:
            key_id = self._keyring.key_id_for(grant.guild_id)
            eta = _not_in_line(grant, key_id, now, parked)
            if eta is not None:
                out[grant.id] = eta
            elif key_id is not None:
                lined.append((grant, key_id))
        if not lined:
            return out
        guilds = values.texts(self._redis.smembers(self._keys.guilds()))
        pipe = self._redis.pipeline(transaction=False)
        for grant, _ in lined:
            pipe.zscore(self._keys.state_index(grant.state.value), grant.id)
            pipe.zscore(self._keys.due(), grant.id)
        scores = iter(pipe.execute())
        shared: list[list[str]] = []
        dues: list[float] = []
        for grant, key_id in lined:
            entered, due_ms = next(scores), next(scores)
            since = f"({entered if entered is not None else grant.updated_at!r}"
            shared.append([guild for guild in guilds if self._keyring.key_id_for(guild) == key_id])
            for guild in shared[-1]:
                for state in (GrantState.QUEUED, GrantState.RETRYING):
                    pipe.zcount(self._keys.guild_state(guild, state.value), "-inf", since)
            dues.append(now if due_ms is None else float(due_ms) / 1000)
        counts = iter(pipe.execute())
        seen = _PerCall()
        for (grant, key_id), guilds_of_key, grant_due in zip(lined, shared, dues, strict=True):
            ahead = sum(int(next(counts)) for _ in range(2 * len(guilds_of_key)))
            out[grant.id] = self._in_line(grant, key_id, now, ahead, grant_due, seen)
        return out

    def _in_line(self, grant: Grant, key_id: str, now: float, ahead: int, grant_due: float, seen: _PerCall) -> Eta:
        """The ETA of a grant with ``ahead`` requests of its key before it, due itself at ``grant_due``.

        ``seen`` keeps each key's window and each guild's pause for the rest of the call."""
        if key_id not in seen.slots:
            seen.slots[key_id] = self._limiter.held_slots(key_id, now)
        if (key_id, grant.guild_id) not in seen.floors:
            seen.floors[(key_id, grant.guild_id)] = self._floor(grant, key_id, now)
        floor, why = seen.floors[(key_id, grant.guild_id)]
        rate = self._limiter.rate
        start = request_start(
            seen.slots[key_id], ahead, floor=floor, limit=rate.limit, window_s=self._limiter.effective_window_s
        )
        if grant.verify_pending:
            why = WaitReason.READ_BACK
        elif grant.state == GrantState.RETRYING and grant_due > start:
            why = WaitReason.RETRY
        at = max(start, grant_due)
        if why is None and at - now >= 2:
            why = WaitReason.RATE_LIMIT
        return Eta(at, ahead, why, now)

    def _line(self, key_id: str, queue: list[_Waiting]) -> dict[tuple[str, str], float]:
        """The key's waiting members (not being sent to now), each with its oldest waiting grant's creation."""
        first_by_group: dict[tuple[str, str], float] = {}
        for entry in queue:
            if entry.state == GrantState.SENDING.value or self._keyring.key_id_for(entry.guild_id) != key_id:
                continue
            group = (entry.guild_id, entry.user_id)
            first_by_group[group] = min(first_by_group.get(group, math.inf), entry.created_at)
        return first_by_group

    def _floor(self, grant: Grant, key_id: str, now: float) -> tuple[float, WaitReason | None]:
        """The earliest a request of the key for the grant's guild can start: a 429 block or a 401/403 pause."""
        block = values.optional_raw(self._redis.get(self._keys.rate_block(key_id)))
        health = read_key_health(self._redis, self._keys, key_id, grant.guild_id)
        return earliest_start(block, health, now)

    def _queue(self) -> tuple[float, list[_Waiting]]:
        """Redis' clock, and every grant on the schedule with what the estimate needs of it."""
        now = values.redis_time(self._redis).s
        scheduled = values.scored(self._redis.zrange(self._keys.due(), 0, -1, withscores=True))
        pipe = self._redis.pipeline(transaction=False)
        for grant_id, _ in scheduled:
            pipe.hmget(self._keys.grant(grant_id), ["guild_id", "user_id", "state", "created_at"])
        out = []
        for (grant_id, due_ms), fields in zip(scheduled, pipe.execute() if scheduled else [], strict=True):
            guild, user, state, created = values.optional_texts(fields)
            if guild is None or user is None or state is None:
                continue
            out.append(_Waiting(grant_id, guild, user, state, float(created or 0), float(due_ms) / 1000))
        return now, out


def request_start(held: Sequence[float], ahead: int, *, floor: float, limit: int, window_s: float) -> float:
    """When a key's request number ``ahead`` (0 = the next) can start, in epoch seconds: the turn
    ``lua/sliding_window.lua`` gives the waiter with ``ahead`` waiters before it.

    ``held`` are the times the key's held slots count from, oldest first
    (``SlidingWindowLimiter.held_slots``); ``floor`` is the earliest anything may start (now, or the end
    of a 429 block or 401/403 pause, ``earliest_start``). The window's slots free in the order they
    were taken, each a window (``window_s``, the limiter's effective one) after the time it counts
    from, a free slot at once; every later round of ``limit`` requests starts a window after the one
    before. Used by the ETA of single grants and by the overview's backlog alike.
    """
    recent = list(held)[-limit:]
    index = len(recent) - limit + ahead % limit
    turn = floor if index < 0 else max(floor, recent[index] + window_s)
    return turn + window_s * (ahead // limit)


def earliest_start(block: bytes | str | None, health: KeyHealth, now: float) -> tuple[float, WaitReason | None]:
    """The earliest a request of a key for a guild can start, and why it is later than ``now``: the key's
    429 block (``Keys.rate_block``, microseconds, as read) or the guild's 401/403 pause (``health``)."""
    floor, why = now, None
    if block is not None and int(block) / 1_000_000 > floor:
        floor, why = int(block) / 1_000_000, WaitReason.RATE_LIMIT
    if health.paused and now + health.pause_left_s > floor:
        floor, why = now + health.pause_left_s, WaitReason.KEY_PAUSED
    return floor, why


def _waits_in_line(grant: Grant, key_id: str | None) -> bool:
    """True for a grant that waits its turn in its key's line (not being sent, not parked, its guild keyed)."""
    return grant.state not in (GrantState.SENDING, GrantState.PARKED) and key_id is not None


def _not_in_line(grant: Grant, key_id: str | None, now: float, parked_for_key: set[str]) -> Eta | None:
    """The ETA of a grant that does not wait in its key's line (being sent, parked, no key), else None.

    ``parked_for_key``: the ids of those grants parked until a worker has their guild's key; any other
    parked grant waits for a link."""
    if _waits_in_line(grant, key_id):
        return None
    if grant.state == GrantState.SENDING:
        return Eta(now, 0, None, now)
    # A parked grant waits for what parked it, whether or not this process (a CLI, say) knows the guild's key.
    waits_for_key = grant.id in parked_for_key if grant.state == GrantState.PARKED else key_id is None
    return Eta(None, 0, WaitReason.API_KEY if waits_for_key else WaitReason.LINK, now)


def _groups_ahead(grant: Grant, line: dict[tuple[str, str], float]) -> int:
    """Members of the key waiting longer than the grant's own member (one request each)."""
    own = (grant.guild_id, grant.user_id)
    own_first = line.get(own, grant.created_at)
    return sum(1 for group, first in line.items() if group != own and first < own_first)
