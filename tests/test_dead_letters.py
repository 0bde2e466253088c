"""A grant whose message Dramatiq gives up on (unexpected exceptions) ends ``dead``, visible and replayable."""

from __future__ import annotations

from collections.abc import Callable

from dramatiq.brokers.redis import RedisBroker

from config.settings import Settings
from producers.submit import submit_grant
from tests.conftest import GUILD, USER, CapturingTransport, RunningWorker, wait_for
from worker.broker import build_broker
from worker.ledger import GrantItem, GrantState, Ledger, NewGrant


def test_exhausted_unexpected_failures_mark_the_grant_dead_once(
    settings: Settings, ledger: Ledger, workers: Callable[..., RunningWorker], sentry_events: CapturingTransport
) -> None:
    calls: list[str] = []

    def broken(grant_id: str) -> None:
        calls.append(grant_id)
        raise RuntimeError("boom: a bug in the worker")

    broker: RedisBroker = build_broker(settings)
    try:
        new = NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="test:broken")
        grant = submit_grant(ledger, broker, new).grant
    finally:
        broker.close()
    workers(settings, handler=broken, max_retries=1)

    wait_for(lambda: ledger.get(grant.id).state == GrantState.DEAD, timeout_s=15)  # type: ignore[union-attr]
    dead = ledger.get(grant.id)
    assert dead is not None
    assert "failed unexpectedly 2 times" in dead.last_error
    assert "RuntimeError: boom" in dead.last_error
    assert len(calls) == 2
    assert [g.id for g in ledger.list_grants(GrantState.DEAD)] == [grant.id]
    final = [e for e in sentry_events.events if e.get("tags", {}).get("kind") == "grant_final"]
    assert len(final) == 1 and final[0]["tags"]["grant_id"] == grant.id
