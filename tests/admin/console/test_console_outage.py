"""Operator actions when Redis goes away: nothing half done, nothing done twice once it is back.

A private redis-server (append-only, fsync always) is killed while the console and the operator
API are used, and while a bulk replay is half-way through; after the restart the same forms and
calls are sent again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis import RedisError

from admin import grant_actions
from devtools.chaos.servers import PrivateRedis
from tests.admin.console.test_console_http import ADMIN, log_in
from tests.conftest import GUILD, USER, SettingsFactory, wait_for
from wetbot_rewards.app import create_app
from worker.creation import Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.grant_search import GrantQuery
from worker.keys import Keys
from worker.ledger import Ledger

PREFIX = "wbr"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def ledger_on_private(private_redis: PrivateRedis) -> Iterator[Ledger]:
    client = private_redis.client()
    yield Ledger(client, Keys(PREFIX))
    client.close()


def dead_grants(ledger: Ledger, n: int) -> list[str]:
    planned = [
        Planned(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="api", idempotency_key=f"api:d{i}"), Mode.SCHEDULE)
        for i in range(n)
    ]
    ids = [result.grant.id for result in ledger.create_many(planned).results]
    assert len(ledger.transition_many(ids, GrantState.DEAD, "WetBot refused the grant: HTTP 404")) == n
    return ids


def replays(ledger: Ledger, grant_id: str) -> int:
    return sum(1 for step in ledger.history(grant_id) if step.reason.startswith("replayed by an operator"))


def test_a_replay_sent_while_redis_is_down_does_nothing_and_works_once_when_it_is_back(
    private_redis: PrivateRedis, make_settings: SettingsFactory, ledger_on_private: Ledger
) -> None:
    settings = make_settings(redis_url=private_redis.url, redis_key_prefix=PREFIX, admin_token=ADMIN)
    [grant_id] = dead_grants(ledger_on_private, 1)
    with TestClient(create_app(settings)) as client:
        log_in(client)
        page = client.get(f"/console/grants/{grant_id}").text
        form = {name: re.search(rf'name="{name}" value="([^"]+)"', page)[1] for name in ("csrf", "version")}  # type: ignore[index]
        private_redis.kill()
        down = client.post(f"/console/grants/{grant_id}/replay", data=form, follow_redirects=False)
        assert down.status_code == 503 and "nothing was done" in down.text
        assert client.post(f"/grants/{grant_id}/replay", headers=AS_ADMIN).status_code == 503
        private_redis.start()
        assert ledger_on_private.get(grant_id).state == GrantState.DEAD  # type: ignore[union-attr]
        first = client.post(f"/console/grants/{grant_id}/replay", data=form)  # the same form, sent again
        assert "queued again" in first.text
        again = client.post(f"/console/grants/{grant_id}/replay", data=form)
        assert "Nothing done" in again.text
        assert client.post(f"/grants/{grant_id}/replay", headers=AS_ADMIN).status_code == 409
    assert replays(ledger_on_private, grant_id) == 1


def test_a_bulk_replay_cut_by_a_redis_crash_finishes_on_the_second_run_and_replays_each_grant_once(
    private_redis: PrivateRedis, ledger_on_private: Ledger
) -> None:
    ids = dead_grants(ledger_on_private, 600)
    up_to = time.time()
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(grant_actions.bulk_replay(ledger_on_private, GrantQuery(), up_to=up_to))
        except RedisError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    watcher = private_redis.client()
    worker.start()
    queued = Keys(PREFIX).state_index("queued")
    wait_for(lambda: bool(watcher.zcard(queued)), timeout_s=10, interval_s=0.005)
    private_redis.kill()  # half-way: some grants replayed, most not yet
    watcher.close()
    worker.join(timeout=30)
    private_redis.start()
    done_first = sum(replays(ledger_on_private, grant_id) for grant_id in ids)
    assert 0 < done_first < len(ids) and isinstance(outcome[0], RedisError), "the crash came half-way"
    assert all(replays(ledger_on_private, grant_id) <= 1 for grant_id in ids)
    second = grant_actions.bulk_replay(ledger_on_private, GrantQuery(), up_to=up_to)
    assert len(second.replayed) == len(ids) - done_first
    assert [replays(ledger_on_private, grant_id) for grant_id in ids] == [1] * len(ids)
    assert {ledger_on_private.get(g).state for g in ids} == {GrantState.QUEUED}  # type: ignore[union-attr]
    assert grant_actions.bulk_replay(ledger_on_private, GrantQuery(), up_to=up_to).replayed == ()
