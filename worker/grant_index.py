"""The ledger's secondary indexes: grants by guild, by guild and state, by source, and by search term.

An operator looks for "the grants of this supporter" by whatever they know: a
Discord id, a Twitch login or id, a Patreon member id or name, an idempotency
key. Every such value a grant carries (but its idempotency key, which its claim
``<p>:idem:<key>`` already finds) is normalised into a *term*
(``search_term``) and the grant's id is added to ``<p>:find:<term>`` when it is
created, in the same atomic step (``lua/grant_index.lua``, included by the
create, transition, release and trim scripts). A search is then one index
read, never a scan of the ledger, however many grants it holds
(``worker.grant_search``).

Grants written before these indexes existed lack the ``indexed`` field;
``backfill`` adds them, a batch per atomic step, and is safe to run twice or
to interrupt (a grant indexed once is skipped).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping

from redis import Redis

from worker import redis_values as values
from worker.grant import NewGrant
from worker.keys import Keys
from worker.scripts import load_script

__all__ = ["MAX_TERM_CHARS", "backfill", "grant_terms", "search_term"]

logger = logging.getLogger("wetbot_rewards.index")

#: Longest search term kept, in characters (longer values are cut: a search cuts its text the same way).
MAX_TERM_CHARS = 100
#: Grants a backfill step indexes at once.
BACKFILL_BATCH = 500
#: The index version a backfill records (``Keys.index_version``); bump when terms change (all is walked again).
INDEX_VERSION = "1"
#: Seconds before the last walked grant's creation the next backfill starts (clocks of other hosts, late writers).
REWALK_S = 600.0

_WORD = re.compile(r"\w[\w.-]+")


def search_term(text: str) -> str:
    """``text`` as the indexes hold it: one Unicode form (NFKC: a name typed composed or decomposed is
    one term), runs of whitespace as one space, trimmed, case-folded, cut short."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()[:MAX_TERM_CHARS]


def terms_for(*, user_id: str, external_id: str, names: Iterable[str] = (), aliases: Iterable[str] = ()) -> list[str]:
    """Every term a grant is found by, each once: its ids, its names whole and word by word.

    Idempotency keys need no term: the claim ``<p>:idem:<key>`` already names the grant
    (``worker.grant_search`` looks there), and a term per key would be a set per grant.
    """
    found: list[str] = []
    values = [user_id, external_id, *aliases]
    for name in names:
        values.append(name)
        words = _WORD.findall(name)
        if len(words) > 1:
            values.extend(words)
    for value in values:
        term = search_term(value)
        if term and term not in found:
            found.append(term)
    return found


def grant_terms(new: NewGrant) -> list[str]:
    """The terms of a grant about to be created (its Discord id joins later if a link resolves it)."""
    return terms_for(user_id=new.user_id, external_id=new.external_id, names=new.names, aliases=new.aliases)


#: The grant fields its search terms come from.
_TERM_FIELDS = ("user_id", "external_id", "names")


def _stored_terms(fields: Mapping[str, str]) -> list[str]:
    def text(name: str) -> str:
        return fields.get(name, "")

    names = json.loads(text("names")) if text("names") else []
    return terms_for(user_id=text("user_id"), external_id=text("external_id"), names=names)


def backfill(
    redis: Redis, keys: Keys, *, stop: Callable[[], bool] = lambda: False, batch: int = BACKFILL_BATCH
) -> int | None:
    """Index every grant an older version wrote; returns how many it indexed (None: stopped).

    Walks ``<p>:grants`` oldest first and records how far it got with ``INDEX_VERSION``
    (``Keys.index_version``: ``<version>:<creation time>``). The next call starts there, less
    ``REWALK_S``, so it costs only the grants created since — and still indexes those an older
    process went on writing during a rolling upgrade, its clock a little behind. The worker's
    retention thread calls it at start and then once an interval.
    """
    mark = values.optional_raw(redis.get(keys.index_version()))
    version, _, walked = (mark or b"").decode().partition(":")
    low: str = "-inf"
    if version == INDEX_VERSION and walked:
        low = repr(float(walked) - REWALK_S)
    script = load_script(redis, "index_grants")
    indexed = looked = 0
    total = values.integer(redis.zcount(keys.all_grants(), low, "+inf"))
    # Walk by score, not by offset: another worker's retention may delete entries between batches.
    highest = float(walked) if version == INDEX_VERSION and walked else 0.0
    at_low: set[str] = set()  # ids already seen at the score ``low`` (ties)
    while True:
        if stop():
            return None
        rows_scored = values.scored(
            redis.zrangebyscore(keys.all_grants(), low, "+inf", start=0, num=batch + len(at_low), withscores=True)
        )
        fresh = [(grant_id, score) for grant_id, score in rows_scored if grant_id not in at_low]
        if not fresh:
            break
        ids = [grant_id for grant_id, _ in fresh]
        top = fresh[-1][1]
        highest = max(highest, top)
        at_low = {grant_id for grant_id, score in fresh if score == top} | (at_low if repr(top) == low else set())
        low = repr(top)
        looked += len(ids)
        with redis.pipeline(transaction=False) as pipe:
            for grant_id in ids:
                pipe.hmget(keys.grant(grant_id), ["indexed", *_TERM_FIELDS])
            rows = [values.optional_texts(row) for row in values.items(pipe.execute())]
        todo = []
        for grant_id, row in zip(ids, rows, strict=True):
            if row[0] is None and row[1] is not None:
                fields = {name: value for name, value in zip(_TERM_FIELDS, row[1:], strict=True) if value is not None}
                todo.append({"id": grant_id, "terms": _stored_terms(fields)})
        if todo:
            indexed += values.integer(script(args=[keys.prefix, json.dumps(todo)]))
            logger.info("search indexes: %d of %d grants looked at, %d indexed so far", looked, total, indexed)
    redis.set(keys.index_version(), f"{INDEX_VERSION}:{highest!r}")
    if indexed:
        logger.info("search indexes: done, %d older grants indexed", indexed)
    return indexed
