"""Identity links and parked grants: a grant for an unlinked user waits, and is queued once when the link appears."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.redis import RedisBroker
from fastapi.testclient import TestClient
from redis import Redis

from config.settings import Settings
from producers.links import LinkStore, SelfLink
from producers.submit import link_and_release, submit_for_identity
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, TEST_REDIS_URL, TOKEN, USER, RunningWorker, wait_for
from tests.schedule_view import due_ids
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main
from worker.broker import build_broker
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TWITCH_ID = "1337"
OTHER = "333333333333333333"


def twitch_grant(key: str) -> NewGrant:
    return NewGrant(
        GUILD,
        "",
        (GrantItem("gem", 1),),
        source="twitch",
        idempotency_key=f"twitch:{key}",
        platform="twitch",
        external_id=TWITCH_ID,
    )


@pytest.fixture
def links(redis: Redis, keys: Keys) -> LinkStore:
    return LinkStore(redis, keys, {"twitch": {"42": "444444444444444444"}})


@pytest.fixture
def broker(settings: Settings) -> Iterator[RedisBroker]:
    made = build_broker(settings)
    yield made
    made.close()


def queue_length(redis: Redis, keys: Keys) -> int:
    """Grants due now on the ledger's schedule: a worker's reconciler dispatches each within a second."""
    return len(due_ids(redis, keys))


def test_unlinked_grants_park_and_a_link_queues_each_exactly_once(
    ledger: Ledger, links: LinkStore, broker: RedisBroker, redis: Redis, keys: Keys
) -> None:
    parked = [submit_for_identity(ledger, links, twitch_grant(f"m{i}")).grant for i in range(3)]
    assert all(g.state == GrantState.PARKED and g.user_id == "" for g in parked)
    assert queue_length(redis, keys) == 0
    # A redelivered event does not park a fourth grant.
    assert not submit_for_identity(ledger, links, twitch_grant("m0")).created

    released = link_and_release(ledger, links, "twitch", TWITCH_ID, USER)
    assert sorted(released) == sorted(g.id for g in parked)
    assert queue_length(redis, keys) == 3
    for grant in parked:
        now = ledger.get(grant.id)
        assert now is not None and now.state == GrantState.QUEUED and now.user_id == USER
        assert "linked to Discord user" in ledger.history(grant.id)[-1].reason
    # Linking again (or re-linking) releases nothing twice.
    assert link_and_release(ledger, links, "twitch", TWITCH_ID, USER) == []
    assert queue_length(redis, keys) == 3

    # Once linked, new grants go straight to the queue.
    direct = submit_for_identity(ledger, links, twitch_grant("m9")).grant
    assert direct.state == GrantState.QUEUED and direct.user_id == USER


def test_static_links_from_the_rewards_file_resolve(ledger: Ledger, links: LinkStore, broker: RedisBroker) -> None:
    new = NewGrant(
        GUILD,
        "",
        (GrantItem("gem", 1),),
        source="twitch",
        idempotency_key="twitch:s",
        platform="twitch",
        external_id="42",
    )
    assert submit_for_identity(ledger, links, new).grant.user_id == "444444444444444444"
    links.add("twitch", "42", USER)  # a run-time link wins over the file
    assert links.resolve("twitch", "42") == USER


def test_concurrent_links_release_each_parked_grant_once(
    ledger: Ledger, links: LinkStore, broker: RedisBroker, redis: Redis, keys: Keys
) -> None:
    for i in range(20):
        submit_for_identity(ledger, links, twitch_grant(f"c{i}"))
    results: list[list[str]] = []

    def link() -> None:
        results.append(link_and_release(ledger, links, "twitch", TWITCH_ID, USER))

    threads = [threading.Thread(target=link) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    released = [grant_id for batch in results for grant_id in batch]
    assert len(released) == len(set(released)) == 20
    assert queue_length(redis, keys) == 20


def test_a_link_via_the_api_delivers_three_parked_grants_exactly_once(
    settings: Settings,
    ledger: Ledger,
    links: LinkStore,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
    broker: RedisBroker,
) -> None:
    for i in range(3):
        submit_for_identity(ledger, links, twitch_grant(f"api{i}"))
    workers(settings)
    with TestClient(create_app(settings)) as client:
        bad = client.post(
            "/links", json={"platform": "twitch", "external_id": TWITCH_ID, "discord_user_id": "1"}, headers=AUTH
        )
        assert bad.status_code == 422
        assert (
            client.post(
                "/links", json={"platform": "twitch", "external_id": TWITCH_ID, "discord_user_id": USER}
            ).status_code
            == 401
        )
        response = client.post(
            "/links", json={"platform": "twitch", "external_id": TWITCH_ID, "discord_user_id": USER}, headers=AUTH
        )
        assert response.status_code == 201 and len(response.json()["released"]) == 3
        again = client.post(
            "/links", json={"platform": "twitch", "external_id": TWITCH_ID, "discord_user_id": USER}, headers=AUTH
        )
        assert again.status_code == 201 and again.json()["released"] == []
        wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED)) == 3, timeout_s=15)
        assert [c.items for c in sim.applied()] == [(("gem", 3.0),)], "one merged request for the three"
        assert sim.inventory(GUILD, USER) == {"gem": 3}
        listed = client.get("/links/twitch", headers=AUTH).json()["links"]
        assert {"external_id": TWITCH_ID, "discord_user_id": USER, "origin": "runtime"} in listed
        assert client.delete(f"/links/twitch/{TWITCH_ID}", headers=AUTH).status_code == 204
        assert client.delete(f"/links/twitch/{TWITCH_ID}", headers=AUTH).status_code == 404


def test_links_cli(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefix: str,
    rewards_file: Path,
    ledger: Ledger,
    links: LinkStore,
    broker: RedisBroker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    monkeypatch.setenv("REWARDS_FILE", str(rewards_file))
    submit_for_identity(ledger, links, twitch_grant("cli"))
    assert main(["links", "add", "twitch", TWITCH_ID, USER]) == 0
    assert "1 parked grant(s) queued" in capsys.readouterr().out
    assert main(["links", "list", "twitch"]) == 0
    assert f"{TWITCH_ID} -> {USER}  (runtime)" in capsys.readouterr().out
    assert main(["links", "add", "twitch", TWITCH_ID, "12"]) == 1
    assert "discord_user_id" in capsys.readouterr().err
    assert main(["links", "remove", "twitch", TWITCH_ID]) == 0
    assert main(["links", "remove", "twitch", TWITCH_ID]) == 1


def test_self_made_links_are_listed_as_such_and_the_cli_moves_them(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefix: str,
    rewards_file: Path,
    links: LinkStore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    monkeypatch.setenv("REWARDS_FILE", str(rewards_file))
    assert links.add_self("twitch", TWITCH_ID, OTHER, max_accounts=1) is SelfLink.LINKED
    assert links.add_self("twitch", TWITCH_ID, USER, max_accounts=1) is SelfLink.SELF_MADE
    assert links.add_self("twitch", "42", OTHER, max_accounts=5) is SelfLink.STATIC  # the fixture's static link
    assert main(["links", "list", "twitch"]) == 0
    assert f"{TWITCH_ID} -> {OTHER}  (self)" in capsys.readouterr().out
    assert main(["links", "add", "twitch", TWITCH_ID, USER]) == 0
    assert main(["links", "add", "twitch", TWITCH_ID, USER]) == 0  # safe to run twice
    assert main(["links", "list", "twitch"]) == 0
    assert f"{TWITCH_ID} -> {USER}  (runtime)" in capsys.readouterr().out
    assert links.add_self("twitch", "7", OTHER, max_accounts=1) is SelfLink.LINKED  # OTHER's one link moved away


def test_a_resent_self_link_script_is_no_refusal_and_counts_once(redis: Redis, keys: Keys) -> None:
    """redis-py resends an EVALSHA whose reply was lost: the second run must not turn the link into a refusal."""
    store = LinkStore(redis, keys)
    script = store._script
    replies: list[Any] = []

    def twice(**kwargs: Any) -> Any:
        replies.append(script(**kwargs))
        return script(**kwargs)

    store._script = twice  # type: ignore[assignment]
    assert store.add_self("twitch", "9", OTHER, max_accounts=1) is SelfLink.ALREADY
    assert replies == [b"linked"] and redis.smembers(keys.self_links("twitch", OTHER)) == {b"9"}
    assert store.resolve("twitch", "9") == OTHER
