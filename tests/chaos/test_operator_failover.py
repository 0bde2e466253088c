"""Operator actions across a Sentinel failover: what answered "done" stays done.

A Sentinel group of the test's own (a primary, one or two replicas, one sentinel: Debian's ``redis-server``), the web
app pointed at it with ``REDIS_WAIT_REPLICAS=1``, and grants waiting for an operator: queued ones to cancel
(through the API and the console), a dead one to replay, an unknown one to resolve, a parked one whose
Twitch user an operator links. The app has been used, so its pool holds connections to the primary. Then
``SENTINEL FAILOVER`` promotes the replica, and the operator acts at once: the old primary still takes
writes on the connections it has until the sentinel turns it into a replica (about ten seconds), and then
drops them. After that every action that answered "done" must still be done on the new primary; the ones
that answered "could not be confirmed" (503) are repeated until done, and must then be done once.

Before replica confirmation of operator actions, every action answered "done" on the old primary and was
lost: the cancelled grants were queued again (and sent, with a worker running).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from redis.exceptions import RedisError

from config.settings import Settings, load_settings
from devtools.chaos.sentinel import MASTER_NAME, SentinelGroup
from devtools.chaos.servers import wait_until
from tests.conftest import API_KEY, GUILD, TOKEN, USER
from wetbot_rewards.app import create_app
from worker.creation import Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for a private Sentinel group"),
]

PREFIX = "opfail"
ADMIN = "failover-admin-token-5c2e91d7"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
AS_CLIENT = {"Authorization": f"Bearer {TOKEN}"}
TWITCH_USER = "90210"
#: Queued grants cancelled through the API.
API_CANCELS = 4
#: How long the operator keeps repeating an action that could not be confirmed.
REPEAT_FOR_S = 40.0


@dataclass
class Arranged:
    """The grants waiting for the operator, by what the operator does to them."""

    cancel: list[str]
    console_cancel: str
    replay: str
    resolve: str
    parked: str


@pytest.fixture(params=[1, 2], ids=["1-replica", "2-replicas"])
def group(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SentinelGroup]:
    """One replica (the new primary has none until the old one rejoins: nothing confirms for ~10 s) or two
    (the sentinel points the other one at the new primary at once: actions there are confirmed soon)."""
    with SentinelGroup(tmp_path / "sentinel", replicas=request.param) as sentinel_group:
        yield sentinel_group


def settings_for(group: SentinelGroup, rewards_file: Path) -> Settings:
    return load_settings(
        _env_file=None,
        redis_url="redis://sentinel-managed/0",
        redis_sentinels=group.sentinels,
        redis_sentinel_master=MASTER_NAME,
        redis_wait_replicas=1,
        redis_wait_timeout_s=0.5,
        redis_key_prefix=PREFIX,
        wetbot_api_url="http://127.0.0.1:9",
        wetbot_api_key=API_KEY,
        rewards_file=rewards_file,
        grants_api_token=TOKEN,
        admin_token=ADMIN,
    )


def new(key: str, **fields: Any) -> NewGrant:
    values: dict[str, Any] = {"guild_id": GUILD, "user_id": USER, "items": (GrantItem("gem", 1),)}
    values.update(fields)
    return NewGrant(source="test", idempotency_key=f"opfail:{key}", **values)


def arrange(group: SentinelGroup) -> Arranged:
    """The grants, written on the primary and confirmed by its replicas before the failover."""
    ledger = Ledger(group.client(), Keys(PREFIX))
    cancel = [ledger.create(new(f"cancel-{n}")).grant.id for n in range(API_CANCELS)]
    console_cancel = ledger.create(new("console-cancel")).grant.id
    replay = ledger.create(new("replay")).grant.id
    assert ledger.transition(replay, GrantState.DEAD, "arranged: dead")
    resolve = ledger.create(new("resolve")).grant.id
    assert ledger.transition(resolve, GrantState.SENDING, "arranged: sent")
    assert ledger.transition(resolve, GrantState.UNKNOWN, "arranged: outcome unknown")
    parked_grant = new("parked", user_id="", platform="twitch", external_id=TWITCH_USER)
    parked = ledger.create_many([Planned(parked_grant, Mode.RESOLVE, "")]).results[0].grant.id
    assert ledger.get(parked).state == GrantState.PARKED  # type: ignore[union-attr]
    assert group.synced()  # the arrangement must survive the failover, whichever replica is promoted
    return Arranged(cancel, console_cancel, replay, resolve, parked)


def console_form(client: TestClient, grant_id: str) -> dict[str, str]:
    page = client.get(f"/console/grants/{grant_id}").text
    return {name: re.search(rf'name="{name}" value="([^"]+)"', page)[1] for name in ("csrf", "version")}  # type: ignore[index]


def log_in(client: TestClient) -> None:
    page = client.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]  # type: ignore[index]
    answer = client.post("/console/login", data={"csrf": csrf, "token": ADMIN}, follow_redirects=False)
    assert answer.status_code == 303


def api_done(answer: Any) -> bool:
    """An API action answered "done" (2xx, or 409 "done already" for a repeat whose first try stood);
    503 is "could not be confirmed"; anything else is a bug here."""
    if answer.status_code == 409:
        assert " already" in answer.json()["error"], answer.text
        return True
    status: int = answer.status_code
    assert status in (200, 201, 503), answer.text
    if status == 503:
        assert "could not be confirmed" in answer.json()["error"], answer.text
    return status < 300


def console_done(client: TestClient, grant_id: str, form: dict[str, str]) -> bool:
    """The console's cancel answered "cancelled" (303 and the flash says so), or a "not confirmed" page."""
    answer = client.post(f"/console/grants/{grant_id}/cancel", data={**form, "reason": "fraud"}, follow_redirects=False)
    if answer.status_code == 503:
        assert "could not be confirmed" in answer.text, answer.text
        return False
    assert answer.status_code == 303, answer.text
    page = client.get(answer.headers["location"]).text
    return "cancelled: it will not be sent" in page or "already cancelled" in page


