"""The search indexes: every grant-moving path keeps them exact; search edges.

Cheap tests (a driven deliverer against the simulator, no Dramatiq). Its defects (a cursor score
that is not a number, a backfill racing a trim, a grant deleted by hand haunting the indexes, Unicode forms)
were written here as failing tests first, then fixed.
"""

from __future__ import annotations

import json
import random
import unicodedata
import uuid
from typing import Any

import pytest
from redis import Redis

from admin import grant_actions
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, DelivererFactory, ScheduleDriver, SettingsFactory
from tests.worker.index_check import index_problems
from tests.worker.test_retention import deliver, entered_ago
from worker.broker import QUEUE_NAME
from worker.creation import Mode, Planned
from worker.effects import StepEffects
from worker.grant import GrantItem, GrantState, NewGrant
from worker.grant_index import backfill
from worker.grant_search import BadCursor, GrantQuery, find_grants
from worker.keys import Keys
from worker.ledger import Ledger
from worker.retention import SECONDS_PER_DAY, GrantTrimmer
from worker.runtime import key_parked_releaser

KEYLESS_GUILD = "444444444444444444"
OTHER_KEY = "test-other-key-91c2d7e0a4"
VIEWER = "777777777777777777"


def new(key: str, *, user: str = USER, guild: str = GUILD, **extra: Any) -> NewGrant:
    return NewGrant(
        guild,
        user,
        (GrantItem("gem", 1),),
        source=str(extra.pop("source", "test")),
        idempotency_key=f"t:{key}",
        **extra,
    )


def found(redis: Redis, keys: Keys, query: GrantQuery) -> list[str]:
    return [grant.id for grant in find_grants(redis, keys, query).grants]


def test_every_grant_moving_path_keeps_every_index_exact(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
    redis: Redis,
    keys: Keys,
) -> None:
    def check(step: str) -> None:
        assert index_problems(redis, keys) == [], f"after {step}"

    # Creation in every mode, and a resolve that finds a run-time link
    redis.hset(keys.links("twitch"), "99", VIEWER)
    made = ledger.create_many([
        Planned(new("enqueue", names=("Some Body",)), Mode.ENQUEUE),
        Planned(new("schedule"), Mode.SCHEDULE),
        Planned(new("park", user="", platform="twitch", external_id="55", names=("Parked Fan",)), Mode.PARK),
        Planned(new("resolve", user="", platform="twitch", external_id="99", names=("linked:one",)), Mode.RESOLVE),
        Planned(new("keyless", guild=KEYLESS_GUILD, source="api"), Mode.SCHEDULE),
    ])  # fmt: skip
    ids = [result.grant.id for result in made.results]
    check("create_many")
    # No queue consumer here: the written messages are dropped (lost), so the enqueued ones are due now too.
    queue = f"{keys.dramatiq_namespace}:{QUEUE_NAME}"
    redis.delete(queue, f"{queue}.msgs")
    redis.zadd(keys.due(), dict.fromkeys(ids, 0))
    # The worker: a coalesced request for the user's grants, the keyless guild's grant parked for its key
    deliverer = make_deliverer(make_settings())
    driver.run(deliverer)
    check("coalesced delivery and a key park")
    assert ledger.get(ids[4]).state == GrantState.PARKED  # type: ignore[union-attr]
    assert set(ledger.get(ids[0]).request_ids) == {ids[0], ids[1]}, "one merged request"  # type: ignore[union-attr]
    # Key release, then a cancel of it; the link release of the other parked grant
    with_key = make_deliverer(make_settings(wetbot_api_keys=f"{KEYLESS_GUILD}={OTHER_KEY}"))
    assert key_parked_releaser(ledger, with_key.clients.keyring)() == 1
    check("release_key_parked")
    assert ledger.cancel(ids[4], "changed my mind")
    check("cancel")
    assert ledger.release_parked("twitch", "55", VIEWER) == [ids[2]]
    check("release_parked")
    assert sorted(found(redis, keys, GrantQuery(text=VIEWER))) == sorted([ids[3], ids[2]])  # one batch: a tie
    # A merged request left unknown, resolved as a whole by an operator
    pair = [ledger.create(new(f"pair{n}", user=VIEWER)).grant.id for n in (1, 2)]
    token = uuid.uuid4().hex
    assert (
        ledger.transition_many(
            pair,
            GrantState.SENDING,
            "sending",
            add_attempt=True,
            effects=StepEffects(begin=token, fields={"request_ids": json.dumps(pair)}),
        )
        == pair
    )
    assert ledger.transition_many(pair, GrantState.UNKNOWN, "timed out", expect=[GrantState.SENDING]) == pair
    check("transition_many to unknown")
    done = grant_actions.resolve(ledger, pair[0], grant_actions.Decision.DELIVERED)
    assert set(done.moved) == set(pair)
    check("resolve of a merged group")
    # Dead and replayed; then retention trims what is old and final
    assert ledger.transition(ids[1], GrantState.DEAD, "arranged", expect=[GrantState.DELIVERED])
    grant_actions.replay(ledger, ids[1])
    check("dead and replayed")
    for grant_id in (ids[0], ids[4], *pair):
        entered_ago(redis, keys, grant_id, 91 * SECONDS_PER_DAY)
    assert GrantTrimmer(redis, keys, retention_s=90 * SECONDS_PER_DAY).trim().trimmed == 4
    check("trim")


