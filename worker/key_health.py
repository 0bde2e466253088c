"""A WetBot API key's health for one guild: paused after a 401/403, refused until it works again, probed.

WetBot answering 401/403 for a key and guild (``worker.keys.scope``) pauses the key for that guild
for ``WETBOT_AUTH_PAUSE_S`` and marks it refused; once the pause ends, one request (the probe) tries
the key again while the others wait, and any success clears all three. The worker writes this
state (``worker.delivery``); the worker, the ETA (``worker.eta``), the overview and ``/metrics``
read it. Every one of them goes through this module, so the key names and their encoding live
in one place: ``read_key_health`` (or ``read_key_healths`` for many) to read, ``pause``,
``claim_probe`` and ``clear`` to write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis

from worker import redis_values as values
from worker.keys import Keys, scope

__all__ = ["KeyHealth", "claim_probe", "clear", "pause", "read_key_health", "read_key_healths"]


@dataclass(frozen=True)
class KeyHealth:
    """What the worker left of one key's 401/403 state for one guild (all clear: the key works)."""

    key_id: str
    guild_id: str
    #: seconds the pause after a 401/403 still lasts (0: not paused).
    pause_left_s: float = 0.0
    #: WetBot's answer that paused the key ("" when not paused).
    pause_reason: str = ""
    #: WetBot's answer that refused the key, kept until a request succeeds (None: not refused).
    refusal: str | None = None
    #: seconds the request testing a refused key again still holds its turn (0: no probe out).
    probe_left_s: float = 0.0

    @property
    def paused(self) -> bool:
        return self.pause_left_s > 0

    @property
    def refused(self) -> bool:
        return self.refusal is not None


def read_key_health(redis: Redis, keys: Keys, key_id: str, guild_id: str) -> KeyHealth:
    """The health of ``key_id`` for ``guild_id`` (one round trip)."""
    return read_key_healths(redis, keys, [(key_id, guild_id)])[(key_id, guild_id)]


def read_key_healths(redis: Redis, keys: Keys, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], KeyHealth]:
    """The health of each (key id, guild id) of ``pairs``, read in one pipelined round trip."""
    wanted = list(dict.fromkeys(pairs))
    if not wanted:
        return {}
    pipe = redis.pipeline(transaction=False)
    for key_id, guild_id in wanted:
        where = scope(key_id, guild_id)
        pipe.get(keys.key_paused(where))
        pipe.pttl(keys.key_paused(where))
        pipe.get(keys.key_unauthorised(where))
        pipe.pttl(keys.key_probe(where))
    replies = iter(pipe.execute())
    out: dict[tuple[str, str], KeyHealth] = {}
    for key_id, guild_id in wanted:
        reason: bytes | None = next(replies)
        pause_ms, refusal, probe_ms = int(next(replies)), next(replies), int(next(replies))
        paused = pause_ms > 0 and reason is not None
        out[(key_id, guild_id)] = KeyHealth(
            key_id,
            guild_id,
            pause_left_s=pause_ms / 1000 if paused else 0.0,
            pause_reason=_text(reason) if paused else "",
            refusal=None if refusal is None else _text(refusal),
            probe_left_s=max(0, probe_ms) / 1000,
        )
    return out


def pause(redis: Redis, keys: Keys, key_id: str, guild_id: str, reason: str, pause_s: float) -> bool:
    """WetBot refused ``key_id`` for ``guild_id`` (401/403): pause it for ``pause_s``, mark it refused
    and drop any probe. True when it was not refused before (the first refusal: alert once)."""
    where = scope(key_id, guild_id)
    redis.set(keys.key_paused(where), reason, px=int(pause_s * 1000))
    first = redis.set(keys.key_unauthorised(where), reason, nx=True)
    redis.delete(keys.key_probe(where))
    return bool(first)


def claim_probe(redis: Redis, keys: Keys, key_id: str, guild_id: str, token: str, hold_s: float) -> float | None:
    """Let the run ``token`` be the one request testing a refused key again, for at most ``hold_s``.

    Returns None when it is, else the seconds the probe already out still holds its turn.
    """
    probe = keys.key_probe(scope(key_id, guild_id))
    if redis.set(probe, token, nx=True, px=int(hold_s * 1000)):
        return None
    return max(0, values.integer(redis.pttl(probe))) / 1000


def clear(redis: Redis, keys: Keys, key_id: str, guild_id: str) -> bool:
    """A request with ``key_id`` for ``guild_id`` succeeded: it is neither paused nor refused any more.

    True when there was something to clear (the key works again).
    """
    where = scope(key_id, guild_id)
    return bool(redis.delete(keys.key_unauthorised(where), keys.key_probe(where), keys.key_paused(where)))


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
