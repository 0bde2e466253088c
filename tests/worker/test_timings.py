"""The deliverer waits, holds and retries as the ``Timings`` it is built with say, not the production ones."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from tests.conftest import GUILD, USER, DelivererFactory, SettingsFactory
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.timings import DEFAULT_TIMINGS, Timings


@pytest.mark.parametrize("timings", [DEFAULT_TIMINGS, Timings(lease_margin_s=0.5)], ids=["default", "short"])
def test_the_send_lease_is_the_timeout_plus_the_given_margin(
    timings: Timings,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    redis: Redis,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(wetbot_timeout_s=1.0)
    deliverer = make_deliverer(settings, timings)
    grant_id = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t")).grant.id
    client = deliverer.clients.for_guild(GUILD)
    assert client is not None
    real_add = client.add_items
    seen_ms: list[int] = []

    def add(*args: Any) -> Any:
        seen_ms.append(int(redis.pttl(keys.lease(GUILD, USER))))  # type: ignore[arg-type]
        return real_add(*args)

    monkeypatch.setattr(client, "add_items", add)
    deliverer.deliver(grant_id)
    lease_ms = (settings.wetbot_timeout_s + timings.lease_margin_s) * 1000
    assert len(seen_ms) == 1 and lease_ms - 1000 < seen_ms[0] <= lease_ms
    done = ledger.get(grant_id)
    assert done is not None and done.state == GrantState.DELIVERED
