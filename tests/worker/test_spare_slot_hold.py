"""The spare slot a baseline read gives the request is held pending for ``_slot_hold_s``
(claim lease + timeout + margin) from *before the GET*. But the run may spend up to the extended lease
(timeout + margin) on the GET, then up to the send lease before its POST reaches WetBot: a POST that arrives
within what the leases promise can arrive after its slot's pending deadline. If its answer is never recorded
(the worker dies), the slot leaves the window before WetBot stops counting the POST, and the limiter lets a
full window in: WetBot answers 429."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis import Redis

from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, SettingsFactory
from worker.grant import GrantItem, NewGrant
from worker.runtime import build_deliverer
from worker.timings import Timings

LIMIT, WINDOW_S = 10, 2.0


class Killed(BaseException):
    """The worker process dies with its POST out (no outcome recorded)."""


@pytest.mark.parametrize("get_delay", ["slow_get", "control_fast_get"])
def test_spare_slot_hold_does_not_cover_a_post_sent_within_its_leases(
    get_delay: str,
    make_settings: SettingsFactory,
    sim: WetbotSimulator,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Short leases so the test runs in seconds (the same proportions as 10 s margin, 15 s timeout).
    timings = Timings(lease_margin_s=1.0)
    sim.set_limit(LIMIT, WINDOW_S)
    settings = make_settings(wetbot_timeout_s=0.3, wetbot_rate_limit=f"{LIMIT}/{WINDOW_S:g}s")
    deliverer = build_deliverer(settings, redis, timings=timings)
    lease_s = settings.wetbot_timeout_s + timings.lease_margin_s  # 1.3 s: the GET's lease, then the POST's
    grant_id = deliverer.ledger.create(
        NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:x")
    ).grant.id
    client = deliverer.clients.for_guild(GUILD)
    assert client is not None
    real_get, real_add = client.get_profile, client.add_items

    def slow_get(*args: Any) -> Any:
        result = real_get(*args)
        if get_delay == "slow_get":
            time.sleep(lease_s - 0.2)  # a slow answer, within the GET's lease
        return result

    def late_post(*args: Any) -> Any:
        time.sleep(lease_s - 0.2)  # starved between the step into sending and the send, within its lease
        real_add(*args)
        raise Killed

    monkeypatch.setattr(client, "get_profile", slow_get)
    monkeypatch.setattr(client, "add_items", late_post)
    with pytest.raises(Killed):
        deliverer.deliver(grant_id)
    post_at = time.monotonic()
    monkeypatch.setattr(client, "get_profile", real_get)

    # Within a WetBot window of the POST's arrival, take and use every slot our limiter grants.
    time.sleep(WINDOW_S * 0.8)
    sent = 0
    while time.monotonic() - post_at < WINDOW_S - 0.1:
        decision = deliverer.limiter.try_acquire(client.key_id)
        if not decision.granted:
            break
        real_get(GUILD, f"3333333333333333{sent:02d}")
        sent += 1
    assert sim.count_status(429) == 0, f"our limiter granted {sent} slots while WetBot still counted the POST"
