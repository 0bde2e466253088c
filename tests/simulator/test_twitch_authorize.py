"""The simulator's authorization code grant flow over HTTP: the consent page and its buttons, the approve and
deny modes, single-use codes bound to their redirect URI, the client secret, registered redirect URIs."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

from simulator.twitch import DEFAULT_BROADCASTER, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator

REDIRECT = "https://bot.example.test/console/twitch/callback"
SCOPES = "bits:read channel:read:redemptions"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


@pytest.fixture
def sim() -> Iterator[TwitchSimulator]:
    simulator = TwitchSimulator().start()
    yield simulator
    simulator.stop()


def authorize(http: requests.Session, sim: TwitchSimulator, **overrides: str) -> requests.Response:
    query = {"client_id": DEFAULT_CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "scope": SCOPES}
    query |= {"state": "s-123"} | overrides
    return http.get(f"{sim.auth_url}/authorize?{urlencode(query)}", allow_redirects=False)


def redirected(answer: requests.Response) -> dict[str, str]:
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return dict(parse_qsl(urlsplit(location).query))


def exchange(http: requests.Session, sim: TwitchSimulator, code: str, **overrides: str) -> requests.Response:
    form = {
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "code": code,
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
    }
    return http.post(f"{sim.auth_url}/token", data=form | overrides)


def test_the_consent_page_approves_and_the_code_is_exchanged_once(http: requests.Session, sim: TwitchSimulator) -> None:
    page = authorize(http, sim)
    assert page.status_code == 200 and 'value="approve"' in page.text and 'value="deny"' in page.text
    form = {"client_id": DEFAULT_CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "scope": SCOPES}
    clicked = http.post(
        f"{sim.auth_url}/authorize", data=form | {"state": "s-123", "action": "approve"}, allow_redirects=False
    )
    back = redirected(clicked)
    assert back["state"] == "s-123" and back["scope"] == SCOPES
    tokens = exchange(http, sim, back["code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["scope"] == SCOPES.split() and body["token_type"] == "bearer" and body["refresh_token"]
    valid = http.get(f"{sim.auth_url}/validate", headers={"Authorization": f"OAuth {body['access_token']}"}).json()
    assert valid["user_id"] == DEFAULT_BROADCASTER.id and valid["client_id"] == DEFAULT_CLIENT_ID
    again = exchange(http, sim, back["code"])
    assert again.status_code == 400 and again.json()["message"] == "Invalid authorization code"


def test_deny_redirects_with_access_denied(http: requests.Session, sim: TwitchSimulator) -> None:
    sim.set_authorize("deny")
    back = redirected(authorize(http, sim))
    assert back == {"error": "access_denied", "error_description": "The user denied you access", "state": "s-123"}


def test_the_code_needs_its_redirect_uri_and_the_secret(http: requests.Session, sim: TwitchSimulator) -> None:
    sim.set_authorize("approve")
    code = redirected(authorize(http, sim))["code"]
    elsewhere = exchange(http, sim, code, redirect_uri="https://evil.example/cb")
    assert elsewhere.status_code == 400 and "redirect_uri does not match" in elsewhere.json()["message"]
    no_secret = exchange(http, sim, code, client_secret="")
    assert no_secret.status_code == 403
    assert exchange(http, sim, code).status_code == 200, "a refused exchange does not use the code up"


def test_an_unregistered_redirect_uri_or_client_is_not_redirected(http: requests.Session) -> None:
    with TwitchSimulator(authorize="approve", redirect_uris=[REDIRECT]) as sim:
        assert authorize(http, sim).status_code == 302
        stray = authorize(http, sim, redirect_uri="https://evil.example/cb")
        assert stray.status_code == 400 and "location" not in stray.headers
        assert authorize(http, sim, client_id="nobody").status_code == 400
        assert authorize(http, sim, response_type="token").status_code == 400


def test_a_public_client_cannot_use_the_flow(http: requests.Session) -> None:
    with TwitchSimulator(client_secret=None, authorize="approve") as sim:
        code = redirected(authorize(http, sim))["code"]
        assert exchange(http, sim, code, client_secret="").status_code == 403


def test_the_mode_is_set_over_the_control_api(http: requests.Session, sim: TwitchSimulator) -> None:
    assert http.post(f"{sim.root_url}/_sim/authorize", json={"mode": "approve"}).status_code == 200
    assert "code" in redirected(authorize(http, sim))
    assert http.post(f"{sim.root_url}/_sim/authorize", json={"mode": "maybe"}).status_code == 400
