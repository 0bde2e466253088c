"""Lua scripts beside this module, loaded once and registered by file name.

A line ``-- include: <name>`` in a script is replaced by the text of ``lua/<name>.lua``, so the
helpers every grant-moving script needs (``lua/grant_index.lua``) are written once and still run
inside each script's own atomic step.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from redis import Redis
from redis.commands.core import Script

_INCLUDE = re.compile(r"^-- include: ([a-z_]+)$", re.MULTILINE)


@cache
def script_source(name: str) -> str:
    """The text of ``worker/lua/<name>.lua`` with its includes in place (read once)."""
    text = (resources.files("worker") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda match: script_source(match.group(1)), text)


def load_script(redis: Redis, name: str) -> Script:
    """Return ``worker/lua/<name>.lua`` registered on ``redis`` (EVALSHA with a fallback to EVAL)."""
    return redis.register_script(script_source(name))
