"""Tests of the Twitch simulator (simulator/twitch.py), over real HTTP on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import requests

from simulator.twitch import (
    DEFAULT_BROADCASTER,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    OTHER_CLIENT_ID,
    TwitchSimulator,
    token_fingerprint,
)
from simulator.twitch_oauth import DEVICE_GRANT

SCOPES = "channel:read:redemptions channel:manage:redemptions bits:read"
SimFactory = Callable[..., TwitchSimulator]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A session that ignores proxy settings from the environment (loopback only)."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    started: list[TwitchSimulator] = []

    def make(**kwargs: object) -> TwitchSimulator:
        sim = TwitchSimulator(**kwargs).start()  # type: ignore[arg-type]
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> TwitchSimulator:
    return make_sim(device_poll_interval_s=0)


def start_device(http: requests.Session, sim: TwitchSimulator, client_id: str = DEFAULT_CLIENT_ID) -> dict[str, object]:
    response = http.post(f"{sim.auth_url}/device", data={"client_id": client_id, "scopes": SCOPES})
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def poll(http: requests.Session, sim: TwitchSimulator, device_code: object) -> requests.Response:
    return http.post(
        f"{sim.auth_url}/token",
        data={"client_id": DEFAULT_CLIENT_ID, "device_code": device_code, "grant_type": DEVICE_GRANT, "scopes": SCOPES},
    )


def connect(http: requests.Session, sim: TwitchSimulator) -> dict[str, object]:
    """Run the device flow to the end; the token answer."""
    device = start_device(http, sim)
    sim.approve(str(device["user_code"]))
    response = poll(http, sim, device["device_code"])
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def refresh(http: requests.Session, sim: TwitchSimulator, refresh_token: object) -> requests.Response:
    return http.post(
        f"{sim.auth_url}/token",
        data={
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        },
    )


def validate(http: requests.Session, sim: TwitchSimulator, token: object) -> requests.Response:
    return http.get(f"{sim.auth_url}/validate", headers={"Authorization": f"OAuth {token}"})


# -- device code grant flow ------------------------------------------------------------------------


def test_device_flow_pending_until_approved_then_tokens(http: requests.Session, sim: TwitchSimulator) -> None:
    device = start_device(http, sim)
    assert set(device) == {"device_code", "user_code", "verification_uri", "expires_in", "interval"}
    assert device["expires_in"] == 1800 and device["interval"] == 0
    assert str(device["verification_uri"]).startswith(f"{sim.root_url}/activate")
    assert str(device["user_code"]) in str(device["verification_uri"])
    pending = poll(http, sim, device["device_code"])
    assert pending.status_code == 400 and pending.json() == {"status": 400, "message": "authorization_pending"}
    assert sim.pending_user_codes() == [device["user_code"]]

    sim.approve()  # the only pending one
    answer = poll(http, sim, device["device_code"]).json()
    assert answer["token_type"] == "bearer" and answer["scope"] == SCOPES.split()
    assert answer["expires_in"] == 14400 and answer["access_token"] and answer["refresh_token"]
    assert sim.pending_user_codes() == []
    again = poll(http, sim, device["device_code"])  # a device code gives tokens once
    assert again.status_code == 400 and again.json()["message"] == "invalid device code"

    valid = validate(http, sim, answer["access_token"]).json()
    assert valid["client_id"] == DEFAULT_CLIENT_ID and valid["scopes"] == SCOPES.split()
    assert (valid["user_id"], valid["login"]) == (DEFAULT_BROADCASTER.id, DEFAULT_BROADCASTER.login)
    assert 14390 < valid["expires_in"] <= 14400


def test_device_flow_slow_down_when_polled_faster_than_interval(http: requests.Session, make_sim: SimFactory) -> None:
    sim = make_sim(device_poll_interval_s=0.3)
    device = start_device(http, sim)
    assert device["interval"] == 0.3
    assert poll(http, sim, device["device_code"]).json()["message"] == "authorization_pending"
    assert poll(http, sim, device["device_code"]).json()["message"] == "slow_down"
    time.sleep(0.35)
    assert poll(http, sim, device["device_code"]).json()["message"] == "authorization_pending"


def test_device_flow_denied_and_expired(http: requests.Session, sim: TwitchSimulator) -> None:
    first, second = start_device(http, sim), start_device(http, sim)
    with pytest.raises(ValueError, match="2 pending"):
        sim.approve()  # ambiguous
    sim.deny(str(first["user_code"]))
    assert poll(http, sim, first["device_code"]).json() == {"status": 400, "message": "access_denied"}
    sim.advance_clock(1801)
    assert poll(http, sim, second["device_code"]).json() == {"status": 400, "message": "expired_token"}
    with pytest.raises(ValueError, match="0 pending"):
        sim.approve(str(second["user_code"]))
    assert poll(http, sim, "no-such-code").json()["message"] == "invalid device code"


def test_device_flow_auto_approves_and_checks_the_client(http: requests.Session, make_sim: SimFactory) -> None:
    sim = make_sim(auto_approve_after_s=0.2, device_poll_interval_s=0)
    device = start_device(http, sim)
    assert poll(http, sim, device["device_code"]).json()["message"] == "authorization_pending"
    time.sleep(0.25)
    assert poll(http, sim, device["device_code"]).status_code == 200
    unknown = http.post(f"{sim.auth_url}/device", data={"client_id": "nobody", "scopes": SCOPES})
    assert unknown.status_code == 400 and unknown.json()["message"] == "invalid client"
    other = start_device(http, sim, OTHER_CLIENT_ID)  # our client cannot redeem another client's code
    time.sleep(0.25)
    assert poll(http, sim, other["device_code"]).json()["message"] == "invalid device code"


def test_activate_page_approves_as_the_broadcaster(http: requests.Session, sim: TwitchSimulator) -> None:
    device = start_device(http, sim)
    page = http.get(str(device["verification_uri"]))
    assert page.status_code == 200 and str(device["user_code"]) in page.text and "Authorize" in page.text
    done = http.post(f"{sim.root_url}/activate", data={"user_code": device["user_code"], "action": "approve"})
    assert done.status_code == 200 and "authorized" in done.text
    assert poll(http, sim, device["device_code"]).status_code == 200
    stale = http.post(f"{sim.root_url}/activate", data={"user_code": device["user_code"], "action": "approve"})
    assert stale.status_code == 400


# -- tokens -------------------------------------------------------------------------------------------


def test_refresh_rotates_and_the_used_refresh_token_stops_working(http: requests.Session, sim: TwitchSimulator) -> None:
    first = connect(http, sim)
    renewed = refresh(http, sim, first["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert body["access_token"] != first["access_token"] and body["refresh_token"] != first["refresh_token"]
    assert body["scope"] == SCOPES.split() and body["token_type"] == "bearer"
    reused = refresh(http, sim, first["refresh_token"])
    assert reused.status_code == 400 and reused.json() == {"status": 400, "message": "Invalid refresh token"}
    assert validate(http, sim, body["access_token"]).status_code == 200
    assert refresh(http, sim, body["refresh_token"]).status_code == 200


def test_refresh_needs_the_secret_of_a_confidential_client_but_not_of_a_public_one(
    http: requests.Session, make_sim: SimFactory
) -> None:
    confidential = make_sim(device_poll_interval_s=0)
    tokens = connect(http, confidential)
    wrong = http.post(
        f"{confidential.auth_url}/token",
        data={"client_id": DEFAULT_CLIENT_ID, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert wrong.status_code == 403 and wrong.json()["message"] == "invalid client secret"

    public = make_sim(client_secret=None, device_poll_interval_s=0)
    tokens = connect(http, public)
    answer = http.post(
        f"{public.auth_url}/token",
        data={"client_id": DEFAULT_CLIENT_ID, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert answer.status_code == 200, answer.text
    app = http.post(
        f"{public.auth_url}/token", data={"client_id": DEFAULT_CLIENT_ID, "grant_type": "client_credentials"}
    )
    assert app.status_code == 403  # a public client has no secret, so no app token


def test_expired_tokens_fail_validation_and_refresh_still_works(http: requests.Session, sim: TwitchSimulator) -> None:
    tokens = connect(http, sim)
    sim.expire_access_tokens()
    dead = validate(http, sim, tokens["access_token"])
    assert dead.status_code == 401 and dead.json() == {"status": 401, "message": "invalid access token"}
    renewed = refresh(http, sim, tokens["refresh_token"]).json()
    assert validate(http, sim, renewed["access_token"]).status_code == 200


def test_lifetime_and_clock(http: requests.Session, sim: TwitchSimulator) -> None:
    sim.set_access_token_lifetime(60)
    tokens = connect(http, sim)
    assert tokens["expires_in"] == 60
    sim.advance_clock(59)
    assert validate(http, sim, tokens["access_token"]).json()["expires_in"] <= 1
    sim.advance_clock(1)
    assert validate(http, sim, tokens["access_token"]).status_code == 401


def test_revoke_ends_the_grant_and_revoke_all_ends_every_grant(http: requests.Session, sim: TwitchSimulator) -> None:
    first, second = connect(http, sim), connect(http, sim)
    revoked = http.post(f"{sim.auth_url}/revoke", data={"client_id": DEFAULT_CLIENT_ID, "token": first["access_token"]})
    assert revoked.status_code == 200 and revoked.content == b""
    assert validate(http, sim, first["access_token"]).status_code == 401
    assert refresh(http, sim, first["refresh_token"]).json()["message"] == "Invalid refresh token"
    again = http.post(f"{sim.auth_url}/revoke", data={"client_id": OTHER_CLIENT_ID, "token": second["access_token"]})
    assert again.status_code == 400 and again.json()["message"] == "Invalid token"
    assert validate(http, sim, second["access_token"]).status_code == 200

    sim.revoke_all()
    assert validate(http, sim, second["access_token"]).status_code == 401
    assert refresh(http, sim, second["refresh_token"]).status_code == 400
    assert validate(http, sim, "never-issued").status_code == 401


def test_client_credentials_gives_an_app_token(http: requests.Session, sim: TwitchSimulator) -> None:
    form = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, "grant_type": "client_credentials"}
    answer = http.post(f"{sim.auth_url}/token", data=form)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "expires_in", "token_type"} and body["token_type"] == "bearer"
    valid = validate(http, sim, body["access_token"]).json()
    assert valid == {"client_id": DEFAULT_CLIENT_ID, "scopes": [], "expires_in": valid["expires_in"]}
    wrong = http.post(f"{sim.auth_url}/token", data={**form, "client_secret": "nope"})
    assert wrong.status_code == 403 and wrong.json() == {"status": 403, "message": "invalid client secret"}
    unsupported = http.post(f"{sim.auth_url}/token", data={**form, "grant_type": "password"})
    assert unsupported.status_code == 400


# -- faults, records, control --------------------------------------------------------------------------


def test_faults_per_path_and_records_hold_no_token(http: requests.Session, sim: TwitchSimulator) -> None:
    tokens = connect(http, sim)
    sim.inject("status", path="/oauth2/token", status=503)
    assert refresh(http, sim, tokens["refresh_token"]).status_code == 503
    assert validate(http, sim, tokens["access_token"]).status_code == 200  # another path: not faulted
    renewed = refresh(http, sim, tokens["refresh_token"])  # the faulted call changed nothing
    assert renewed.status_code == 200

    sim.inject("drop_after", path="/oauth2/token")
    with pytest.raises(requests.ConnectionError):
        refresh(http, sim, renewed.json()["refresh_token"])
    # Applied but never answered: the refresh token was used up all the same.
    assert refresh(http, sim, renewed.json()["refresh_token"]).status_code == 400

    sim.inject("slow_before", path="/oauth2/validate", delay_s=0.3)
    started = time.monotonic()
    assert validate(http, sim, "x").status_code == 401
    assert time.monotonic() - started >= 0.3

    records = sim.requests()
    assert [r.fault for r in records if r.fault] == ["status", "drop_after", "slow_before"]
    assert [r.status for r in records if r.fault] == [503, 0, 401]
    assert all(r.client_id == DEFAULT_CLIENT_ID for r in records if r.path == "/oauth2/token")
    text = repr(records)
    for secret in (tokens["access_token"], tokens["refresh_token"], DEFAULT_CLIENT_SECRET):
        assert str(secret) not in text
    assert token_fingerprint(str(tokens["access_token"])) in {r.token for r in records}


def test_control_endpoints_drive_the_flow_from_another_process(http: requests.Session, sim: TwitchSimulator) -> None:
    device = start_device(http, sim)
    assert http.get(f"{sim.root_url}/_sim/device/pending").json() == {"user_codes": [device["user_code"]]}
    approved = http.post(f"{sim.root_url}/_sim/device/approve", json={})
    assert approved.json() == {"ok": True, "user_code": device["user_code"]}
    tokens = poll(http, sim, device["device_code"]).json()
    assert http.post(f"{sim.root_url}/_sim/tokens/expire").status_code == 200
    assert validate(http, sim, tokens["access_token"]).status_code == 401
    fault = {"kind": "status", "path": "/oauth2/validate", "status": 500}
    assert http.post(f"{sim.root_url}/_sim/faults", json=fault).status_code == 200
    assert validate(http, sim, tokens["access_token"]).status_code == 500
    assert http.post(f"{sim.root_url}/_sim/device/deny", json={}).status_code == 400  # nothing pending
    assert http.post(f"{sim.root_url}/_sim/faults", json={"kind": "nope"}).status_code == 400
    assert http.get(f"{sim.root_url}/_sim/nope").status_code == 404
    assert http.get(f"{sim.root_url}/_sim/reset").status_code == 405
    assert len(http.get(f"{sim.root_url}/_sim/requests").json()["requests"]) == 4  # device, token, validate twice
    assert http.post(f"{sim.root_url}/_sim/tokens/revoke_all").status_code == 200
    assert http.post(f"{sim.root_url}/_sim/reset").status_code == 200
    assert sim.requests() == [] and sim.pending_user_codes() == []


def test_state_survives_a_restart_on_the_same_port(http: requests.Session, sim: TwitchSimulator) -> None:
    tokens = connect(http, sim)
    port_url = sim.auth_url
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        validate(http, sim, tokens["access_token"])
    sim.start()
    assert sim.auth_url == port_url
    assert validate(http, sim, tokens["access_token"]).status_code == 200
