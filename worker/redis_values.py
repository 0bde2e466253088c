"""Typed readings of Redis replies, and the server's clock.

redis-py types most replies as ``Any`` (or ``Awaitable | Any``), and a reply's actual type depends on
``decode_responses``. These decoders take a reply as ``object`` and return what the caller expects, or
raise ``TypeError`` naming what came instead, so a reply of an unexpected shape is a precise error rather
than a ``cast`` that hides it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis import Redis

__all__ = [
    "RedisTime",
    "integer",
    "items",
    "number",
    "optional_raw",
    "optional_text",
    "optional_texts",
    "raw_map",
    "raw_maps",
    "redis_time",
    "redis_time_of",
    "scored",
    "text",
    "text_map",
    "texts",
]


def text(value: object) -> str:
    """A bulk string reply (bytes or str) as text."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a Redis string, got {type(value).__name__}")


def optional_text(value: object) -> str | None:
    """``text``, or None for a nil reply."""
    return None if value is None else text(value)


def integer(value: object) -> int:
    """An integer reply, or a string reply holding an integer (``GET`` of a counter)."""
    if isinstance(value, bool):
        raise TypeError("expected a Redis integer, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | str):
        return int(value)
    raise TypeError(f"expected a Redis integer, got {type(value).__name__}")


def number(value: object) -> float:
    """A number reply (a score, a float string, an integer)."""
    if isinstance(value, bool):
        raise TypeError("expected a Redis number, got bool")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, bytes | str):
        return float(value)
    raise TypeError(f"expected a Redis number, got {type(value).__name__}")


def items(value: object) -> list[object]:
    """An array reply (a script's table, ``LRANGE``, a pipeline's answers)."""
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(f"expected a Redis array, got {type(value).__name__}")


def texts(value: object) -> list[str]:
    """An array reply of strings, or a set reply (``SMEMBERS``), as text (a set in no particular order)."""
    if isinstance(value, set | frozenset):
        return [text(item) for item in value]
    return [text(item) for item in items(value)]


def text_map(value: object) -> dict[str, str]:
    """A hash reply (``HGETALL``) as text; an empty dict for a missing key."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a Redis hash, got {type(value).__name__}")
    return {text(field): text(item) for field, item in value.items()}


def raw_map(value: object) -> dict[bytes, bytes]:
    """A hash reply (``HGETALL``) as bytes, from a client without ``decode_responses``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a Redis hash, got {type(value).__name__}")
    return {_raw(field): _raw(item) for field, item in value.items()}


def raw_maps(value: object) -> list[dict[bytes, bytes]]:
    """A pipeline's answers to ``HGETALL`` commands, each as ``raw_map``."""
    return [raw_map(item) for item in items(value)]


def optional_raw(value: object) -> bytes | None:
    """A bulk string reply as bytes, or None for a nil reply."""
    return None if value is None else _raw(value)


def optional_texts(value: object) -> list[str | None]:
    """An array reply with nil entries (``MGET``, ``HMGET``) as text."""
    return [optional_text(item) for item in items(value)]


def _raw(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected a Redis string, got {type(value).__name__}")


def scored(value: object) -> list[tuple[str, float]]:
    """A ``WITHSCORES`` reply (redis-py's pairs) as (member, score)."""
    out: list[tuple[str, float]] = []
    for pair in items(value):
        member, score = items(pair)
        out.append((text(member), number(score)))
    return out


@dataclass(frozen=True)
class RedisTime:
    """The server's clock (``TIME``): what every grant, slot and lease time is measured by."""

    seconds: int
    micros: int

    @property
    def us(self) -> int:
        """Microseconds since the epoch."""
        return self.seconds * 1_000_000 + self.micros

    @property
    def ms(self) -> int:
        """Milliseconds since the epoch (rounded down), as the Lua scripts compute them."""
        return self.seconds * 1000 + self.micros // 1000

    @property
    def s(self) -> float:
        """Seconds since the epoch."""
        return self.seconds + self.micros / 1_000_000


def redis_time(redis: Redis) -> RedisTime:
    """The server's clock now (one ``TIME``)."""
    return redis_time_of(redis.time())


def redis_time_of(reply: object) -> RedisTime:
    """A ``TIME`` reply (redis-py's pair, or the raw array from a pipeline or a script) as a ``RedisTime``."""
    seconds, micros = items(reply)
    return RedisTime(integer(seconds), integer(micros))
