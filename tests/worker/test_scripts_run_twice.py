"""Every script is safe to run twice: redis-py resends an EVALSHA whose first run went through when its
reply is lost to a timeout or a dropped connection. Modelled by running the script twice; the caller sees
the second reply.

* The step into ``sending`` is guarded by the run's token (``StepEffects.begin``): the resent step answers
  "already done" and the request is sent, once, with no read-back, resend or failure.
* ``sliding_window.lua`` finds its own slot when resent: the slot is not spent twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from config.keyring import key_fingerprint
from config.settings import RateLimit
from simulator.wetbot import WetbotSimulator
from tests.conftest import API_KEY, GUILD, USER, DelivererFactory, ScheduleDriver, SettingsFactory
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter


def run_twice(
    script: Callable[..., Any], only: Callable[[dict[str, Any]], bool] = lambda _r: True
) -> Callable[..., Any]:
    def wrapped(**kwargs: Any) -> Any:
        first = script(**kwargs)
        try:
            request = json.loads(kwargs["args"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            request = {}
        if not only(request):
            return first
        return script(**kwargs)  # the reply the caller sees: the resent EVALSHA's

    return wrapped


@pytest.mark.parametrize("policy", ["hold", "verify", "retry"])
def test_a_resent_step_into_sending_still_sends_once(
    policy: str,
    make_settings: SettingsFactory,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5, ambiguous_policy=policy))
    grant_id = ledger.create(
        NewGrant(GUILD, USER, (GrantItem("gem", 2),), source="test", idempotency_key="t:x")
    ).grant.id
    real = deliverer.ledger._transition
    calls = {"n": 0}

    def first_sending_only(request: dict[str, Any]) -> bool:
        if request.get("to") == "sending" and calls["n"] == 0:
            calls["n"] += 1
            return True
        return False

    object.__setattr__(deliverer.ledger, "_transition", run_twice(real, first_sending_only))
    deliverer.deliver(grant_id)
    driver.run(deliverer, timeout_s=60)

    done = ledger.get(grant_id)
    assert done is not None
    requests = [(r.method, r.status) for r in sim.requests()]
    assert done.state == GrantState.DELIVERED, (requests, [t.reason for t in ledger.history(grant_id)])
    assert done.failures == 0 and done.possible_duplicates == 0, [t.reason for t in ledger.history(grant_id)]
    # One request (after its baseline read; none under retry): a resent script must not cost a read-back
    # or a resend.
    baseline = [] if policy == "retry" else [("GET", 200)]
    assert requests == [*baseline, ("POST", 200)], "one request: a resent script must not cost a read-back or a resend"


def test_a_resent_slot_script_keeps_its_slot(redis: Any, keys: Keys) -> None:
    limiter = SlidingWindowLimiter(redis, keys, RateLimit(limit=10, window_s=60.0))
    key_id = key_fingerprint(API_KEY)
    for _ in range(9):
        assert limiter.try_acquire(key_id).granted
    object.__setattr__(limiter, "_script", run_twice(limiter._script))
    decision = limiter.try_acquire(key_id)
    taken = redis.zcard(keys.rate_window(key_id))
    # Either the slot was granted to us, or it was not taken at all.
    assert decision.granted or taken == 9, (decision, taken)
