"""End to end in one process: the real app (ASGI), a real Dramatiq worker, real Redis, the simulator over HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from producers.counters import count_event
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, OTHER_USER, TOKEN, USER, CapturingTransport, RunningWorker, SettingsFactory, wait_for
from wetbot_rewards.app import create_app
from worker.grant import GrantState
from worker.ledger import Ledger
from worker.profile import Inventory, parse_inventory

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Workers = Callable[..., RunningWorker]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def post_grant(client: TestClient, **body: Any) -> Any:
    payload = {"user_id": USER, "items": [{"item_id": "gem", "amount": 5}], **body}
    return client.post("/grants", json=payload, headers=AUTH)


def test_a_posted_grant_is_delivered_and_its_profile_recorded(
    client: TestClient, settings: Settings, workers: Workers, ledger: Ledger, sim: WetbotSimulator
) -> None:
    response = post_grant(client, reason="launch party", idempotency_key="order-1")
    assert response.status_code == 202
    grant_id = response.json()["id"]
    assert response.json()["state"] == "queued"
    workers(settings)

    wait_for(lambda: client.get(f"/grants/{grant_id}", headers=AUTH).json()["state"] == "delivered", timeout_s=10)
    body = client.get(f"/grants/{grant_id}", headers=AUTH).json()
    assert body["result"] == {"gem": 5.0}
    assert body["attempts"] == 1 and body["last_error"] is None
    assert body["guild_id"] == GUILD and body["reason"] == "launch party"
    assert [h["to"] for h in body["history"]] == ["queued", "sending", "delivered"]
    assert sim.inventory(GUILD, USER) == {"gem": 5}
    snapshot = ledger.get_profile(GUILD, USER)
    assert snapshot is not None and snapshot.profile is not None
    inventory = parse_inventory(snapshot.profile)
    assert isinstance(inventory, Inventory) and list(inventory.amounts) == ["gem"]


def test_the_same_idempotency_key_twice_delivers_once(
    client: TestClient, settings: Settings, workers: Workers, sim: WetbotSimulator
) -> None:
    first = post_grant(client, idempotency_key="dup-1")
    second = post_grant(client, idempotency_key="dup-1")
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    workers(settings)
    grant_id = first.json()["id"]
    wait_for(lambda: client.get(f"/grants/{grant_id}", headers=AUTH).json()["state"] == "delivered", timeout_s=10)
    third = post_grant(client, idempotency_key="dup-1")
    assert third.status_code == 200 and third.json()["state"] == "delivered"
    assert len(sim.applied()) == 1


def test_reusing_a_key_for_different_content_is_a_conflict(client: TestClient) -> None:
    assert post_grant(client, idempotency_key="k").status_code == 202
    clash = post_grant(client, idempotency_key="k", items=[{"item_id": "gem", "amount": 6}])
    assert clash.status_code == 409


def test_thirty_grants_through_two_workers_never_exceed_the_limit(
    client: TestClient,
    make_settings: SettingsFactory,
    workers: Workers,
    ledger: Ledger,
    sim: WetbotSimulator,
    sentry_events: CapturingTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.set_limit(10, 3.0)
    settings = make_settings(wetbot_rate_limit="10/3s", wetbot_max_attempts=1)
    ids = []
    for n in range(30):
        user = str(400000000000000000 + n)
        response = post_grant(client, user_id=user, idempotency_key=f"burst-{n}")
        assert response.status_code == 202
        ids.append(response.json()["id"])
    workers(settings, threads=4)
    workers(settings, threads=4)

    wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED, limit=100)) == 30, timeout_s=30)
    assert sim.count_status(429) == 0
    # Each grant sent once; the only other requests are baseline reads (spare slots), one per grant that had one.
    requests = sim.requests()
    assert sum(1 for r in requests if r.method == "POST") == 30
    delivered = [ledger.get(grant_id) for grant_id in ids]
    baselines = sum(1 for grant in delivered if grant is not None and grant.baseline_at is not None)
    assert sum(1 for r in requests if r.method == "GET") == baselines
    assert sim.max_in_window(3.0) == 10
    # Waiting for slots was silent: no error logged, nothing sent to Sentry.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sentry_events.events == []
    for grant_id in ids:
        grant = ledger.get(grant_id)
        assert grant is not None and grant.attempts == 1 and grant.failures == 0
        assert [t.to_state for t in ledger.history(grant_id)] == ["queued", "sending", "delivered"]


def test_invalid_input_is_422_naming_the_field(client: TestClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"user_id": "123"}, "user_id"),
        ({"items": []}, "items"),
        ({"items": [{"item_id": "gem", "amount": 1e9 + 1}]}, "items[0].amount"),
        ({"items": [{"item_id": "gem", "amount": 0}]}, "items[0].amount"),
        ({"items": [{"item_id": "gem", "amount": 1, "colour": "red"}]}, "items[0].colour"),
        ({"items": [{"item_id": "gem", "amount": 1}, {"item_id": "gem", "amount": 2}]}, "items"),
        ({"guild_id": "abc"}, "guild_id"),
    ]
    for override, field in cases:
        response = post_grant(client, **override)
        assert response.status_code == 422, override
        assert response.json()["error"].startswith(f"{field}:"), response.json()
    not_json = client.post("/grants", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert not_json.status_code == 422


def test_grants_api_needs_the_bearer_token(client: TestClient) -> None:
    body = {"user_id": USER, "items": [{"item_id": "gem", "amount": 1}]}
    assert client.post("/grants", json=body).status_code == 401
    assert client.post("/grants", json=body, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert client.post("/grants", json=body, headers={"Authorization": TOKEN}).status_code == 401


def test_no_configured_token_answers_503(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(grants_api_token=None))) as client:
        assert post_grant(client).status_code == 503


def test_missing_default_guild_is_422(make_settings: SettingsFactory, tmp_path: Any) -> None:
    empty = tmp_path / "none.toml"
    empty.write_text("", encoding="utf-8")
    with TestClient(create_app(make_settings(rewards_file=empty))) as client:
        response = post_grant(client)
        assert response.status_code == 422 and response.json()["error"].startswith("guild_id:")
        assert post_grant(client, guild_id=GUILD).status_code == 202


def test_redis_down_answers_503_and_readyz_says_so(make_settings: SettingsFactory) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        response = post_grant(client, idempotency_key="x")
        assert response.status_code == 503
        assert "nothing was queued" in response.json()["error"]
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_health_ready_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["redis"] == "ok"
    post_grant(client, user_id=OTHER_USER)
    text = client.get("/metrics").text
    assert 'wetbot_rewards_grants{state="queued"} 1' in text
    assert "wetbot_rewards_queue_messages 1" in text
    assert "wetbot_rewards_scheduled 1" in text
    assert "wetbot_rewards_schedule_lag_seconds 0.000" in text, "a new grant's message is claimed before it is due"
    count_event(client.app.state.wetbot.redis, client.app.state.wetbot.keys, "twitch.notification.ignored")  # type: ignore[attr-defined]
    assert 'wetbot_rewards_events_total{event="twitch.notification.ignored"} 1' in client.get("/metrics").text


def test_unknown_grant_is_404(client: TestClient) -> None:
    assert client.get("/grants/" + "0" * 32, headers=AUTH).status_code == 404
    assert client.get("/grants/not-an-id", headers=AUTH).status_code == 422