def actions(client: TestClient, arranged: Arranged, form: dict[str, str]) -> dict[str, Callable[[], bool]]:
    """Each operator action by name; each answers whether it said "done"."""
    out: dict[str, Callable[[], bool]] = {}
    for grant_id in arranged.cancel:
        out[f"cancel {grant_id}"] = lambda g=grant_id: api_done(  # type: ignore[misc]
            client.post(f"/admin/grants/{g}/cancel", json={"reason": "fraud"}, headers=AS_ADMIN)
        )
    out["console cancel"] = lambda: console_done(client, arranged.console_cancel, form)
    out["replay"] = lambda: api_done(client.post(f"/admin/grants/{arranged.replay}/replay", headers=AS_ADMIN))
    out["resolve"] = lambda: api_done(
        client.post(f"/admin/grants/{arranged.resolve}/resolve", json={"decision": "delivered"}, headers=AS_ADMIN)
    )
    link = {"platform": "twitch", "external_id": TWITCH_USER, "discord_user_id": USER}
    out["link"] = lambda: api_done(client.post("/links", json=link, headers=AS_CLIENT))
    return out


def expected(arranged: Arranged) -> dict[str, Callable[[Ledger], bool]]:
    """What each action leaves on the primary once it is done."""

    def state_is(grant_id: str, state: GrantState) -> Callable[[Ledger], bool]:
        return lambda ledger: ledger.get(grant_id).state == state  # type: ignore[union-attr]

    out = {f"cancel {g}": state_is(g, GrantState.CANCELLED) for g in arranged.cancel}
    out["console cancel"] = state_is(arranged.console_cancel, GrantState.CANCELLED)
    out["replay"] = state_is(arranged.replay, GrantState.QUEUED)
    out["resolve"] = state_is(arranged.resolve, GrantState.DELIVERED)

    def linked(ledger: Ledger) -> bool:
        link = cast(bytes | None, ledger.redis.hget(Keys(PREFIX).links("twitch"), TWITCH_USER))
        return link == USER.encode() and state_is(arranged.parked, GrantState.QUEUED)(ledger)

    out["link"] = linked
    return out


def wait_demoted(group: SentinelGroup, old_port: int) -> None:
    """Until the old primary is a replica of the new one, in sync: what it took after the failover is gone."""
    old = group.node(old_port).client()

    def demoted() -> bool:
        try:
            info = cast(dict[str, Any], old.info("replication"))
        except RedisError:
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    try:
        wait_until(demoted, timeout_s=45, interval_s=0.2, what="the old primary demoted and in sync")
    finally:
        old.close()


def history_count(ledger: Ledger, grant_id: str, reason_start: str) -> int:
    return sum(1 for t in ledger.history(grant_id) if t.reason.startswith(reason_start))


def test_an_operator_action_that_answered_done_stays_done_across_a_failover(
    group: SentinelGroup, rewards_file: Path
) -> None:
    arranged = arrange(group)
    with TestClient(create_app(settings_for(group, rewards_file))) as client:
        log_in(client)
        form = console_form(client, arranged.console_cancel)
        assert client.get("/admin/grants?limit=5", headers=AS_ADMIN).status_code == 200  # the pool is in use
        assert group.synced()  # the session is on the replicas too
        old_port, _ = group.failover()

        todo = actions(client, arranged, form)
        answered_done = {name: act() for name, act in todo.items()}

        wait_demoted(group, old_port)
        ledger = Ledger(group.client(), Keys(PREFIX))
        checks = expected(arranged)
        lost = [name for name, done in answered_done.items() if done and not checks[name](ledger)]
        assert not lost, f"answered done, then lost in the failover: {lost} (answers: {answered_done})"

        # What could not be confirmed is repeated until it is done; a repeat is safe.
        deadline = time.monotonic() + REPEAT_FOR_S
        pending = [name for name, done in answered_done.items() if not done]
        while pending and time.monotonic() < deadline:
            pending = [name for name in pending if not todo[name]()]
            time.sleep(0.2)
        assert not pending, f"still not confirmed after {REPEAT_FOR_S}s: {pending}"

    ledger = Ledger(group.client(), Keys(PREFIX))
    assert all(check(ledger) for check in checks.values()), {name: check(ledger) for name, check in checks.items()}
    assert history_count(ledger, arranged.replay, "replayed by an operator") == 1
    assert history_count(ledger, arranged.resolve, "resolved by an operator") == 1
    for grant_id in [*arranged.cancel, arranged.console_cancel]:
        assert history_count(ledger, grant_id, "cancelled by an operator") == 1
