"""The console's promises that need no browser: cookie attributes, expiry, headers, the login form's own token,
form caps, the 503 without a token, the audit log's paging, and no secret on any page or log line."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from admin.console.context import COOKIE
from admin.console.login_pages import LOGIN_COOKIE, login_delay_s
from admin.console.route import SECURITY_HEADERS
from config.errors import ConfigError
from config.settings import Settings, load_settings
from producers.audit import AuditLog
from tests.conftest import API_KEY, TEST_REDIS_URL, TOKEN
from wetbot_rewards.app import create_app
from worker.keys import Keys

ADMIN = "http-admin-token-4f81c2d9e0"


def console_settings(prefix: str, rewards_file: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "_env_file": None,
        "redis_url": TEST_REDIS_URL,
        "redis_key_prefix": prefix,
        "wetbot_api_url": "http://127.0.0.1:9",
        "wetbot_api_key": API_KEY,
        "rewards_file": rewards_file,
        "admin_token": ADMIN,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def client(prefix: str, rewards_file: Path) -> Iterator[TestClient]:
    with TestClient(create_app(console_settings(prefix, rewards_file))) as test_client:
        yield test_client


def form_token(client: TestClient) -> str:
    page = client.get("/console/login")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]


def log_in(client: TestClient, token: str = ADMIN) -> tuple[str, str]:
    """Log in; returns the raw Set-Cookie header of the session and the cookie value."""
    answer = client.post("/console/login", data={"csrf": form_token(client), "token": token}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    header = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    return header, header.split(";")[0].partition("=")[2]


def page_csrf(client: TestClient, path: str = "/console/links") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)[1]  # type: ignore[index]


def test_the_session_cookie_is_http_only_strict_scoped_and_expires(client: TestClient) -> None:
    header, _ = log_in(client)
    attributes = [part.strip().lower() for part in header.split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/console" in attributes
    assert f"max-age={12 * 3600}" in attributes
    assert "secure" not in attributes  # plain http (tests): a Secure cookie would never come back


@pytest.mark.parametrize("how", ["https", "x-forwarded-proto"])
def test_the_session_cookie_is_secure_over_https_also_behind_the_proxy(
    prefix: str, rewards_file: Path, how: str
) -> None:
    base = "https://testserver" if how == "https" else "http://testserver"
    headers = {"X-Forwarded-Proto": "https"} if how != "https" else {}
    with TestClient(create_app(console_settings(prefix, rewards_file)), base_url=base, headers=headers) as client:
        page = client.get("/console/login")
        form_cookie = page.headers["set-cookie"]
        token = form_cookie.split(";")[0].partition("=")[2]
        # over plain http the client would not send a Secure cookie back: send it as the proxied browser does
        answer = client.post(
            "/console/login",
            data={"csrf": token, "token": ADMIN},
            follow_redirects=False,
            headers={"cookie": f"{LOGIN_COOKIE}={token}"},
        )
    assert answer.status_code == 303
    session_cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    for header in (form_cookie, session_cookie):
        assert "secure" in [part.strip().lower() for part in header.split(";")[1:]]


def test_a_session_lasts_console_session_s_and_is_refused_past_its_expiry(
    prefix: str, rewards_file: Path, redis: Redis
) -> None:
    keys = Keys(prefix)
    with TestClient(create_app(console_settings(prefix, rewards_file, console_session_s=1800))) as client:
        header, _ = log_in(client)
        assert "max-age=1800" in header.lower()
        (key,) = list(redis.scan_iter(match=keys.console_session("*")))
        assert 1790 <= int(redis.ttl(key)) <= 1800  # type: ignore[arg-type]
        assert client.get("/console/events", follow_redirects=False).status_code == 200
        redis.hset(key, "expires_ms", str(int(time.time() * 1000) - 1))  # the TTL alone would keep it a while
        refused = client.get("/console/events", follow_redirects=False)
        assert refused.status_code == 303 and refused.headers["location"] == "/console/login"
        assert not redis.exists(key)


def test_every_console_answer_carries_the_security_headers(client: TestClient) -> None:
    answers = [
        client.get("/console/login"),
        client.get("/console/console.css"),
        client.get("/console/events", follow_redirects=False),
        client.post("/console/links"),
    ]
    log_in(client)
    answers += [
        client.get(p)
        for p in (
            "/console",
            "/console/events",
            "/console/links",
            "/console/audit",
            "/console/events/nope",
            "/console/no-such-page",
        )
    ]
    answers.append(client.post("/console/links", data={"csrf": "wrong"}))
    assert [a.status_code for a in answers] == [200, 200, 303, 403, 200, 200, 200, 200, 404, 404, 403]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.url, name)
    assert "script-src" not in SECURITY_HEADERS["Content-Security-Policy"]  # default-src 'none' covers scripts


def test_without_any_token_the_console_answers_503_saying_what_to_set(prefix: str, rewards_file: Path) -> None:
    settings = console_settings(prefix, rewards_file, admin_token=None)
    assert settings.console_token is None
    with TestClient(create_app(settings)) as client:
        for answer in (client.get("/console/login"), client.get("/console/events"), client.post("/console/login")):
            assert answer.status_code == 503 and "ADMIN_TOKEN" in answer.text


def test_admin_token_defaults_to_the_grants_token_and_wins_over_it(prefix: str, rewards_file: Path) -> None:
    fallback = console_settings(prefix, rewards_file, admin_token=None, grants_api_token=TOKEN)
    assert fallback.console_token is not None and fallback.console_token.get_secret_value() == TOKEN
    both = console_settings(prefix, rewards_file, grants_api_token=TOKEN)
    assert both.console_token is not None and both.console_token.get_secret_value() == ADMIN
    assert ADMIN in both.secrets()
    with TestClient(create_app(fallback)) as client:
        log_in(client, TOKEN)


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"admin_token": "short"}, "ADMIN_TOKEN"),
        ({"admin_token": "has a space in it 123"}, "ADMIN_TOKEN"),
        ({"console_session_s": 0}, "CONSOLE_SESSION_S"),
    ],
)
def test_bad_console_settings_stop_the_start(
    prefix: str, rewards_file: Path, overrides: dict[str, object], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        console_settings(prefix, rewards_file, **overrides)
    assert caught.value.variables == (variable,)


def test_the_login_form_needs_its_own_double_submit_token(client: TestClient, redis: Redis, prefix: str) -> None:
    token = form_token(client)
    client.cookies.delete(LOGIN_COOKIE, path="/console/login")
    answer = client.post("/console/login", data={"csrf": token, "token": ADMIN}, follow_redirects=False)
    assert answer.status_code == 403 and "expired" in answer.text
    assert not any(h.startswith(f"{COOKIE}=") for h in answer.headers.get_list("set-cookie"))
    assert list(redis.scan_iter(match=Keys(prefix).console_session("*"))) == []


def test_a_wrong_token_waits_longer_after_repeated_failures(client: TestClient, redis: Redis, prefix: str) -> None:
    assert [login_delay_s(n) for n in (1, 3, 4, 5, 6, 20)] == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    started = time.monotonic()
    answer = client.post("/console/login", data={"csrf": form_token(client), "token": "x" * 20})
    assert answer.status_code == 401 and time.monotonic() - started >= 0.9
    assert redis.get(Keys(prefix).console_login_failures("testclient")) == b"1"
    log_in(client)  # a right token clears the count
    assert not redis.exists(Keys(prefix).console_login_failures("testclient"))


def test_forms_are_urlencoded_capped_and_single_valued(client: TestClient) -> None:
    log_in(client)
    csrf = page_csrf(client)
    assert client.post("/console/links", json={"csrf": csrf}).status_code == 415
    too_big = client.post("/console/links", data={"csrf": csrf, "x": "9" * 17_000})
    assert too_big.status_code == 413
    twice = client.post(
        "/console/links",
        content=f"csrf={csrf}&csrf={csrf}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert twice.status_code == 400
    for answer in (too_big, twice):
        assert answer.headers["content-type"].startswith("text/html")


def test_the_audit_log_pages_newest_first(redis: Redis, keys: Keys) -> None:
    audit = AuditLog(redis, keys)
    ids = [audit.record("console:abcd1234", "link-add", f"twitch:{n}", "ok") for n in range(3)]
    assert [e.target for e in audit.recent(limit=2)] == ["twitch:2", "twitch:1"]
    assert [e.target for e in audit.recent(limit=2, before=ids[1])] == ["twitch:0"]
    assert abs(audit.recent(limit=1)[0].at - time.time()) < 5
    with pytest.raises(ValueError):
        audit.recent(before="not-an-id")


def test_no_secret_reaches_a_page_the_audit_log_or_the_logs(
    client: TestClient, redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = [client.post("/console/login", data={"csrf": form_token(client), "token": ADMIN + "x"}).text]
    _, cookie_value = log_in(client)
    texts += [client.get(p).text for p in ("/console", "/console/events", "/console/links", "/console/audit")]
    link = {"csrf": page_csrf(client), "platform": "twitch", "external_id": "12", "discord_user_id": "1" * 18}
    texts.append(client.post("/console/links", data=link).text)
    texts.append(client.post("/console/logout", data={"csrf": page_csrf(client)}).text)
    entries = AuditLog(redis, Keys(prefix)).recent(limit=100)
    assert {e.action for e in entries} == {"login", "link-add", "logout"}
    stored = [repr(entries), caplog.text, *texts]
    stored += [k.decode() for k in redis.scan_iter(match=f"{prefix}:*")]
    for secret in (ADMIN, cookie_value):
        assert not any(secret in text for text in stored)


def test_the_links_page_shows_at_most_a_page_of_links_and_says_how_to_find_the_others(
    client: TestClient, redis: Redis, keys: Keys
) -> None:
    redis.hset(keys.links("twitch"), mapping={str(1000 + n): "123456789012345678" for n in range(250)})
    log_in(client)
    page = client.get("/console/links").text
    assert page.count('data-link="twitch:') == 200 and "Showing the first 200 of 250" in page
    found = client.get("/console/links", params={"q": "1249"}).text
    assert found.count('data-link="twitch:') == 1 and "Showing the first" not in found