def test_a_grant_deleted_by_hand_does_not_haunt_the_indexes_after_retention(
    redis: Redis, keys: Keys, ledger: Ledger
) -> None:
    grant_id = ledger.create(new("by-hand", names=("Ghost",))).grant.id
    deliver(ledger, grant_id)
    entered_ago(redis, keys, grant_id, 91 * SECONDS_PER_DAY)
    redis.delete(keys.grant(grant_id), keys.history(grant_id))  # an operator's hand, or a partial restore
    GrantTrimmer(redis, keys, retention_s=90 * SECONDS_PER_DAY).trim()
    assert redis.zscore(keys.state_index("delivered"), grant_id) is None  # this much is cleaned up ...
    assert index_problems(redis, keys) == []  # ... the secondary indexes are not
    assert find_grants(redis, keys, GrantQuery(state=GrantState.DELIVERED, guild_id=GUILD)).total == 0


def test_a_backfill_racing_a_trim_still_indexes_every_older_grant(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    # Given six grants an older version wrote (no index entries), the two oldest delivered long ago
    older = [ledger.create(new(f"old{n}")).grant.id for n in range(6)]
    for grant_id in older[:2]:
        deliver(ledger, grant_id)
        entered_ago(redis, keys, grant_id, 91 * SECONDS_PER_DAY)
    redis.zadd(keys.all_grants(), {grant_id: n for n, grant_id in enumerate(older)})  # oldest first, as written
    for index in [*redis.scan_iter(f"{keys.prefix}:by-*"), *redis.scan_iter(f"{keys.prefix}:find:*")]:
        redis.delete(index)
    for grant_id in older:
        redis.hdel(keys.grant(grant_id), "indexed")
        redis.delete(keys.grant_terms(grant_id))
    trimmer = GrantTrimmer(redis, keys, retention_s=90 * SECONDS_PER_DAY)
    calls = 0

    def another_workers_retention_runs() -> bool:  # called before each batch: trim after the first one
        nonlocal calls
        calls += 1
        if calls == 2:
            assert trimmer.trim().trimmed == 2
        return False

    # When the backfill runs in batches of two while the other worker trims the two oldest
    backfill(redis, keys, batch=2, stop=another_workers_retention_runs)
    # Then every grant still there is found by its key
    assert [found(redis, keys, GrantQuery(text=f"t:old{n}")) for n in range(2, 6)] == [[g] for g in older[2:]]


def test_an_edited_cursor_score_is_a_bad_cursor_not_a_storage_error(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    ledger.create(new("c1"))
    for score in ("1.2.3", "-", "e", "1e", "..", "+-1"):
        with pytest.raises(BadCursor):
            find_grants(redis, keys, GrantQuery(), cursor=f"all~{score}~{'a' * 32}")


def test_any_cursor_either_pages_the_querys_own_index_or_is_refused(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    """A fuzzed cursor never walks another key: the index comes from the query, the cursor only picks among them."""
    mine = ledger.create(new("mine", source="api")).grant.id
    ledger.create(new("theirs", source="cli", guild=KEYLESS_GUILD))
    rng = random.Random(12)
    valid_scores = ("0", "1712345678.5", "9" * 40, "-1.5e3")
    for _ in range(60):
        code = rng.choice(["q", "gs", "s", "g", "src", "all", "find", ""])
        cursor = f"{code}~{rng.choice(valid_scores)}~{uuid.UUID(int=rng.getrandbits(128)).hex}"
        try:
            page = find_grants(redis, keys, GrantQuery(source="api"), cursor=cursor)
        except BadCursor:
            assert code != "src"
            continue
        assert code == "src" and {g.id for g in page.grants} <= {mine}


@pytest.mark.parametrize(
    ("name", "typed"),
    [
        ("Zoë  The*Star", "zoë the*star"),
        ("STRASSE", "straße"),  # case folding both ways
        ("x:y:grant:z", "X:Y:GRANT:Z"),  # ':' in a term stays inside <p>:find:
        ("Ünïcödé" * 20, "ünïcödé" * 20),  # longer than MAX_TERM_CHARS: both sides are cut the same way
    ],
)
def test_odd_names_are_found_as_typed_in_any_case(
    redis: Redis, keys: Keys, ledger: Ledger, name: str, typed: str
) -> None:
    grant_id = (
        ledger.create_many([Planned(new("odd", user="", platform="twitch", external_id="1", names=(name,)), Mode.PARK)])
        .results[0]
        .grant.id
    )
    assert found(redis, keys, GrantQuery(text=typed)) == [grant_id]
    assert found(redis, keys, GrantQuery(text="*")) == []
    assert index_problems(redis, keys) == []


def test_a_name_is_found_whatever_its_unicode_normal_form(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    name = unicodedata.normalize("NFD", "José Müller")
    grant_id = (
        ledger.create_many(
            [Planned(new("nfd", user="", platform="patreon", external_id="2", names=(name,)), Mode.PARK)]
        )
        .results[0]
        .grant.id
    )
    assert found(redis, keys, GrantQuery(text=unicodedata.normalize("NFC", "josé müller"))) == [grant_id]


def test_following_the_cursors_lists_exactly_what_the_filters_match_whatever_ties_limit_and_budget(
    redis: Redis, keys: Keys, ledger: Ledger
) -> None:
    """Random grants with many tied scores; every query, page size and budget: the pages, in order, are the
    matching grants, newest first (ties by id, descending), each once."""
    rng = random.Random(3)
    states = [GrantState.QUEUED, GrantState.DEAD, GrantState.DELIVERED]
    made = []
    for n in range(40):
        guild = rng.choice([GUILD, KEYLESS_GUILD])
        grant_id = ledger.create(
            new(f"r{n}", guild=guild, source=rng.choice(["api", "cli"]), user=rng.choice([USER, VIEWER]))
        ).grant.id
        state = rng.choice(states)
        if state != GrantState.QUEUED:
            assert ledger.transition(grant_id, state, "arranged")
        made.append(grant_id)
    # Squash every score onto three instants, in each index: ties everywhere
    for pattern in ("grants", "state:*", "by-guild:*", "by-source:*", "find:*"):
        for index in redis.scan_iter(f"{keys.prefix}:{pattern}"):
            members = [raw.decode() for raw in redis.zrange(index, 0, -1)]  # type: ignore[union-attr]
            if redis.type(index) == b"zset" and members:
                redis.zadd(index, {m: float(1000 + made.index(m) % 3) for m in members})
    grants = {g: ledger.get(g) for g in made}
    for _ in range(25):
        query = GrantQuery(
            state=rng.choice([None, *states]),
            source=rng.choice(["", "api", "cli"]),
            guild_id=rng.choice(["", GUILD, KEYLESS_GUILD]),
            text=rng.choice(["", USER, VIEWER]),
        )
        expected = [
            g
            for g, grant in grants.items()
            if grant is not None
            and (query.state is None or grant.state == query.state)
            and (not query.source or grant.source == query.source)
            and (not query.guild_id or grant.guild_id == query.guild_id)
            and (not query.text or grant.user_id == query.text)
        ]
        expected.sort(key=lambda g: (made.index(g) % 3, g), reverse=True)
        limit, budget = rng.randint(1, 7), rng.randint(1, 9)
        seen: list[str] = []
        cursor: str | None = None
        for _page in range(200):
            page = find_grants(redis, keys, query, cursor=cursor, limit=limit, budget=budget)
            seen += [grant.id for grant in page.grants]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == expected, (query, limit, budget)
