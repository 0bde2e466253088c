"""The operator API at its edges: odd parameters, races between callers, what refusals say and record."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from tests.admin.api.test_operations import ADMIN, AS_ADMIN, audit_lines, dead_grant
from tests.conftest import API_KEY, GUILD, USER, SettingsFactory
from wetbot_rewards.app import create_app
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger


@pytest.fixture
def admin_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(admin_token=ADMIN)


@pytest.fixture
def client(admin_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(admin_settings)) as test_client:
        yield test_client


def queued(ledger: Ledger, key: str) -> str:
    return ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="api", idempotency_key=key)).grant.id


def test_a_cancel_whose_reason_is_only_spaces_is_refused_clearly_and_audited(
    client: TestClient, ledger: Ledger, admin_settings: Settings
) -> None:
    grant_id = queued(ledger, "blank-reason")
    answer = client.post(f"/admin/grants/{grant_id}/cancel", json={"reason": "   "}, headers=AS_ADMIN)
    assert answer.status_code in (400, 422), answer.text
    assert ledger.get(grant_id).state == GrantState.QUEUED  # type: ignore[union-attr]
    assert audit_lines(admin_settings, client)[-1][1:] == ("cancel", grant_id, "refused")


def test_an_edited_cursor_is_a_400_not_a_storage_outage(client: TestClient, ledger: Ledger) -> None:
    queued(ledger, "c1")
    answer = client.get("/admin/grants", params={"cursor": "all~1.2.3~" + "a" * 32}, headers=AS_ADMIN)
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize(
    "params",
    [
        {"q": "<script>alert(1)</script>"},
        {"q": "ß" * 200},
        {"q": "a\x00b"},
        {"q": "*"},
        {"q": "   "},
        {"q": "x", "state": "dead", "source": "api", "guild_id": GUILD, "limit": "100"},
        {"cursor": "q~1~" + "a" * 32, "q": ":"},
    ],
)
def test_odd_list_parameters_answer_a_page(client: TestClient, ledger: Ledger, params: dict[str, str]) -> None:
    queued(ledger, "odd")
    answer = client.get("/admin/grants", params=params, headers=AS_ADMIN)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"grants", "next", "total"}


def test_two_callers_replaying_one_dead_grant_at_once_move_it_once_and_both_are_audited(
    client: TestClient, ledger: Ledger, admin_settings: Settings
) -> None:
    for round_ in range(5):
        grant_id = dead_grant(ledger, f"race-{round_}")
        version = len(ledger.history(grant_id))
        answers: list[Any] = []
        start = threading.Barrier(2)

        def replay(
            grant_id: str = grant_id,
            version: int = version,
            start: threading.Barrier = start,
            answers: list[Any] = answers,
        ) -> None:
            start.wait()
            answers.append(client.post(f"/admin/grants/{grant_id}/replay", json={"version": version}, headers=AS_ADMIN))

        threads = [threading.Thread(target=replay) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(a.status_code for a in answers) == [200, 409]
        assert [t.to_state for t in ledger.history(grant_id)] == ["queued", "dead", "queued"]
        outcomes = sorted(line[3] for line in audit_lines(admin_settings, client) if line[2] == grant_id)
        assert outcomes == ["done", "refused"]


def test_a_409_says_what_the_grant_is_without_any_secret_or_run_token(
    client: TestClient, ledger: Ledger, admin_settings: Settings
) -> None:
    grant_id = queued(ledger, "no-secrets")
    ledger.redis.hset(ledger.keys.grant(grant_id), "attempt", "run-token-0123456789abcdef")
    answer = client.post(f"/admin/grants/{grant_id}/replay", headers=AS_ADMIN)
    assert answer.status_code == 409 and answer.json()["grant"]["state"] == "queued"
    dispatch = cast(bytes | None, ledger.redis.hget(ledger.keys.grant(grant_id), "dispatch"))
    for secret in (ADMIN, API_KEY, "run-token-0123456789abcdef", (dispatch or b"").decode() or ADMIN):
        assert secret not in answer.text
