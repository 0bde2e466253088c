"""Outcome steps are confirmed by replicas and retried in place while short of them. A
final step without an attempt guard (a takeover held unknown, ``_cannot_verify``) finds, on its retry, the
grant already moved by its first try (on the primary, just not confirmed yet): it answers "moved nothing",
so ``_finish`` never reports the unknown grant to Sentry."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GUILD, USER, CapturingTransport, DelivererFactory, SettingsFactory
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger
from worker.replication import NotReplicated


def _short_of_replicas_once(monkeypatch: pytest.MonkeyPatch, ledger: Ledger, to: GrantState) -> None:
    real = ledger.transition_many
    fired = {"done": False}

    def once(ids: Any, state: GrantState, *args: Any, **kwargs: Any) -> Any:
        reply = real(ids, state, *args, **kwargs)
        if state == to and kwargs.get("confirm") and not fired["done"]:
            fired["done"] = True  # the step is on the primary; WAIT came back short of the replicas
            raise NotReplicated("0 of 1 Redis replicas confirmed the write within 1000 ms", reply)
        return reply

    monkeypatch.setattr(ledger, "transition_many", once)


def test_abandoned_request_held_unknown_is_reported_even_when_the_first_try_was_unconfirmed(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    monkeypatch: pytest.MonkeyPatch,
    sentry_events: CapturingTransport,
) -> None:
    deliverer = make_deliverer(make_settings(ambiguous_policy="hold"))
    ledger = deliverer.ledger
    grant_id = ledger.create(
        NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:x")
    ).grant.id
    # A worker set it sending and died with its request out (no lease left).
    assert ledger.transition(grant_id, GrantState.SENDING, "sending to WetBot", expect=[GrantState.QUEUED])
    _short_of_replicas_once(monkeypatch, ledger, GrantState.UNKNOWN)
    deliverer.deliver(grant_id)

    assert ledger.get(grant_id).state == GrantState.UNKNOWN  # type: ignore[union-attr]
    finals = [e for e in sentry_events.events if "grant unknown" in str(e)]
    assert len(finals) == 1, "the grant went unknown without the Sentry alert operators rely on"


def test_control_abandoned_request_held_unknown_is_reported(
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    sentry_events: CapturingTransport,
) -> None:
    """The same without the shortfall: one alert (shows the check above is the right one)."""
    deliverer = make_deliverer(make_settings(ambiguous_policy="hold"))
    ledger = deliverer.ledger
    grant_id = ledger.create(
        NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:x")
    ).grant.id
    assert ledger.transition(grant_id, GrantState.SENDING, "sending to WetBot", expect=[GrantState.QUEUED])
    deliverer.deliver(grant_id)
    assert ledger.get(grant_id).state == GrantState.UNKNOWN  # type: ignore[union-attr]
    assert len([e for e in sentry_events.events if "grant unknown" in str(e)]) == 1
