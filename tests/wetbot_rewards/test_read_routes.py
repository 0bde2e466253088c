"""Read routes: grant data behind the bearer token, ``/metrics`` behind ``METRICS_TOKEN`` when set, docs off by
default; ``/metrics`` with a message on Dramatiq's delay queue."""

from __future__ import annotations

import dramatiq
import pytest
from fastapi.testclient import TestClient

from tests.conftest import TOKEN, USER, SettingsFactory
from wetbot_rewards.app import create_app
from worker.broker import ACTOR_NAME, QUEUE_NAME, build_broker, declare_deliver

AUTH = {"Authorization": f"Bearer {TOKEN}"}
METRICS_TOKEN = "metrics-token-3f9a1c77e2"
DOCS = ["/docs", "/redoc", "/openapi.json"]


def test_a_grant_is_shown_only_with_the_bearer_token(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings())) as client:
        body = {"user_id": USER, "items": [{"item_id": "gem", "amount": 1}], "reason": "patreon 12345"}
        grant_id = client.post("/grants", json=body, headers=AUTH).json()["id"]
        for headers in ({}, {"Authorization": "Bearer not-the-token-at-all"}, {"Authorization": TOKEN}):
            refused = client.get(f"/grants/{grant_id}", headers=headers)
            assert refused.status_code == 401 and USER not in refused.text and "12345" not in refused.text
        shown = client.get(f"/grants/{grant_id}", headers=AUTH)
        assert shown.status_code == 200 and shown.json()["user_id"] == USER
        assert client.get("/links/twitch").status_code == 401


def test_metrics_need_the_metrics_token_when_one_is_set(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(metrics_token=METRICS_TOKEN))) as client:
        for headers in ({}, AUTH, {"Authorization": "Bearer wrong"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert "wetbot_rewards" not in refused.text
        allowed = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert allowed.status_code == 200 and "wetbot_rewards_queue_messages 0" in allowed.text
        assert client.get("/healthz").status_code == 200, "health probes stay open"


def test_metrics_stay_open_without_a_metrics_token(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/metrics").status_code == 200


def test_a_metrics_token_must_be_header_safe(make_settings: SettingsFactory) -> None:
    from config.errors import ConfigError

    with pytest.raises(ConfigError, match="METRICS_TOKEN: must not contain spaces or control characters"):
        make_settings(metrics_token="two words")


def test_the_interactive_docs_and_openapi_are_off_unless_asked_for(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings())) as client:
        for path in DOCS:
            assert client.get(path).status_code == 404, path
    with TestClient(create_app(make_settings(api_docs=True))) as client:
        for path in DOCS:
            assert client.get(path).status_code == 200, path
        assert "/grants" in client.get("/openapi.json").json()["paths"]


def test_metrics_answer_200_and_count_a_message_on_dramatiqs_delay_queue(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    broker = build_broker(settings)
    try:
        declare_deliver(broker, lambda grant_id, token: None, timeout_s=settings.wetbot_timeout_s)
        for n in range(2):
            message: dramatiq.Message[None] = dramatiq.Message(
                queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(f"g{n}", ""), kwargs={}, options={}
            )
            broker.enqueue(message, delay=600_000)  # as Dramatiq's Retries middleware re-enqueues a failed message
        with TestClient(create_app(settings)) as client:
            response = client.get("/metrics")
        assert response.status_code == 200, response.text
        assert "wetbot_rewards_delayed_messages 2" in response.text
        assert "wetbot_rewards_queue_messages 0" in response.text
    finally:
        broker.close()
