"""A test helper: every secondary ledger index (``lua/grant_index.lua``) checked against the grants, both ways.

``index_problems`` reads every grant hash and every index key under the prefix and lists what is
wrong, in words: a grant missing from an index it belongs in, a grant in a guild-state index of a
state it is not in, an index entry whose grant is gone or does not match. An empty list is the
invariant every grant-moving script must keep.
"""

from __future__ import annotations

import json
import re
from typing import cast

from redis import Redis

from worker.grant import GrantState
from worker.grant_index import terms_for
from worker.keys import Keys

__all__ = ["index_problems"]

_STATES = [state.value for state in GrantState]


def _grants(redis: Redis, keys: Keys) -> dict[str, dict[str, str]]:
    pattern = re.compile(rf"^{re.escape(keys.prefix)}:grant:([0-9a-f]{{32}})$")
    found: dict[str, dict[str, str]] = {}
    for raw in redis.scan_iter(match=f"{keys.prefix}:grant:*", count=1000):
        match = pattern.match(raw.decode())
        if match:
            fields = cast(dict[bytes, bytes], redis.hgetall(raw))
            found[match.group(1)] = {k.decode(): v.decode() for k, v in fields.items()}
    return found


def _members(redis: Redis, key: str) -> set[str]:
    return {raw.decode() for raw in cast(list[bytes], redis.zrange(key, 0, -1))}


def index_problems(redis: Redis, keys: Keys) -> list[str]:
    """Everything that breaks "each index holds exactly the grants that match it", in words."""
    grants = _grants(redis, keys)
    problems: list[str] = []
    guilds = {raw.decode() for raw in cast(set[bytes], redis.smembers(keys.guilds()))}
    for grant_id, f in grants.items():
        guild, source, state = f.get("guild_id", ""), f.get("source", ""), f.get("state", "")
        if not state:
            problems.append(f"grant {grant_id}: a hash without a state ({sorted(f)})")
            continue
        if f.get("indexed") != "1":
            problems.append(f"grant {grant_id}: not marked indexed")
        if guild not in guilds:
            problems.append(f"grant {grant_id}: guild {guild} not in the guilds set")
        if redis.zscore(keys.guild_grants(guild), grant_id) is None:
            problems.append(f"grant {grant_id}: missing from by-guild:{guild}")
        if redis.zscore(keys.source_grants(source), grant_id) is None:
            problems.append(f"grant {grant_id}: missing from by-source:{source}")
        if redis.zscore(keys.state_index(state), grant_id) is None:
            problems.append(f"grant {grant_id}: missing from state:{state}")
        for other in _STATES:
            held = redis.zscore(keys.guild_state(guild, other), grant_id) is not None
            if held != (other == state):
                problems.append(
                    f"grant {grant_id} ({state}): {'in' if held else 'missing from'} by-guild:{guild}:{other}"
                )
        stored = redis.get(keys.grant_terms(grant_id))
        recorded = [term for term in (stored or b"").decode().split("\n") if term]  # type: ignore[union-attr]
        names = json.loads(f["names"]) if f.get("names") else []
        expected = terms_for(user_id=f.get("user_id", ""), external_id=f.get("external_id", ""), names=names)
        for term in sorted(set(expected) - set(recorded)):
            problems.append(f"grant {grant_id}: term {term!r} not recorded")
        for term in recorded:
            if redis.zscore(keys.find(term), grant_id) is None:
                problems.append(f"grant {grant_id}: missing from find:{term}")
    # The other way: every index entry names a grant that exists and matches it.
    for raw in redis.scan_iter(match=f"{keys.prefix}:by-guild:*", count=1000):
        name = raw.decode()[len(f"{keys.prefix}:by-guild:") :]
        guild, _, state = name.partition(":")
        for grant_id in _members(redis, raw.decode()):
            entry = grants.get(grant_id)
            if entry is None:
                problems.append(f"by-guild:{name} holds {grant_id}, whose grant is gone")
            elif entry.get("guild_id") != guild or (state and entry.get("state") != state):
                problems.append(f"by-guild:{name} holds {grant_id} ({entry.get('guild_id')}, {entry.get('state')})")
    for raw in redis.scan_iter(match=f"{keys.prefix}:by-source:*", count=1000):
        source = raw.decode()[len(f"{keys.prefix}:by-source:") :]
        for grant_id in _members(redis, raw.decode()):
            entry = grants.get(grant_id)
            if entry is None or entry.get("source") != source:
                what = "gone" if entry is None else entry.get("source")
                problems.append(f"by-source:{source} holds {grant_id} ({what})")
    for raw in redis.scan_iter(match=f"{keys.prefix}:find:*", count=1000):
        term = raw.decode()[len(f"{keys.prefix}:find:") :]
        for grant_id in _members(redis, raw.decode()):
            entry = grants.get(grant_id)
            stored = redis.get(keys.grant_terms(grant_id)) or b""
            if entry is None or term not in stored.decode().split("\n"):  # type: ignore[union-attr]
                what = "gone" if entry is None else "term not recorded"
                problems.append(f"find:{term} holds {grant_id} ({what})")
    return problems
