"""Group commit of webhook events (``producers.creation_batcher``) against the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from config.settings import load_settings
from devtools.chaos.servers import free_port
from producers.creation_batcher import CreationBatcher
from tests.conftest import GUILD, TEST_REDIS_URL, USER
from tests.schedule_view import due_ids
from worker.broker import QUEUE_NAME
from worker.connections import connect_redis_async
from worker.creation import BatchResult, MissingGrant, Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.schedule import CREATE_INFLIGHT_CAP

T = TypeVar("T")


def run_with_batcher(keys: Keys, body: Callable[[CreationBatcher], Awaitable[T]], **options: Any) -> T:
    """Run ``body`` on a fresh event loop with a batcher on its own asyncio client."""

    async def main() -> T:
        client = AsyncRedis.from_url(TEST_REDIS_URL)
        try:
            return await body(CreationBatcher(client, keys, **options))
        finally:
            await client.aclose()

    return asyncio.run(main())


def planned(key: str, *, mode: Mode = Mode.ENQUEUE, amount: float = 1) -> Planned:
    new = NewGrant(GUILD, USER, (GrantItem("gem", amount),), source="test", idempotency_key=key)
    return Planned(new, mode)


def queued_messages(redis: Redis, keys: Keys) -> int:
    return cast(int, redis.llen(f"{keys.dramatiq_namespace}:{QUEUE_NAME}"))


def counted(redis: Redis, keys: Keys, name: str) -> int:
    return int(cast(bytes | None, redis.hget(keys.counters(), name)) or 0)


def test_concurrent_events_share_calls_and_each_gets_its_own_grants(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    async def body(batcher: CreationBatcher) -> tuple[list[BatchResult], int, int]:
        results = await asyncio.gather(
            *(
                batcher.create(
                    [planned(f"ev{n}:a", amount=n), planned(f"ev{n}:b", amount=-n)],
                    seen_key=keys.seen("test", f"ev{n}"),
                    counter="test.event",
                )
                for n in range(1, 21)
            )
        )
        return results, batcher.calls, batcher.events

    results, calls, events = run_with_batcher(keys, body)

    assert (calls, events) == (1, 20)  # all twenty were waiting when the first call went out
    for n, result in enumerate(results, start=1):
        assert not result.seen
        assert [r.grant.idempotency_key for r in result.results] == [f"ev{n}:a", f"ev{n}:b"]
        assert [r.grant.items[0].amount for r in result.results] == [n, -n]
        for created in result.results:
            assert created.created
            stored = ledger.get(created.grant.id)
            assert stored == created.grant
            assert stored is not None and stored.state is GrantState.QUEUED
        assert redis.exists(keys.seen("test", f"ev{n}"))
    # One guild's first CREATE_INFLIGHT_CAP get their messages at once; the rest are due now, for a reconciler.
    assert queued_messages(redis, keys) == CREATE_INFLIGHT_CAP
    assert len(due_ids(redis, keys)) == 40 - CREATE_INFLIGHT_CAP
    assert counted(redis, keys, "test.event") == 20


def test_calls_carry_at_most_the_configured_number_of_events(redis: Redis, keys: Keys) -> None:
    async def body(batcher: CreationBatcher) -> int:
        await asyncio.gather(*(batcher.create([planned(f"k{n}")]) for n in range(10)))
        return batcher.calls

    assert run_with_batcher(keys, body, max_events_per_call=4) == 3  # 4 + 4 + 2
    assert queued_messages(redis, keys) == 10


def test_the_same_delivery_twice_in_one_call_is_handled_once(redis: Redis, keys: Keys) -> None:
    seen = keys.seen("test", "message-1")

    async def body(batcher: CreationBatcher) -> tuple[list[BatchResult], int]:
        results = await asyncio.gather(
            *(batcher.create([planned("message-1:rule")], seen_key=seen, counter="test.event") for _ in range(2))
        )
        return results, batcher.calls

    (first, second), calls = run_with_batcher(keys, body)

    assert calls == 1
    assert not first.seen and first.results[0].created
    assert second.seen and second.results == ()
    assert queued_messages(redis, keys) == 1
    assert counted(redis, keys, "test.event") == 1


def test_a_taken_key_answers_with_the_grant_that_took_it(keys: Keys, ledger: Ledger) -> None:
    existing = ledger.create(planned("taken").new).grant

    async def body(batcher: CreationBatcher) -> BatchResult:
        return await batcher.create([planned("taken", amount=99)])

    result = run_with_batcher(keys, body)

    assert not result.results[0].created
    assert result.results[0].grant == ledger.get(existing.id)


def test_resolve_parks_or_takes_the_linked_user_inside_the_call(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    redis.hset(keys.links("twitch"), "linked-viewer", "444444444444444444")

    def for_viewer(key: str, viewer: str) -> Planned:
        new = NewGrant(
            GUILD, "", (GrantItem("gem", 1),), source="test", idempotency_key=key, platform="twitch", external_id=viewer
        )
        return Planned(new, Mode.RESOLVE)

    async def body(batcher: CreationBatcher) -> tuple[BatchResult, BatchResult]:
        return await asyncio.gather(
            batcher.create([for_viewer("r1", "linked-viewer")]), batcher.create([for_viewer("r2", "stranger")])
        )

    linked, stranger = run_with_batcher(keys, body)

    assert linked.results[0].grant.user_id == "444444444444444444"
    assert linked.results[0].grant.state is GrantState.QUEUED
    assert stranger.results[0].grant.state is GrantState.PARKED
    assert ledger.get(linked.results[0].grant.id) == linked.results[0].grant
    assert ledger.get(stranger.results[0].grant.id) == stranger.results[0].grant
    assert redis.sismember(keys.parked("twitch", "stranger"), stranger.results[0].grant.id)


def test_an_event_that_cannot_be_answered_fails_alone(redis: Redis, keys: Keys, ledger: Ledger) -> None:
    gone = ledger.create(planned("gone").new).grant
    redis.delete(keys.grant(gone.id))  # an operator deleted the record by hand

    async def body(batcher: CreationBatcher) -> tuple[tuple[BatchResult | BaseException, ...], int]:
        outcomes = await asyncio.gather(
            batcher.create([planned("gone")]),
            batcher.create([planned("fine")]),
            batcher.create([Planned(planned("no-identity").new, Mode.PARK)]),  # may park, names no one
            return_exceptions=True,
        )
        return outcomes, batcher.calls

    (missing, fine, invalid), calls = run_with_batcher(keys, body)

    assert calls == 1
    assert isinstance(missing, MissingGrant)
    assert isinstance(fine, BatchResult) and fine.results[0].created
    assert isinstance(invalid, ValueError)
    assert ledger.get_by_key("no-identity") is None
    assert queued_messages(redis, keys) == 1


def test_a_failed_call_fails_every_event_in_it_and_the_next_call_goes_out(keys: Keys) -> None:
    async def main() -> tuple[list[BatchResult | BaseException], bool]:
        down = connect_redis_async(load_settings(redis_url=f"redis://127.0.0.1:{free_port()}/15"))
        batcher = CreationBatcher(down, keys)
        try:
            outcomes = await asyncio.gather(
                *(batcher.create([planned(f"d{n}")]) for n in range(3)), return_exceptions=True
            )
            again = await asyncio.gather(batcher.create([planned("d-again")]), return_exceptions=True)
        finally:
            await down.aclose()
        return outcomes, isinstance(again[0], RedisConnectionError)

    outcomes, failed_again = asyncio.run(main())

    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    assert failed_again  # the batcher did not stall after a failure: the next event made its own call


def test_a_cancelled_request_does_not_hold_up_the_others(redis: Redis, keys: Keys) -> None:
    async def body(batcher: CreationBatcher) -> BatchResult:
        doomed = asyncio.create_task(batcher.create([planned("doomed")]))
        survivor = asyncio.create_task(batcher.create([planned("survivor")]))
        await asyncio.sleep(0)  # both are waiting for the call
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await survivor

    result = run_with_batcher(keys, body)

    assert result.results[0].created
    # The cancelled request's event was already handed over: it is written (the source's retry finds it).
    assert queued_messages(redis, keys) == 2
