"""The console benchmark's ledger: N grants of a realistic mix, written as production writes them.

Grants go in through ``Ledger.create_many`` (``lua/create_grants.lua``, batches of :data:`CREATE_BATCH`)
and move through ``Ledger.transition_many`` (``lua/transition.lua``), so every secondary index
(``worker/grant_index.py``) is exactly what the service would have: nothing is written by hand.

- **Who**: ``n // 25`` supporters (at least 40), each in one of three guilds, with a Discord id, a Twitch id,
  login and display name, and a Patreon user id, member id and full name (first and last names from short
  lists, so a word of a name finds many grants); plus Twitch viewers nobody has linked yet, whose grants are
  ``parked``. About 25 grants per supporter at any N, so a search finds as many grants at 1,000 as at 100,000.
- **What**: 60 % Twitch (``twitch:<message id>:<rule>``, names = login and display name), 25 % Patreon
  (``patreon:<member id>:charge-<k>:<rule>``, names = full name, aliases = member id), 15 % API
  (``api:<caller's key>``).
- **States**: 0.6 % parked (created with ``Mode.PARK``), 0.5 % dead, 0.2 % unknown, 0.3 % retrying
  (each after ``sending``), 0.4 % queued (created with ``Mode.SCHEDULE``: due, no queue message, as the
  reconciler would find them), the rest delivered (queued -> sending -> delivered, one merged request per
  guild and user at most :data:`REQUEST_GRANTS` grants). Every count is at least :data:`MIN_ROWS` (queued:
  three times that, for the per-guild filter), so every list the benchmark times is a full page at the
  small baseline too.

:func:`add_extras` adds what the other console pages list: inbox events (``EventInbox.record``, real Twitch
and Patreon bodies and headers), audit entries (``AuditLog.record``) and run-time links (``LinkStore.add``).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from producers.audit import AuditLog
from producers.inbox import EventInbox, EventOutcome, Outcome
from producers.links import LinkStore
from producers.patreon.samples import Member, encode
from producers.twitch.samples import sample_event, sample_payload, signed_request
from producers.twitch.signature import HEADER_MESSAGE_ID
from worker import redis_values as values
from worker.creation import Mode, Planned
from worker.effects import StepEffects
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

__all__ = ["GUILDS", "Mix", "Seeded", "add_extras", "seed"]

#: Three guilds, ids of 17 to 20 digits.
GUILDS = ("81234567890123456", "912345678901234567", "10234567890123456789")
#: Grants per ``create_many`` call.
CREATE_BATCH = 500
#: Most grants one merged request (one ``transition_many`` call) carries.
REQUEST_GRANTS = 20
#: Least grants in each state: more than a page (50) of every filtered list.
MIN_ROWS = 60
#: Grants per supporter on average.
GRANTS_PER_SUPPORTER = 25
FIRST_NAMES = (
    "Alice", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kaori", "Liam", "Mona", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tariq",
)  # fmt: skip
LAST_NAMES = (
    "Andersen", "Brown", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hughes", "Ito", "Jensen",
    "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Quist", "Rossi", "Silva", "Tanaka",
)  # fmt: skip
TWITCH_RULES = ("cheer-gems", "sub-kit", "follow-kit", "raid-crate")
#: Final and waiting states reached through ``sending``, with the step's reason and ``last_error``.
AFTER_SENDING = {
    GrantState.DEAD: "WetBot answered 400: unknown item",
    GrantState.UNKNOWN: "timed out after 15 s; the request may have been applied",
    GrantState.RETRYING: "WetBot answered 503; retrying",
}


@dataclass(frozen=True)
class Mix:
    """How many grants end in each state, for ``n`` grants in all."""

    n: int
    #: queued grants instead of the mix's share (a backlog).
    queued: int | None = None

    def counts(self) -> dict[GrantState, int]:
        n = self.n
        out = {
            GrantState.PARKED: max(MIN_ROWS, n * 6 // 1000),
            GrantState.DEAD: max(MIN_ROWS, n * 5 // 1000),
            GrantState.UNKNOWN: max(MIN_ROWS, n * 2 // 1000),
            GrantState.RETRYING: max(MIN_ROWS, n * 3 // 1000),
            GrantState.QUEUED: max(3 * MIN_ROWS, n * 4 // 1000) if self.queued is None else self.queued,
        }
        out[GrantState.DELIVERED] = n - sum(out.values())
        if out[GrantState.DELIVERED] < MIN_ROWS:
            raise ValueError(f"{n} grants are too few for the mix (at least {sum(out.values()) + MIN_ROWS})")
        return out

    @property
    def supporters(self) -> int:
        return max(40, self.n // GRANTS_PER_SUPPORTER)


@dataclass(frozen=True)
class Supporter:
    """One person, known on every platform (``linked``) or a Twitch viewer without a Discord id yet."""

    guild: str
    discord: str
    twitch_id: str
    login: str
    patreon_id: str
    member_id: str
    full_name: str

    @property
    def display(self) -> str:
        return self.login.title()


@dataclass
class Seeded:
    """What one prefix holds and what the pages are asked for."""

    prefix: str
    n: int
    counts: dict[GrantState, int]
    create_s: float
    transition_s: float
    memory_before: int
    memory_after: int
    #: one grant id per state.
    sample: dict[GrantState, str]
    #: a supporter searched for (their Twitch login and their Discord id) and how many grants each finds.
    login: str
    login_grants: int
    discord: str
    discord_grants: int
    #: the guild with the most queued grants (the guild filter's page).
    queued_guild: str
    supporters: list[Supporter] = field(default_factory=list)
    #: (grant id, supporter, source) of some delivered grants, for inbox events that name them.
    made: list[tuple[str, Supporter, str]] = field(default_factory=list)


def _supporter(rng: random.Random, i: int, *, tag: str) -> Supporter:
    return Supporter(
        guild=GUILDS[i % len(GUILDS)],
        discord=str(rng.randrange(10**17, 10**19)),
        twitch_id=str(rng.randrange(10**7, 10**9)),
        login=f"{tag}_{rng.choice(FIRST_NAMES).lower()}{i}",
        patreon_id=str(rng.randrange(10**6, 10**8)),
        member_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        full_name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
    )


def _new_grant(rng: random.Random, who: Supporter, source: str, n: int, *, parked: bool) -> NewGrant:
    if source == "twitch":
        rule = rng.choice(TWITCH_RULES)
        message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return NewGrant(
            guild_id=who.guild,
            user_id="" if parked else who.discord,
            items=(GrantItem("gem", rng.randint(1, 50)),),
            source="twitch",
            idempotency_key=f"twitch:{message_id}:{rule}",
            source_ref=message_id,
            rule=rule,
            reason="Thanks for the support!",
            platform="twitch",
            external_id=who.twitch_id,
            names=(who.login, who.display),
        )
    if source == "patreon":
        return NewGrant(
            guild_id=who.guild,
            user_id="" if parked else who.discord,
            items=(GrantItem("kit", 1),),
            source="patreon",
            idempotency_key=f"patreon:{who.member_id}:charge-{n}:monthly",
            source_ref=f"members:pledge:update member {who.member_id}",
            rule="monthly",
            reason="Patreon monthly",
            platform="patreon",
            external_id=who.patreon_id,
            names=(who.full_name,),
            aliases=(who.member_id,),
        )
    key = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    return NewGrant(
        guild_id=who.guild,
        user_id=who.discord,
        items=(GrantItem("coin", 10),),
        source="api",
        idempotency_key=f"api:{key}",
        source_ref=key,
        reason="giveaway",
    )


def _plan(rng: random.Random, mix: Mix) -> tuple[list[Supporter], list[tuple[Planned, GrantState, Supporter]]]:
    """Every grant to create, its final state and its supporter, in creation order."""
    counts = mix.counts()
    supporters = [_supporter(rng, i, tag="viewer") for i in range(mix.supporters)]
    unlinked = [_supporter(rng, i, tag="lurker") for i in range(max(1, counts[GrantState.PARKED] // 3))]
    states = [state for state, count in counts.items() for _ in range(count)]
    rng.shuffle(states)
    planned: list[tuple[Planned, GrantState, Supporter]] = []
    for n, state in enumerate(states):
        if state == GrantState.PARKED:
            who = rng.choice(unlinked)
            source = rng.choices(("twitch", "patreon"), weights=(3, 1))[0]
            new = _new_grant(rng, who, source, n, parked=True)
            planned.append((Planned(new, Mode.PARK), state, who))
        else:
            who = rng.choice(supporters)
            source = rng.choices(("twitch", "patreon", "api"), weights=(60, 25, 15))[0]
            planned.append((Planned(_new_grant(rng, who, source, n, parked=False), Mode.SCHEDULE), state, who))
    return supporters, planned


def used_memory(redis: Redis) -> int:
    """``INFO memory`` ``used_memory`` in bytes (the whole server: other clients' keys count too)."""
    return int(cast(dict[str, Any], redis.info("memory"))["used_memory"])


def _requests(ids: Sequence[tuple[str, str, str]]) -> Iterator[list[str]]:
    """Grant ids grouped as merged requests: one (guild, user) each, at most :data:`REQUEST_GRANTS` grants."""
    by_user: dict[tuple[str, str], list[str]] = defaultdict(list)
    for grant_id, guild, user in ids:
        by_user[(guild, user)].append(grant_id)
    for grouped in by_user.values():
        for start in range(0, len(grouped), REQUEST_GRANTS):
            yield grouped[start : start + REQUEST_GRANTS]


def _send(ledger: Ledger, ids: list[str], to: GrantState) -> None:
    """One merged request: into ``sending`` (a run token, as a worker's send), then on to ``to``."""
    token = uuid.uuid4().hex
    begun = ledger.transition_many(
        ids,
        GrantState.SENDING,
        "sending to WetBot",
        expect=[GrantState.QUEUED],
        add_attempt=True,
        effects=StepEffects(begin=token, all_or_nothing=True, due_in_s=30.0),
    )
    if len(begun) != len(ids):
        raise RuntimeError(f"only {len(begun)} of {len(ids)} grants moved to sending")
    if to == GrantState.DELIVERED:
        moved = ledger.transition_many(
            ids,
            to,
            "WetBot applied it",
            expect=[GrantState.SENDING],
            per_grant={grant_id: {"result": json.dumps({"gem": 1.0})} for grant_id in ids},
            effects=StepEffects(attempt=token),
        )
    else:
        error = AFTER_SENDING[to]
        moved = ledger.transition_many(
            ids,
            to,
            error,
            expect=[GrantState.SENDING],
            add_failure=True,
            last_error=error,
            effects=StepEffects(attempt=token, due_in_s=300.0 if to == GrantState.RETRYING else 0.0),
        )
    if len(moved) != len(ids):
        raise RuntimeError(f"only {len(moved)} of {len(ids)} grants moved to {to.value}")


def seed(redis: Redis, prefix: str, n: int, *, queued: int | None = None, rng_seed: int = 12) -> Seeded:
    """Write ``n`` grants of the mix under ``prefix`` (see the module docstring), ``queued`` of them queued
    if given."""
    rng = random.Random(rng_seed)
    mix = Mix(n, queued)
    supporters, planned = _plan(rng, mix)
    keys = Keys(prefix)
    ledger = Ledger(redis, keys)
    memory_before = used_memory(redis)
    started = time.perf_counter()
    created: dict[GrantState, list[tuple[str, str, str]]] = defaultdict(list)
    made: list[tuple[str, Supporter, str]] = []
    for start in range(0, len(planned), CREATE_BATCH):
        chunk = planned[start : start + CREATE_BATCH]
        result = ledger.create_many([item for item, _, _ in chunk])
        for (item, state, who), done in zip(chunk, result.results, strict=True):
            if not done.created:
                raise RuntimeError(f"idempotency key taken twice: {item.new.idempotency_key}")
            created[state].append((done.grant.id, done.grant.guild_id, done.grant.user_id))
            if state == GrantState.DELIVERED and len(made) < 2000:
                made.append((done.grant.id, who, item.new.source))
    create_s = time.perf_counter() - started
    started = time.perf_counter()
    for state in (GrantState.DELIVERED, *AFTER_SENDING):
        for ids in _requests(created[state]):
            _send(ledger, ids, state)
    transition_s = time.perf_counter() - started
    counts = {state: count for state, count in ledger.counts().items() if count}
    if counts != mix.counts():
        raise RuntimeError(f"the ledger holds {counts}, not the planned {mix.counts()}")
    queued_by_guild = {g: values.integer(redis.zcard(keys.guild_state(g, "queued"))) for g in GUILDS}
    searched = supporters[0]
    return Seeded(
        prefix=prefix,
        n=n,
        counts=counts,
        create_s=create_s,
        transition_s=transition_s,
        memory_before=memory_before,
        memory_after=used_memory(redis),
        sample={state: ids[0][0] for state, ids in created.items()},
        login=searched.login,
        login_grants=values.integer(redis.zcard(keys.find(searched.login))),
        discord=supporters[1].discord,
        discord_grants=values.integer(redis.zcard(keys.find(supporters[1].discord))),
        queued_guild=max(queued_by_guild, key=lambda g: queued_by_guild[g]),
        supporters=supporters,
        made=made,
    )


# -- the other pages' data ---------------------------------------------------------------------------------


def add_extras(redis_url: str, redis: Redis, seeded: Seeded, *, events: int, audit: int, links: int) -> None:
    """``events`` inbox events (for delivered grants, a few ignored), ``audit`` entries, ``links`` links."""
    keys = Keys(seeded.prefix)
    asyncio.run(_record_events(redis_url, redis, keys, seeded, events))
    log = AuditLog(redis, keys)
    actions = ("login", "replay", "cancel", "resolve", "link")
    for i in range(audit):
        grant_id, _, _ = seeded.made[i % len(seeded.made)]
        action = actions[i % len(actions)]
        log.record(f"console:{i % 7:04x}", action, "" if action == "login" else grant_id, "ok", f"bench entry {i}")
    store = LinkStore(redis, keys)
    for who in seeded.supporters[:links]:
        store.add("twitch", who.twitch_id, who.discord)


async def _record_events(redis_url: str, redis: Redis, keys: Keys, seeded: Seeded, count: int) -> None:
    aredis = AsyncRedis.from_url(redis_url)
    try:
        inbox = EventInbox(redis, aredis, keys)
        pending = []
        for i in range(count):
            grant_id, who, source = seeded.made[i % len(seeded.made)]
            outcome = (
                EventOutcome(Outcome.IGNORED, ignored="no rule for this event")
                if i % 10 == 9
                else EventOutcome(Outcome.GRANTED, granted=(grant_id,))
            )
            if source == "patreon":
                member = Member(member_id=who.member_id, user_id=who.patreon_id, discord_id=who.discord)
                body = encode(member.document())
                headers = {
                    "Content-Type": "application/json",
                    "X-Patreon-Event": "members:pledge:update",
                    "User-Agent": "Patreon HTTP Robot",
                }
                ref = uuid.uuid4().hex
                pending.append(inbox.record("patreon", "members:pledge:update", ref, headers, body, outcome))
            else:
                event = sample_event("channel.cheer", user_id=who.twitch_id, user_login=who.login, bits=500)
                body, headers = signed_request(uuid.uuid4().hex, sample_payload("channel.cheer", event))
                ref = headers[HEADER_MESSAGE_ID]
                pending.append(inbox.record("twitch", "notification", ref, headers, body, outcome))
            if len(pending) >= 32:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await aredis.aclose()
