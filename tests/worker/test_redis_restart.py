"""Redis restarts (with the append-only file, as docker-compose runs it) lose no grant."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import pytest
from redis import Redis

from devtools.chaos.servers import PrivateRedis
from producers.submit import submit_grant
from simulator.wetbot import WetbotSimulator
from tests.baselines import methods
from tests.conftest import GUILD, RunningWorker, SettingsFactory, wait_for
from worker.broker import build_broker
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to start a private Redis"),
]


def test_grants_survive_a_redis_crash_and_restart(
    private_redis: PrivateRedis,
    make_settings: SettingsFactory,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
) -> None:
    settings = make_settings(redis_url=private_redis.url, redis_key_prefix="wbr")
    redis = Redis.from_url(private_redis.url)
    ledger = Ledger(redis, Keys("wbr"))
    broker = build_broker(settings)

    def grant(user: str) -> str:
        new = NewGrant(GUILD, user, (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{user}")
        return submit_grant(ledger, new).grant.id

    before = [grant(str(500000000000000000 + n)) for n in range(3)]
    private_redis.kill()
    private_redis.start()
    workers(settings)
    wait_for(lambda: all(ledger.get(g).state == GrantState.DELIVERED for g in before), timeout_s=20)  # type: ignore[union-attr]

    # And while a worker is running: Redis goes away and comes back, the worker carries on.
    private_redis.kill()
    time.sleep(1.0)
    private_redis.start()
    after = grant("600000000000000000")
    wait_for(lambda: ledger.get(after).state == GrantState.DELIVERED, timeout_s=30)  # type: ignore[union-attr]
    assert len(sim.applied()) == 4
    broker.close()
    redis.close()


@pytest.mark.parametrize("policy", ["hold", "retry", "verify"])
def test_an_answer_received_during_a_redis_write_pause_is_recorded_once(
    policy: str, private_redis: PrivateRedis, make_settings: SettingsFactory, sim: WetbotSimulator
) -> None:
    """As in a failover: the 200 is back while Redis refuses writes (CLIENT PAUSE WRITE) for longer than a
    command timeout. The outcome is recorded in place once Redis accepts writes again: no resend, no
    ``unknown``."""
    import threading

    from worker.connections import connect_redis
    from worker.runtime import build_deliverer

    settings = make_settings(redis_url=private_redis.url, redis_key_prefix="wbr", ambiguous_policy=policy)
    redis = connect_redis(settings)
    ledger = Ledger(redis, Keys("wbr"))
    new = NewGrant(GUILD, "700000000000000001", (GrantItem("gem", 1),), source="test", idempotency_key="t:pause")
    grant_id = ledger.create(new).grant.id
    sim.inject("slow_after", delay_s=1.0, method="POST")  # applied at once, answered a second later
    admin = Redis.from_url(private_redis.url)
    pauser = threading.Timer(0.4, lambda: admin.client_pause(7000, all=False))
    pauser.start()
    started = time.monotonic()
    build_deliverer(settings, redis).deliver(grant_id)
    pauser.join()
    took = time.monotonic() - started
    done = ledger.get(grant_id)
    assert done is not None and done.state == GrantState.DELIVERED, ledger.history(grant_id)
    assert done.attempts == 1 and done.failures == 0
    # Sent once (after its baseline read, except under retry, which reads none).
    assert len(sim.applied()) == 1 and methods(sim) == (["POST"] if policy == "retry" else ["GET", "POST"])
    assert took > 7.0, "the step waited for the pause to end"
    assert not any("worker stopped" in t.reason for t in ledger.history(grant_id))
    admin.close()
    redis.close()
