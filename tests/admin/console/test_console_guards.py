"""The console's guards: every form needs session and CSRF, nothing typed or stored becomes markup,
no answer redirects off the console, and what a refusal leaves in the audit log."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from redis import Redis

from admin.console import no_such_page
from admin.console.context import COOKIE
from producers.audit import AuditLog
from tests.admin.console.test_console_http import console_settings, log_in, page_csrf
from tests.conftest import GUILD, USER
from wetbot_rewards.app import create_app
from worker.creation import Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

HOSTILE = "<script>alert(1)</script>"
#: What a form of each console action would carry (so a missing CSRF token is the only thing wrong).
FIELDS = {
    "reason": "because",
    "decision": "delivered",
    "discord_user_id": "123456789012345678",
    "platform": "twitch",
    "external_id": "4242",
    "up_to": repr(time.time() + 3600),
    "version": "2",
}


@pytest.fixture
def client(prefix: str, rewards_file: Path) -> Iterator[TestClient]:
    with TestClient(create_app(console_settings(prefix, rewards_file))) as test_client:
        yield test_client


def dead_grant(ledger: Ledger, key: str, **extra: object) -> str:
    new = NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="api", idempotency_key=key, **extra)  # type: ignore[arg-type]
    grant_id = ledger.create(new).grant.id
    assert ledger.transition(grant_id, GrantState.DEAD, "WetBot refused the grant")
    return grant_id


def snapshot(ledger: Ledger, redis: Redis, keys: Keys) -> tuple[object, ...]:
    grants = {g.id: (g.state, len(ledger.history(g.id))) for g in ledger.list_grants(limit=500)}
    links = cast(dict[bytes, bytes], redis.hgetall(keys.links("twitch")))
    sessions = sorted(redis.scan_iter(match=keys.console_session("*")))
    return grants, links, sessions


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI >= 0.165 keeps them as ``_IncludedRouter``)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)


def console_posts(client: TestClient) -> list[str]:
    """Every console address that acts on a POST (the "no such page" catch-all answers every method and does
    nothing: it is not one; ``test_console_errors`` covers it)."""
    routes = _routes(client.app.routes)  # type: ignore[attr-defined]
    acting = {"POST", "PUT", "PATCH", "DELETE"}
    return sorted(
        {
            r.path
            for r in routes
            if r.path.startswith("/console") and (r.methods or set()) & acting and r.endpoint is not no_such_page
        }
    )


def test_every_console_post_without_session_or_csrf_is_403_and_changes_nothing(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    grant_id = dead_grant(ledger, "csrf-target")
    parked = (
        ledger.create_many(
            [
                Planned(
                    NewGrant(
                        GUILD,
                        "",
                        (GrantItem("gem", 1),),
                        source="twitch",
                        idempotency_key="p",
                        platform="twitch",
                        external_id="4242",
                    ),
                    Mode.PARK,
                )
            ]
        )
        .results[0]
        .grant.id
    )
    posts = console_posts(client)
    assert "/console/grants/{grant_id}/replay" in posts and "/console/logout" in posts and len(posts) >= 9
    audit = AuditLog(redis, keys)
    log_in(client)
    before, entries = snapshot(ledger, redis, keys), len(audit.recent(limit=500))
    for path in posts:
        if path == "/console/login":
            continue  # the login form has its own double-submit token (test_console_http)
        for target in (grant_id, parked):
            url = path.replace("{grant_id}", target).replace("{event_id}", "a" * 24)
            for csrf in ({}, {"csrf": ""}, {"csrf": "forged"}):
                answer = client.post(url, data={**FIELDS, **csrf}, follow_redirects=False)
                assert answer.status_code == 403, (url, csrf, answer.status_code)
            session = client.cookies.get(COOKIE)
            client.cookies.delete(COOKIE)
            answer = client.post(url, data={**FIELDS, "csrf": "forged"}, follow_redirects=False)
            assert answer.status_code == 403, (url, "no session", answer.status_code)
            client.cookies.set(COOKIE, cast(str, session), path="/console")
    assert snapshot(ledger, redis, keys) == before
    assert len(audit.recent(limit=500)) == entries, "a refused form is not an action"
    # (the same form with the session's token does act: the refusals above were the token's doing)
    client.post(f"/console/grants/{grant_id}/replay", data={**FIELDS, "csrf": page_csrf(client)})
    assert ledger.get(grant_id).state == GrantState.QUEUED  # type: ignore[union-attr]


def test_nothing_typed_or_stored_becomes_markup(client: TestClient, ledger: Ledger, redis: Redis, keys: Keys) -> None:
    grant_id = dead_grant(ledger, HOSTILE, names=(HOSTILE,), source_ref=HOSTILE, reason=HOSTILE, rule=HOSTILE)
    redis.hset(keys.grant(grant_id), "last_error", HOSTILE)
    log_in(client)
    pages = [
        client.get("/console/grants", params={"q": HOSTILE}),
        client.get("/console/grants", params={"state": HOSTILE}),
        client.get("/console/grants", params={"after": HOSTILE}),
        client.get("/console/grants", params={"q": HOSTILE.casefold(), "state": "dead"}),
        client.get("/console/grants"),
        client.get(f"/console/grants/{grant_id}"),
        client.get("/console/grants/replay-dead", params={"q": HOSTILE}),
        client.get(f"/console/grants/{HOSTILE}"),
    ]
    # and a flash message carrying hostile text (none does today: the flash is escaped like the rest)
    (session_key,) = list(redis.scan_iter(match=keys.console_session("*")))
    redis.hset(session_key, mapping={"flash": HOSTILE, "flash_kind": "error"})
    pages.append(client.get("/console/grants"))
    for page in pages:
        assert "<script>" not in page.text, page.url
    assert "&lt;script&gt;" in pages[0].text and "&lt;script&gt;" in pages[-1].text


@pytest.mark.parametrize("grant_id", ["..", "%2F%2Fevil.example", "@evil.example", "%5Cevil.example", "a%0d%0aX: y"])
def test_no_console_answer_redirects_off_the_console(client: TestClient, grant_id: str) -> None:
    log_in(client)
    csrf = page_csrf(client)
    for action in ("replay", "cancel", "resolve", "link"):
        for decision in ("delivered", "nonsense"):
            answer = client.post(
                f"/console/grants/{grant_id}/{action}",
                follow_redirects=False,
                data={"csrf": csrf, "decision": decision, "reason": "x"},
            )
            location = answer.headers.get("location", "/console")
            assert location.startswith("/console") and "\n" not in location and "\r" not in location, location
            assert "x: y" not in {k.lower(): v for k, v in answer.headers.items()}.get("x", "").lower()
    for query in ("?next=//evil.example", "?msg=//evil.example"):
        answer = client.get(f"/console/login{query}", follow_redirects=False)
        assert answer.headers.get("location", "/console").startswith("/console")


def test_an_edited_page_link_is_a_400_page_not_a_storage_outage(client: TestClient, ledger: Ledger) -> None:
    dead_grant(ledger, "one")
    log_in(client)
    answer = client.get("/console/grants", params={"after": "all~1.2.3~" + "a" * 32})
    assert answer.status_code == 400 and "Start again" in answer.text


def test_a_cancel_refused_for_want_of_a_reason_is_audited(
    client: TestClient, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    grant_id = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="api", idempotency_key="k")).grant.id
    log_in(client)
    csrf = page_csrf(client, f"/console/grants/{grant_id}")
    answer = client.post(f"/console/grants/{grant_id}/cancel", data={"csrf": csrf, "reason": "  "})
    assert "Nothing done" in answer.text
    assert ledger.get(grant_id).state == GrantState.QUEUED  # type: ignore[union-attr]
    latest = AuditLog(redis, keys).recent(limit=1)[0]
    assert (latest.action, latest.target, latest.outcome) == ("cancel", grant_id, "refused")


def test_a_bulk_replay_moves_only_what_was_counted_and_a_second_submit_nothing(
    client: TestClient, ledger: Ledger
) -> None:
    counted = [dead_grant(ledger, f"dead{n}") for n in range(3)]
    log_in(client)
    confirm = client.get("/console/grants/replay-dead")
    up_to = re.search(r'name="up_to" value="([^"]+)"', confirm.text)[1]  # type: ignore[index]
    csrf = re.search(r'name="csrf" value="([^"]+)"', confirm.text)[1]  # type: ignore[index]
    time.sleep(0.01)
    later = dead_grant(ledger, "died-after-the-count")
    client.post("/console/grants/replay-dead", data={"csrf": csrf, "up_to": up_to})
    assert [ledger.get(g).state for g in counted] == [GrantState.QUEUED] * 3  # type: ignore[union-attr]
    assert ledger.get(later).state == GrantState.DEAD  # type: ignore[union-attr]
    page = client.post("/console/grants/replay-dead", data={"csrf": csrf, "up_to": up_to})
    assert "0 dead grant(s) queued again" in page.text
    assert [len(ledger.history(g)) for g in counted] == [3, 3, 3]


def test_console_links_say_guild_id_and_cursor_and_old_links_still_work(client: TestClient, ledger: Ledger) -> None:
    for key in ("p1", "p2"):
        dead_grant(ledger, key)
    other = ledger.create(NewGrant("3" * 18, USER, (GrantItem("gem", 1),), source="api", idempotency_key="o")).grant.id
    log_in(client)
    ids = {
        "new": set(re.findall(r"/console/grants/([0-9a-f]{32})", client.get("/console/grants?guild_id=" + GUILD).text))
    }
    ids["old"] = set(re.findall(r"/console/grants/([0-9a-f]{32})", client.get("/console/grants?guild=" + GUILD).text))
    assert ids["new"] == ids["old"] and len(ids["new"]) == 2 and other not in ids["new"]
    dead_page = client.get("/console/grants", params={"state": "dead", "guild_id": GUILD}).text
    assert f"replay-dead?state=dead&amp;guild_id={GUILD}" in dead_page and 'name="guild_id"' in dead_page
    assert 'name="guild_id" value="' + GUILD in client.get(f"/console/grants/replay-dead?guild_id={GUILD}").text
    assert 'name="guild_id" value="' + GUILD in client.get(f"/console/grants/replay-dead?guild={GUILD}").text
    assert f"/console/grants?guild_id={GUILD}" in client.get("/console").text
    for name in ("cursor", "before_ms"):
        assert client.get("/console/events", params={name: "1"}).status_code == 200
        assert client.get("/console/events", params={name: "\u00b2"}).status_code == 400
