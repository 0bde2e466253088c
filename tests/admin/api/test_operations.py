"""The operator API (bearer ADMIN_TOKEN): find a supporter's grants, act on them once, list and re-process events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from producers.audit import AuditLog
from producers.patreon.samples import Member, encode
from producers.twitch.samples import sample_event, sample_payload, signed_request
from tests.conftest import GUILD, TOKEN, USER, SettingsFactory
from tests.producers.patreon.test_webhook import RULES as PATREON_RULES
from tests.producers.patreon.test_webhook import sign as patreon_sign
from wetbot_rewards.app import create_app
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

ADMIN = "admin-token-for-the-operator-api-1"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
TWITCH_SECRET = "twitch-secret-admin-api-0042"
PATREON_SECRET = "patreon-webhook-secret-9d2c"
VIEWER = "4242"
RULES = f"""{PATREON_RULES}
[[twitch.rules]]
name = "cheer"
event = "channel.cheer"
per_bits = 100
items = [{{ id = "gem", amount = 1 }}]
"""


@pytest.fixture
def admin_settings(make_settings: SettingsFactory, tmp_path: Path) -> Settings:
    rules = tmp_path / "rewards.toml"
    rules.write_text(RULES, encoding="utf-8")
    return make_settings(
        rewards_file=rules,
        admin_token=ADMIN,
        twitch_webhook_secret=TWITCH_SECRET,
        patreon_webhook_secret=PATREON_SECRET,
    )


@pytest.fixture
def client(admin_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(admin_settings)) as test_client:
        yield test_client


def cheer_from_unlinked_viewer(client: TestClient) -> str:
    event = sample_event("channel.cheer")
    event.update(user_id=VIEWER, user_login="coolviewer", user_name="CoolViewer", bits=200)
    body, headers = signed_request(TWITCH_SECRET, sample_payload("channel.cheer", event))
    answer = client.post("/webhooks/twitch", content=body, headers=headers).json()
    assert answer["outcome"] == "parked"
    return str(answer["parked"][0])


def dead_grant(ledger: Ledger, key: str) -> str:
    grant = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="api", idempotency_key=key)).grant
    assert ledger.transition(grant.id, GrantState.DEAD, "WetBot refused the grant: HTTP 404 item not found")
    return grant.id


def audit_lines(admin_settings: Settings, client: TestClient) -> list[tuple[str, str, str, str]]:
    state = client.app.state.wetbot  # type: ignore[attr-defined]
    log = AuditLog(state.redis, Keys(admin_settings.redis_key_prefix))
    return [(entry.actor, entry.action, entry.target, entry.outcome) for entry in reversed(log.recent())]


def test_a_supporter_is_found_by_twitch_login_and_their_parked_grant_cancelled_once(
    client: TestClient, ledger: Ledger, admin_settings: Settings
) -> None:
    parked = cheer_from_unlinked_viewer(client)
    # Found by login (any case), Twitch id and state; not by another name
    for query in ({"q": "CoolViewer"}, {"q": VIEWER}, {"state": "parked", "source": "twitch", "guild_id": GUILD}):
        listing = client.get("/admin/grants", params=query, headers=AS_ADMIN).json()
        assert [grant["id"] for grant in listing["grants"]] == [parked], query
    assert client.get("/admin/grants", params={"q": "someone"}, headers=AS_ADMIN).json()["grants"] == []
    shown = client.get("/admin/grants", params={"q": "coolviewer"}, headers=AS_ADMIN).json()["grants"][0]
    assert shown["names"] == ["coolviewer", "CoolViewer"] and shown["version"] == 1
    # Cancel needs a reason; then cancels; a second cancel is done already, not an error
    assert client.post(f"/admin/grants/{parked}/cancel", json={}, headers=AS_ADMIN).status_code == 422
    first = client.post(f"/admin/grants/{parked}/cancel", json={"reason": "wrong channel"}, headers=AS_ADMIN)
    assert first.status_code == 200 and first.json()["done"] is True
    again = client.post(f"/admin/grants/{parked}/cancel", json={"reason": "wrong channel"}, headers=AS_ADMIN)
    assert again.status_code == 200 and again.json()["done"] is False
    grant = ledger.get(parked)
    assert grant is not None and grant.state == GrantState.CANCELLED
    assert [t.to_state for t in ledger.history(parked)] == ["parked", "cancelled"]
    assert "wrong channel" in ledger.history(parked)[-1].reason
    # And a link made later does not release it
    assert ledger.release_parked("twitch", VIEWER, USER) == []
    assert [line[1:] for line in audit_lines(admin_settings, client)] == [
        ("cancel", parked, "done"),
        ("cancel", parked, "nothing to do"),
    ]
    assert audit_lines(admin_settings, client)[0][0].startswith("api:")


def test_replay_and_resolve_act_once_and_say_what_the_grant_is_now(client: TestClient, ledger: Ledger) -> None:
    dead = dead_grant(ledger, "api:dead-1")
    answer = client.post(f"/admin/grants/{dead}/replay", headers=AS_ADMIN)
    assert answer.status_code == 200 and answer.json()["grant"]["state"] == "queued"
    twice = client.post(f"/admin/grants/{dead}/replay", headers=AS_ADMIN)
    assert twice.status_code == 409 and twice.json()["grant"]["state"] == "queued"
    assert "not dead" in twice.json()["error"]
    # A version the caller saw that is no longer the grant's: refused, nothing done
    other = dead_grant(ledger, "api:dead-2")
    stale = client.post(f"/admin/grants/{other}/replay", json={"version": 1}, headers=AS_ADMIN)
    assert stale.status_code == 409 and "changed since" in stale.json()["error"]
    assert ledger.get(other).state == GrantState.DEAD  # type: ignore[union-attr]
    ok = client.post(f"/admin/grants/{other}/replay", json={"version": 2}, headers=AS_ADMIN)
    assert ok.status_code == 200
    # Resolve an unknown grant as delivered; a second decision is refused
    unsure = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 2),), source="api", idempotency_key="u")).grant.id
    assert ledger.transition(unsure, GrantState.UNKNOWN, "timed out after sending")
    body = {"decision": "delivered", "note": "seen in Discord"}
    assert (
        client.post(f"/admin/grants/{unsure}/resolve", json=body, headers=AS_ADMIN).json()["grant"]["state"]
        == "delivered"
    )
    refused = client.post(f"/admin/grants/{unsure}/resolve", json={"decision": "resend"}, headers=AS_ADMIN)
    assert refused.status_code == 409
    assert [t.to_state for t in ledger.history(unsure)] == ["queued", "unknown", "delivered"]
    assert client.post("/admin/grants/" + "0" * 32 + "/replay", headers=AS_ADMIN).status_code == 404


def test_the_operator_api_takes_the_admin_token_only(client: TestClient, make_settings: SettingsFactory) -> None:
    assert client.get("/admin/grants", headers=AS_ADMIN).status_code == 200
    assert client.get("/admin/grants", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert client.get("/admin/grants").status_code == 401
    assert client.post("/admin/grants/" + "0" * 32 + "/replay").status_code == 401
    assert client.get("/admin/events", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    # Without ADMIN_TOKEN, GRANTS_API_TOKEN stands in; with neither, 503
    with TestClient(create_app(make_settings())) as fallback:
        assert fallback.get("/admin/grants", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    with TestClient(create_app(make_settings(grants_api_token=None))) as off:
        assert off.get("/admin/grants", headers=AS_ADMIN).status_code == 503


def test_a_bad_cursor_or_filter_is_a_clear_400(client: TestClient) -> None:
    answer = client.get("/admin/grants", params={"cursor": "all~1.0~" + "a" * 32, "q": "x"}, headers=AS_ADMIN)
    assert answer.status_code == 400 and "first page" in answer.text
    assert client.get("/admin/grants", params={"guild_id": "abc"}, headers=AS_ADMIN).status_code == 400
    assert client.get("/admin/grants", params={"state": "lost"}, headers=AS_ADMIN).status_code == 422


def test_events_are_listed_and_only_reprocessable_ones_reprocessed(client: TestClient) -> None:
    cheer_from_unlinked_viewer(client)
    listing = client.get("/admin/events", headers=AS_ADMIN).json()
    [event] = listing["events"]
    assert event["outcome"] == "parked" and event["source"] == "twitch" and "body" not in event
    answer = client.post(f"/admin/events/{event['id']}/reprocess", headers=AS_ADMIN)
    assert answer.status_code == 409 and "nothing to re-process" in answer.json()["error"]
    assert client.post("/admin/events/" + "0" * 24 + "/reprocess", headers=AS_ADMIN).status_code == 404
    assert client.get("/admin/events", params={"outcome": "unusable"}, headers=AS_ADMIN).json()["events"] == []


def test_a_patron_is_found_by_full_name_and_member_id(client: TestClient) -> None:
    body = encode(Member().document())
    headers = {
        "Content-Type": "application/json",
        "X-Patreon-Event": "members:pledge:create",
        "X-Patreon-Signature": patreon_sign(body, PATREON_SECRET),
    }
    assert client.post("/webhooks/patreon", content=body, headers=headers).status_code == 200
    member_id = Member().member_id
    found: list[Any] = []
    for text in ("test patron", "Patron", member_id):
        found.append(
            [g["rule"] for g in client.get("/admin/grants", params={"q": text}, headers=AS_ADMIN).json()["grants"]]
        )
    assert found == [["welcome"]] * 3


def test_a_bulk_replay_moves_every_matching_dead_grant_once_and_is_audited_as_the_clis(
    client: TestClient, ledger: Ledger, admin_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = dead_grant(ledger, "api:bulk-1"), dead_grant(ledger, "api:bulk-2")
    other_source = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="cli", idempotency_key="c")).grant
    assert ledger.transition(other_source.id, GrantState.DEAD, "refused")
    body = {"source": "api", "guild_id": GUILD}
    answer = client.post("/admin/grants/replay", json=body, headers=AS_ADMIN)
    assert answer.status_code == 200, answer.text
    assert sorted(answer.json()["replayed"]) == sorted([first, second]) and answer.json()["skipped"] == 0
    assert ledger.get(other_source.id).state == GrantState.DEAD  # type: ignore[union-attr]
    assert client.post("/admin/grants/replay", json=body, headers=AS_ADMIN).json()["replayed"] == []
    assert client.post("/admin/grants/replay", json={**body, "up_to": 4e10}, headers=AS_ADMIN).status_code == 422
    assert client.post("/admin/grants/replay", json={"guild_id": "x"}, headers=AS_ADMIN).status_code == 400
    assert client.post("/admin/grants/replay", json=body).status_code == 401
    # The CLI's replay --all with the same filters writes the same audit entry (action, target, outcome).
    from wetbot_rewards.cli import main

    third = dead_grant(ledger, "api:bulk-3")
    for name, value in {
        "REDIS_URL": admin_settings.redis_url,
        "REDIS_KEY_PREFIX": admin_settings.redis_key_prefix,
        "REWARDS_FILE": str(admin_settings.rewards_file),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["grants", "replay", "--all", "--source", "api", "--guild", GUILD]) == 0
    assert ledger.get(third).state == GrantState.QUEUED  # type: ignore[union-attr]
    state = client.app.state.wetbot  # type: ignore[attr-defined]
    entries = list(reversed(AuditLog(state.redis, Keys(admin_settings.redis_key_prefix)).recent()))
    api_runs = [e for e in entries if e.actor.startswith("api:")]
    cli_runs = [e for e in entries if e.actor.startswith("cli:")]
    assert [(e.action, e.target, e.outcome) for e in api_runs] == [
        ("bulk replay", f"source=api, guild_id={GUILD}", "done")
    ] * 2
    assert [(e.action, e.target, e.outcome) for e in cli_runs] == [
        (e.action, e.target, e.outcome) for e in api_runs[:1]
    ]


OLD_PATHS = [
    ("GET", "/grants", None, 200),
    ("POST", "/grants/{dead}/replay", None, 200),
    ("POST", "/grants/{parked}/cancel", {"reason": "old path"}, 200),
    ("POST", "/grants/{unsure}/resolve", {"decision": "delivered"}, 200),
    ("GET", "/events", None, 200),
    ("POST", "/events/" + "0" * 24 + "/reprocess", None, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), OLD_PATHS, ids=[f"{m} {p}" for m, p, _, _ in OLD_PATHS])
def test_the_old_operator_paths_answer_for_one_release_marked_deprecated(
    client: TestClient,
    ledger: Ledger,
    method: str,
    path: str,
    body: dict[str, str] | None,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fresh(key: str) -> str:
        unsure = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 2),), source="api", idempotency_key=key))
        assert ledger.transition(unsure.grant.id, GrantState.UNKNOWN, "timed out after sending")
        ids = {"dead": dead_grant(ledger, f"api:{key}"), "parked": cheer_from_unlinked_viewer(client)}
        return path.format(**ids, unsure=unsure.grant.id)

    new = client.request(method, f"/admin{fresh('new')}", json=body, headers=AS_ADMIN)
    assert new.status_code == status, new.text
    assert "Deprecation" not in new.headers
    url = fresh("old")
    with caplog.at_level("WARNING", logger="wetbot_rewards.admin_api"):
        old = client.request(method, url, json=body, headers=AS_ADMIN)
    assert old.status_code == status, old.text
    assert (old.headers["Deprecation"], old.headers["Link"]) == ("true", f'</admin{url}>; rel="successor-version"')
    assert any("is deprecated, use /admin/" in record.getMessage() for record in caplog.records)
    assert client.request(method, url, json=body).status_code == 401  # the admin token, as before


def test_old_query_names_are_accepted_and_both_names_at_once_must_agree(client: TestClient, ledger: Ledger) -> None:
    for key in ("p1", "p2"):
        dead_grant(ledger, f"api:{key}")
    first = client.get("/admin/grants", params={"limit": 1}, headers=AS_ADMIN).json()
    by_new = client.get("/admin/grants", params={"limit": 1, "cursor": first["next"]}, headers=AS_ADMIN).json()
    by_old = client.get("/admin/grants", params={"limit": 1, "after": first["next"]}, headers=AS_ADMIN).json()
    assert by_new == by_old and by_new["grants"][0]["id"] != first["grants"][0]["id"]
    assert client.get("/admin/grants", params={"guild": GUILD}, headers=AS_ADMIN).json()["total"] == 2
    assert client.get("/admin/grants", params={"guild": "3" * 18}, headers=AS_ADMIN).json()["grants"] == []
    clash = client.get("/admin/grants", params={"guild": GUILD, "guild_id": "3" * 18}, headers=AS_ADMIN)
    assert clash.status_code == 400 and "guild_id only" in clash.json()["error"]


def test_events_page_by_cursor_as_grants_do(client: TestClient) -> None:
    for _ in range(3):
        cheer_from_unlinked_viewer(client)
    first = client.get("/admin/events", params={"limit": 2}, headers=AS_ADMIN).json()
    assert len(first["events"]) == 2 and first["next"] == str(first["next_before_ms"])
    rest = client.get("/admin/events", params={"limit": 2, "cursor": first["next"]}, headers=AS_ADMIN).json()
    old = client.get("/admin/events", params={"limit": 2, "before_ms": first["next"]}, headers=AS_ADMIN).json()
    assert rest == old and len(rest["events"]) == 1 and rest["next"] is None
    assert {e["id"] for e in rest["events"]}.isdisjoint(e["id"] for e in first["events"])
    for bad in ("²", "-1", "1.5", "abc"):
        answer = client.get("/admin/events", params={"cursor": bad}, headers=AS_ADMIN)
        assert answer.status_code == 400 and "cursor" in answer.json()["error"], bad


@pytest.mark.parametrize("field", ["source", "guild_id", "q"])
def test_a_bulk_replay_with_an_empty_filter_is_refused_not_every_dead_grant(
    client: TestClient, ledger: Ledger, field: str
) -> None:
    """``{"guild_id": ""}`` (an unset variable in the caller's script) is a 422, never "every guild"."""
    grant = dead_grant(ledger, "api:bulk-empty")
    answer = client.post("/admin/grants/replay", json={field: ""}, headers=AS_ADMIN)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith(f"{field}: ")
    assert ledger.get(grant).state == GrantState.DEAD  # type: ignore[union-attr]
