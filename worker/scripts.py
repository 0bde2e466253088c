"""Lua scripts beside this module, loaded once and registered by file name."""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis import Redis
from redis.commands.core import Script


@cache
def script_source(name: str) -> str:
    """The text of ``worker/lua/<name>.lua`` (read once)."""
    return (resources.files("worker") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def load_script(redis: Redis, name: str) -> Script:
    """Return ``worker/lua/<name>.lua`` registered on ``redis`` (EVALSHA with a fallback to EVAL)."""
    return redis.register_script(script_source(name))
