"""Pages of grants, newest first, filtered by state, source and guild and searched by what a supporter is known by.

A page is one script call (``lua/find_grants.lua``) that walks a single index
from a cursor: the search term's index when there is a search, else the
smallest of the filters' indexes (``worker.grant_index``), and checks the other
filters on each grant it meets. It looks at no more than ``budget`` entries,
so a page costs the same with a hundred grants or a million; when the budget
runs out first the page is short and its cursor goes on from where it stopped.

A search for an idempotency key reads its claim instead, and one for a grant
id the grant (``_claimed``): such a grant comes first on the first page.

Order is by the walked index: creation time, except that a state filter
without a search walks that state's index, ordered by when each grant entered
the state (the newest dead grant first).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from redis import Redis

from config.domain import InvalidInput, discord_id
from worker import redis_values as values
from worker.grant import Grant, GrantState, grant_from_hash
from worker.grant_index import search_term
from worker.keys import Keys
from worker.scripts import load_script

__all__ = ["DEFAULT_BUDGET", "MAX_PAGE", "BadCursor", "GrantPage", "GrantQuery", "find_grants"]

#: Most grants on one page.
MAX_PAGE = 100
#: Most index entries one page looks at.
DEFAULT_BUDGET = 5000

_CURSOR = re.compile(r"^(q|gs|s|g|src|all)~([0-9.e+-]{1,40})~([0-9a-f]{32})$")
_GRANT_ID = re.compile(r"^[0-9a-f]{32}$")
_SOURCE = re.compile(r"^[a-z0-9_-]{1,40}$")


class BadCursor(InvalidInput):
    """Raised for a page cursor that this query did not hand out (edited, or from another filter)."""

    def __init__(self, problem: str) -> None:
        super().__init__("", problem)


@dataclass(frozen=True)
class GrantQuery:
    """What to list: every filter is optional; ``text`` is a search (an id, a login, a name, a key)."""

    state: GrantState | None = None
    source: str = ""
    guild_id: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        if self.source and not _SOURCE.fullmatch(self.source):
            raise InvalidInput("source", "expected a source name such as twitch, patreon, api or cli")
        if self.guild_id:
            discord_id(self.guild_id, field="guild")

    @property
    def term(self) -> str:
        return search_term(self.text)

    def filters(self) -> dict[str, str]:
        """The filters as query parameters (empty ones left out), for links to other pages."""
        out = {"state": self.state.value if self.state else "", "source": self.source, "guild_id": self.guild_id}
        out["q"] = self.text
        return {name: value for name, value in out.items() if value}


@dataclass(frozen=True)
class GrantPage:
    """One page: its grants, the cursor of the next (None: no more), and the total when it is known cheaply."""

    grants: list[Grant]
    next_cursor: str | None
    #: every grant the query matches, when one index holds exactly them (else None).
    total: int | None
    #: True when a state filter orders the page by time entered into the state, not by creation.
    by_state_time: bool


def _indexes(keys: Keys, query: GrantQuery) -> list[tuple[str, str, bool]]:
    """(code, index, exact) for each index that covers the query; exact: it holds nothing but matches."""
    state = query.state.value if query.state else ""
    filters = sum(1 for value in (state, query.source, query.guild_id) if value)
    if query.term:
        return [("q", keys.find(query.term), filters == 0)]
    found: list[tuple[str, str, bool]] = []
    if query.guild_id and state:
        found.append(("gs", keys.guild_state(query.guild_id, state), filters == 2))
    elif state:
        found.append(("s", keys.state_index(state), filters == 1))
    elif query.guild_id:
        found.append(("g", keys.guild_grants(query.guild_id), filters == 1))
    if query.source:
        found.append(("src", keys.source_grants(query.source), filters == 1))
    return found or [("all", keys.all_grants(), True)]


def find_grants(
    redis: Redis,
    keys: Keys,
    query: GrantQuery,
    *,
    cursor: str | None = None,
    limit: int = 50,
    budget: int = DEFAULT_BUDGET,
) -> GrantPage:
    """The page of ``query`` that starts at ``cursor`` (None: the newest).

    Raises:
      BadCursor: ``cursor`` was not handed out for this query.
    """
    limit = max(1, min(limit, MAX_PAGE))
    options = _indexes(keys, query)
    after_score, after_id = "", ""
    size: int | None = None
    if cursor:
        match = _CURSOR.fullmatch(cursor)
        chosen = [option for option in options if match and option[0] == match.group(1)]
        if not match or not chosen or not _is_score(match.group(2)):
            raise BadCursor("this page link is not valid for these filters; start from the first page")
        code, index, exact = chosen[0]
        after_score, after_id = match.group(2), match.group(3)
    else:
        with redis.pipeline(transaction=False) as pipe:
            for _, index, _ in options:
                pipe.zcard(index)
            sizes = [values.integer(size) for size in values.items(pipe.execute())]
        (code, index, exact), size = min(zip(options, sizes, strict=True), key=lambda pair: pair[1])
    request = {
        "prefix": keys.prefix,
        "index": index,
        "limit": limit,
        "budget": max(limit, budget),
        "state": query.state.value if query.state else "",
        "source": query.source,
        "guild": query.guild_id,
        "after_score": after_score,
        "after_id": after_id,
    }
    reply = values.texts(load_script(redis, "find_grants")(args=[json.dumps(request)]))
    *ids, _, next_score, next_id, done = reply
    claimed = _claimed(redis, keys, query) if query.text and not cursor else []
    with redis.pipeline(transaction=False) as pipe:
        for grant_id in [*claimed, *ids]:
            pipe.hgetall(keys.grant(grant_id))
        rows = values.raw_maps(pipe.execute())
    found = [grant_from_hash(row) for row in rows if row]
    first = [grant for grant in found[: len(claimed)] if _matches(grant, query)]
    grants = first + [grant for grant in found[len(claimed) :] if grant.id not in claimed]
    next_cursor = None if done == "1" or not next_id else f"{code}~{next_score}~{next_id}"
    if exact and size is None:
        size = values.integer(redis.zcard(index))
    total = size + len(first) if exact and size is not None else None
    return GrantPage(grants, next_cursor, total, by_state_time=code in ("s", "gs"))


def _is_score(text: str) -> bool:
    """A finite number, as Redis writes a sorted set's scores (what a cursor carries)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _claimed(redis: Redis, keys: Keys, query: GrantQuery) -> list[str]:
    """The grants whose idempotency key is the search text (exactly, as keys are), as given to the API or
    the CLI (``api:<key>``, ``cli:<key>``) or whole (``twitch:<event>:<rule>``): their claims name them."""
    text = query.text.strip()
    if not text or len(text) > 300:
        return []
    names = [keys.idempotency(text), keys.idempotency(f"api:{text}"), keys.idempotency(f"cli:{text}")]
    found = [grant_id for grant_id in values.optional_texts(redis.mget(names)) if grant_id is not None]
    if _GRANT_ID.fullmatch(text):
        found.insert(0, text)  # a grant id: the grant itself (``find_grants`` skips ids without a record)
    return list(dict.fromkeys(found))


def _matches(grant: Grant, query: GrantQuery) -> bool:
    return (
        (query.state is None or grant.state == query.state)
        and (not query.source or grant.source == query.source)
        and (not query.guild_id or grant.guild_id == query.guild_id)
    )
