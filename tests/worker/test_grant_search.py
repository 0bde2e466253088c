"""Grant search: the secondary indexes kept by every grant-moving script, and pages walked from them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis import Redis

from config.settings import Settings
from tests.conftest import GUILD, USER, RunningWorker, wait_for
from tests.worker.test_retention import deliver, entered_ago
from worker.creation import Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.grant_index import INDEX_VERSION, backfill, search_term
from worker.grant_search import BadCursor, GrantQuery, find_grants
from worker.keys import Keys
from worker.ledger import Ledger
from worker.retention import SECONDS_PER_DAY, GrantTrimmer

OTHER_GUILD = "222222222222222222"
VIEWER = "123456789012345678"


def twitch_grant(
    ledger: Ledger,
    key: str,
    *,
    login: str = "CoolViewer",
    twitch_id: str = "4242",
    guild: str = GUILD,
    park: bool = True,
) -> str:
    new = NewGrant(
        guild,
        "" if park else VIEWER,
        (GrantItem("gem", 1),),
        source="twitch",
        idempotency_key=key,
        platform="twitch",
        external_id=twitch_id,
        names=(login, f"{login} TV"),
    )
    return ledger.create_many([Planned(new, Mode.PARK if park else Mode.SCHEDULE)]).results[0].grant.id


def api_grant(ledger: Ledger, key: str, *, user: str = USER, guild: str = GUILD) -> str:
    new = NewGrant(guild, user, (GrantItem("gem", 1),), source="api", idempotency_key=f"api:{key}", source_ref=key)
    return ledger.create(new).grant.id


def ids(redis: Redis, keys: Keys, query: GrantQuery, **options: object) -> list[str]:
    return [grant.id for grant in find_grants(redis, keys, query, **options).grants]  # type: ignore[arg-type]


def test_a_supporter_is_found_by_every_id_and_name_they_are_known_by(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given a parked Twitch grant, a Patreon grant with a member id and a full name, and an API grant
    parked = twitch_grant(ledger, "twitch:m1:sub")
    patreon = NewGrant(
        GUILD,
        "",
        (GrantItem("gem", 1),),
        source="patreon",
        idempotency_key="patreon:x",
        source_ref="members:pledge:create member m-77",
        platform="patreon",
        external_id="9001",
        names=("Jane  Q. Doe",),
        aliases=("m-77",),
    )
    pledge = ledger.create_many([Planned(patreon, Mode.PARK)]).results[0].grant.id
    api = api_grant(ledger, "Order-55")
    # Then each is found by what an operator knows of the supporter, whatever the case
    assert ids(redis, keys, GrantQuery(text="coolviewer")) == [parked]
    assert ids(redis, keys, GrantQuery(text=" COOLVIEWER tv ")) == [parked]
    assert ids(redis, keys, GrantQuery(text="4242")) == [parked]
    assert ids(redis, keys, GrantQuery(text="twitch:m1:sub")) == [parked]
    assert ids(redis, keys, GrantQuery(text="jane q. doe")) == [pledge]
    assert ids(redis, keys, GrantQuery(text="Doe")) == [pledge]
    assert ids(redis, keys, GrantQuery(text="m-77")) == [pledge]
    assert ids(redis, keys, GrantQuery(text="9001")) == [pledge]
    assert ids(redis, keys, GrantQuery(text="Order-55")) == [api]  # a key is exact: its claim finds it
    assert ids(redis, keys, GrantQuery(text="api:Order-55", source="api")) == [api]
    assert ids(redis, keys, GrantQuery(text="Order-55", source="twitch")) == []
    assert ids(redis, keys, GrantQuery(text=USER)) == [api]
    assert ids(redis, keys, GrantQuery(text="members:pledge:create")) == []
    # And a parked grant is found by its Discord id once a link releases it
    assert ids(redis, keys, GrantQuery(text=VIEWER)) == []
    assert ledger.release_parked("twitch", "4242", VIEWER) == [parked]
    assert ids(redis, keys, GrantQuery(text=VIEWER)) == [parked]


def test_filters_follow_every_state_change_and_combine(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given grants of two guilds and two sources, in several states
    a_api = api_grant(ledger, "a1")
    a_twitch = twitch_grant(ledger, "t1", park=False)
    b_api = api_grant(ledger, "b1", guild=OTHER_GUILD)
    dead = api_grant(ledger, "d1")
    assert ledger.transition(dead, GrantState.DEAD, "WetBot refused the grant: 400")
    deliver(ledger, a_api)
    # Then each filter, alone and together, lists exactly its grants, newest first
    assert ids(redis, keys, GrantQuery()) == [dead, b_api, a_twitch, a_api]
    assert ids(redis, keys, GrantQuery(guild_id=GUILD)) == [dead, a_twitch, a_api]
    assert ids(redis, keys, GrantQuery(source="api")) == [dead, b_api, a_api]
    assert ids(redis, keys, GrantQuery(state=GrantState.QUEUED)) == [b_api, a_twitch]
    assert ids(redis, keys, GrantQuery(state=GrantState.QUEUED, guild_id=GUILD)) == [a_twitch]
    assert ids(redis, keys, GrantQuery(state=GrantState.DEAD, source="api", guild_id=GUILD)) == [dead]
    assert ids(redis, keys, GrantQuery(state=GrantState.DELIVERED, guild_id=GUILD)) == [a_api]
    assert ids(redis, keys, GrantQuery(state=GrantState.DELIVERED, guild_id=OTHER_GUILD)) == []
    assert ids(redis, keys, GrantQuery(source="twitch", state=GrantState.DEAD)) == []
    # And the guild's state index moved with every step
    assert redis.zrange(keys.guild_state(GUILD, "sending"), 0, -1) == []
    assert redis.zrange(keys.guild_state(GUILD, "delivered"), 0, -1) == [a_api.encode()]
    page = find_grants(redis, keys, GrantQuery(state=GrantState.QUEUED))
    assert page.total == 2 and page.by_state_time


def test_pages_follow_each_other_without_gaps_or_repeats_even_on_ties(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    made = [api_grant(ledger, f"p{n}") for n in range(7)]
    redis.zadd(keys.all_grants(), dict.fromkeys(made, 1000.0))  # every one created "at once"
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = find_grants(redis, keys, GrantQuery(), cursor=cursor, limit=3)
        seen += [grant.id for grant in page.grants]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == len(made)


def test_a_page_looks_at_no_more_than_its_budget_and_goes_on_from_there(
    redis: Redis, keys: Keys, ledger: Ledger
) -> None:
    # Given a member's one cli grant under 30 newer api grants of theirs (a search walks the member's index)
    old = NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="cli", idempotency_key="cli:old")
    target = ledger.create(old).grant.id
    for n in range(30):
        api_grant(ledger, f"n{n}")
    query = GrantQuery(source="cli", text=USER)
    # When a page may look at 10 entries, it is short and says where to go on
    first = find_grants(redis, keys, query, limit=5, budget=10)
    assert first.grants == [] and first.next_cursor is not None
    # Then following the cursors reaches the grant, and the last page says there is no more
    found: list[str] = []
    cursor: str | None = first.next_cursor
    while cursor is not None:
        page = find_grants(redis, keys, query, cursor=cursor, limit=5, budget=10)
        found += [grant.id for grant in page.grants]
        cursor = page.next_cursor
    assert found == [target]


def test_a_cursor_from_other_filters_or_edited_is_refused(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    for n in range(3):
        api_grant(ledger, f"c{n}")
    cursor = find_grants(redis, keys, GrantQuery(), limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(BadCursor):
        find_grants(redis, keys, GrantQuery(text="x"), cursor=cursor)
    with pytest.raises(BadCursor):
        find_grants(redis, keys, GrantQuery(), cursor=cursor + "0")


def test_retention_removes_a_trimmed_grant_from_every_index(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    grant_id = twitch_grant(ledger, "trim-me", park=False)
    deliver(ledger, grant_id)
    entered_ago(redis, keys, grant_id, 91 * SECONDS_PER_DAY)
    assert GrantTrimmer(redis, keys, retention_s=90 * SECONDS_PER_DAY).trim().trimmed == 1
    left = [
        keys.guild_grants(GUILD),
        keys.guild_state(GUILD, "delivered"),
        keys.source_grants("twitch"),
        keys.find("coolviewer"),
        keys.find("4242"),
        keys.find(VIEWER),
    ]
    assert [redis.zscore(index, grant_id) for index in left] == [None] * len(left)
    assert not redis.exists(keys.grant_terms(grant_id))


def test_backfill_indexes_grants_written_before_the_indexes_once(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given grants as an older version left them: no index entries and no "indexed" mark
    older = [api_grant(ledger, f"old{n}") for n in range(5)]
    assert ledger.transition(older[0], GrantState.DEAD, "refused")
    for index in redis.scan_iter(f"{keys.prefix}:by-*"):
        redis.delete(index)
    for index in redis.scan_iter(f"{keys.prefix}:find:*"):
        redis.delete(index)
    for grant_id in older:
        redis.hdel(keys.grant(grant_id), "indexed")
        redis.delete(keys.grant_terms(grant_id))
    assert ids(redis, keys, GrantQuery(state=GrantState.QUEUED, source="api")) == []
    # When the backfill runs (in small batches), then again
    assert backfill(redis, keys, batch=2) == 5
    assert backfill(redis, keys, batch=2) == 0
    # Then every older grant is found by its terms and filters
    assert ids(redis, keys, GrantQuery(text="old3")) == [older[3]]  # by its claim
    assert ids(redis, keys, GrantQuery(state=GrantState.QUEUED, source="api")) == older[:0:-1]
    assert ids(redis, keys, GrantQuery(text=USER)) == older[::-1]
    assert ids(redis, keys, GrantQuery(state=GrantState.DEAD, guild_id=GUILD)) == [older[0]]
    assert str(redis.get(keys.index_version()), "utf-8").startswith(f"{INDEX_VERSION}:")  # type: ignore[arg-type]
    # An older process still running (a rolling upgrade) writes one more grant without indexes: the next
    # backfill, which starts near where the last one stopped, indexes it
    late = api_grant(ledger, "late")
    redis.hdel(keys.grant(late), "indexed")
    redis.delete(keys.grant_terms(late), keys.find(USER))
    assert backfill(redis, keys) == 1
    assert ids(redis, keys, GrantQuery(text=USER))[0] == late
    assert search_term("  A  b ") == "a b"


def test_a_starting_worker_indexes_the_grants_an_older_version_wrote(
    redis: Redis, keys: Keys, ledger: Ledger, settings: Settings, workers: Callable[..., RunningWorker]
) -> None:
    grant_id = api_grant(ledger, "legacy")
    assert ledger.transition(grant_id, GrantState.DEAD, "arranged")  # dead: the worker leaves it alone
    for index in [*redis.scan_iter(f"{keys.prefix}:by-*"), *redis.scan_iter(f"{keys.prefix}:find:*")]:
        redis.delete(index)
    redis.hdel(keys.grant(grant_id), "indexed")
    redis.delete(keys.grant_terms(grant_id))
    workers(settings)
    wait_for(lambda: ids(redis, keys, GrantQuery(text=USER)) == [grant_id], timeout_s=10)
    assert ids(redis, keys, GrantQuery(state=GrantState.DEAD, guild_id=GUILD)) == [grant_id]


def test_a_grants_hash_keeps_redis_compact_encoding_with_its_search_terms(
    redis: Redis, keys: Keys, ledger: Ledger
) -> None:
    # Long search terms live beside the hash: inside it, one value over 64 bytes would make Redis store
    # the hash in its large encoding (2.5x the memory per grant, measured by bench/console_pages.py).
    grant_id = twitch_grant(
        ledger, "twitch:" + "e" * 36 + ":monthly-sub-reward", login="longestpossiblelogin_2025", park=False
    )
    deliver(ledger, grant_id)
    assert redis.object("encoding", keys.grant(grant_id)) in (b"listpack", b"ziplist")
    assert len(redis.get(keys.grant_terms(grant_id)) or b"") > 64  # type: ignore[arg-type]
