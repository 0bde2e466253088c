"""Backpressure: a backlog of any size drains at its key's pace, with a bounded queue (``worker.schedule``).

The end-to-end test runs a real worker against the simulator. It shortens ``DISPATCH_TTL_S`` so that a few
thousand grants are already more than the queue can hand out within it (the livelock of 20,000 grants at the
real 20 s, in a test's time), and asserts what a loaded machine cannot break: runs per delivered grant, the
queue's length, and a generous share of the key's rate. ``bench/backlog.py`` measures the real figures.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import pytest
from redis import Redis

import worker.creation
import worker.schedule
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, Handler, RunningWorker, SettingsFactory
from worker.broker import QUEUE_NAME
from worker.creation import Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SAFETY_MARGIN_FRACTION, SAFETY_MARGIN_S


def member(index: int) -> str:
    """A Discord user id of its own for each index (one lease each, no coalescing)."""
    return str(700_000_000_000_000_000 + index)


def new(index: int, *, guild: str = GUILD) -> NewGrant:
    return NewGrant(guild, member(index), (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{guild}:{index}")


def seed(ledger: Ledger, count: int, *, batch: int = 500) -> None:
    """``count`` grants of distinct members, queued as producers queue them (``Mode.ENQUEUE``)."""
    for start in range(0, count, batch):
        ledger.create_many([Planned(new(n), Mode.ENQUEUE) for n in range(start, min(start + batch, count))])


def queue_length(redis: Redis, keys: Keys) -> int:
    """Message ids in the grants queue plus encoded messages kept for them (read, unacked ones included)."""
    queue = f"{keys.dramatiq_namespace}:{QUEUE_NAME}"
    return int(cast(int, redis.llen(queue))) + int(cast(int, redis.hlen(f"{queue}.msgs")))


@contextmanager
def peak_queue(redis: Redis, keys: Keys) -> Iterator[list[int]]:
    """Samples ``queue_length`` every 50 ms while the block runs; yields a one-element list holding the peak."""
    peak = [queue_length(redis, keys)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], queue_length(redis, keys))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


class RunCounter:
    """Wraps the deliverer's ``deliver`` and counts its runs (every message a worker thread handled)."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self.runs = 0

    def wrap(self, handler: Handler) -> Handler:
        def counted(grant_id: str, token: str) -> None:
            self.runs = next(self._count) + 1
            handler(grant_id, token)

        return counted


def test_a_backlog_larger_than_the_queue_can_hand_out_in_a_dispatch_ttl_drains_at_the_keys_pace(
    make_settings: SettingsFactory,
    redis: Redis,
    keys: Keys,
    ledger: Ledger,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit, window_s, grants, measure_s = 50, 1.0, 3000, 10.0
    monkeypatch.setattr(worker.schedule, "DISPATCH_TTL_S", 2.0)
    monkeypatch.setattr(worker.creation, "DISPATCH_TTL_S", 2.0)
    sim.set_limit(limit, window_s)
    settings = make_settings(wetbot_rate_limit=f"{limit}/{window_s:g}s")
    seed(ledger, grants)
    counter = RunCounter()
    with peak_queue(redis, keys) as peak:
        workers(settings, wrap=counter.wrap)
        started = time.monotonic()
        time.sleep(measure_s)
        delivered = ledger.counts()[GrantState.DELIVERED]
        elapsed = time.monotonic() - started
        runs = counter.runs
    key_rate = limit / (window_s + SAFETY_MARGIN_S + SAFETY_MARGIN_FRACTION * window_s)
    print(
        f"{delivered} delivered in {elapsed:.1f}s ({delivered / elapsed:.1f}/s, key {key_rate:.1f}/s), "
        f"{runs} runs ({runs / max(delivered, 1):.2f} per delivered grant), peak queue {peak[0]}"
    )
    assert sim.count_status(429) == 0
    assert runs <= 3 * max(delivered, 1), "every grant's message was read about once, not once per stale copy"
    assert peak[0] <= 500, "messages in flight are bounded by what the key and the workers can use"
    assert delivered >= 0.4 * key_rate * elapsed, "the backlog drains at (a generous share of) the key's rate"
