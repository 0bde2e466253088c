"""The key layout is written once, in ``worker.keys``: the Lua scripts build key names with the ``K`` functions
generated from it (``-- include: keys``, ``worker.scripts``), never by joining the layout's fragments."""

from __future__ import annotations

import inspect
import json
import re
from importlib import resources
from pathlib import Path

from redis import Redis

from worker import redis_values as values
from worker.keys import Keys
from worker.scripts import key_templates, script_source

LUA = Path(str(resources.files("worker") / "lua"))


def test_every_generated_key_function_names_the_key_keys_py_names(redis: Redis) -> None:
    keys = Keys("pre")
    calls, expected = [], []
    for name, method in inspect.getmembers(Keys, inspect.isfunction):
        if name.startswith("_"):
            continue
        args = [f"a{index}" for index in range(len(inspect.signature(method).parameters) - 1)]
        calls.append(f"K.{name}('pre'{''.join(f', {json.dumps(arg)}' for arg in args)})")
        expected.append(method(keys, *args))
    assert len(calls) == len(key_templates()) > 40
    reply = redis.eval(script_source("keys") + f"return {{{', '.join(calls)}}}", 0)
    assert values.texts(reply) == expected


def _fragments() -> set[str]:
    """The literal parts of the layout's names (``":grant:"``, ``":history"``, ...), but the bare separator."""
    return {piece for pieces in key_templates().values() for piece in pieces[1:] if not piece.isidentifier()} - {":"}


def test_no_script_joins_key_fragments_of_its_own() -> None:
    fragments = _fragments()
    assert {":grant:", ":history", ":due", ":by-guild:"} <= fragments
    offenders = []
    for path in sorted(LUA.glob("*.lua")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("--", 1)[0]
            for literal in re.findall(r"'([^']*)'|\"([^\"]*)\"", code):
                text = "".join(literal)
                if any(text.startswith(fragment) for fragment in fragments):
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_the_check_would_find_a_joined_key() -> None:
    line = "local key = p .. ':grant:' .. id"
    assert any(re.search(re.escape(f"'{fragment}"), line) for fragment in _fragments())
