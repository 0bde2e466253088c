"""Tests of the Twitch simulator (simulator/twitch.py), over real HTTP on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from simulator.eventsub_ws import EventSubWebSocketServer
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


# -- Helix: authentication and rate limits ----------------------------------------------------------------


class Helix:
    """A Helix caller with one token (the broadcaster's user token unless an app token is given)."""

    def __init__(self, http: requests.Session, sim: TwitchSimulator, token: object, client_id: str = DEFAULT_CLIENT_ID):
        self.http, self.sim, self.token, self.client_id = http, sim, token, client_id

    def call(self, method: str, path: str, **kwargs: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", "Client-Id": self.client_id}
        return self.http.request(method, f"{self.sim.api_url}{path}", headers=headers, **kwargs)  # type: ignore[arg-type]

    def create(self, title: str, cost: int = 100, **fields: object) -> dict[str, object]:
        params = {"broadcaster_id": DEFAULT_BROADCASTER.id}
        response = self.call(
            "POST", "/channel_points/custom_rewards", params=params, json={"title": title, "cost": cost, **fields}
        )
        assert response.status_code == 200, response.text
        [reward] = response.json()["data"]
        return dict(reward)

    def redemptions(self, **params: object) -> requests.Response:
        return self.call(
            "GET",
            "/channel_points/custom_rewards/redemptions",
            params={"broadcaster_id": DEFAULT_BROADCASTER.id, **params},
        )

    def set_status(self, reward_id: object, ids: list[str], status: str) -> requests.Response:
        params = {"broadcaster_id": DEFAULT_BROADCASTER.id, "reward_id": reward_id, "id": ids}
        return self.call("PATCH", "/channel_points/custom_rewards/redemptions", params=params, json={"status": status})


@pytest.fixture
def user(http: requests.Session, sim: TwitchSimulator) -> Helix:
    return Helix(http, sim, connect(http, sim)["access_token"])


def app_helix(http: requests.Session, sim: TwitchSimulator) -> Helix:
    form = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, "grant_type": "client_credentials"}
    return Helix(http, sim, http.post(f"{sim.auth_url}/token", data=form).json()["access_token"])


def test_helix_refuses_missing_dead_and_foreign_tokens(
    http: requests.Session, sim: TwitchSimulator, user: Helix
) -> None:
    assert user.call("GET", "/users").status_code == 200
    bare = http.get(f"{sim.api_url}/users", headers={"Client-Id": DEFAULT_CLIENT_ID})
    assert bare.status_code == 401 and bare.json()["message"] == "OAuth token is missing"
    no_client = http.get(f"{sim.api_url}/users", headers={"Authorization": f"Bearer {user.token}"})
    assert no_client.status_code == 401
    foreign = Helix(http, sim, user.token, OTHER_CLIENT_ID).call("GET", "/users")
    assert foreign.status_code == 401 and foreign.json()["message"] == "Client ID and OAuth token do not match"
    sim.expire_access_tokens()
    expired = user.call("GET", "/users")
    assert expired.status_code == 401 and expired.json() == {
        "error": "Unauthorized",
        "status": 401,
        "message": "Invalid OAuth token",
    }
    for response in (bare, no_client, foreign, expired):
        assert {"Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset"} <= set(response.headers)


def test_helix_rate_limit_headers_and_429_per_token_bucket(http: requests.Session, make_sim: SimFactory) -> None:
    sim = make_sim(device_poll_interval_s=0, rate_limit=3, rate_window_s=60)
    user = Helix(http, sim, connect(http, sim)["access_token"])
    answers = [user.call("GET", "/users") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["Ratelimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["Ratelimit-Limit"] == "3" for a in answers)
    reset = int(answers[-1].headers["Ratelimit-Reset"])
    assert time.time() + 55 < reset <= time.time() + 61  # full again in about a minute
    assert answers[-1].json()["status"] == 429
    assert app_helix(http, sim).call("GET", "/users", params={"id": "1337"}).status_code == 200  # its own bucket
    sim.advance_clock(20)  # a third of the window refills one point
    assert user.call("GET", "/users").status_code == 200
    assert user.call("GET", "/users").status_code == 429
    sim.set_rate_limit(800)
    sim.advance_clock(60)
    assert user.call("GET", "/users").headers["Ratelimit-Remaining"] == "799"


def test_helix_faults_keep_the_bucket_headers(sim: TwitchSimulator, user: Helix) -> None:
    sim.inject("status", path="/helix/users", status=429, message="unrelated to the bucket")
    sim.inject("status", path="/helix/", status=503, count=2)
    limited = user.call("GET", "/users")
    assert limited.status_code == 429 and limited.headers["Ratelimit-Remaining"] == "800"
    assert [user.call("GET", "/users").status_code for _ in range(3)] == [503, 503, 200]


# -- Helix: users ---------------------------------------------------------------------------------------


def test_users_by_login_and_id(http: requests.Session, sim: TwitchSimulator, user: Helix) -> None:
    [me] = user.call("GET", "/users").json()["data"]
    assert (me["id"], me["login"], me["display_name"]) == ("1337", "cool_user", "Cool_User")
    found = user.call("GET", "/users", params={"login": ["Cooler_User", "nobody"], "id": ["4242"]}).json()["data"]
    assert sorted(u["login"] for u in found) == ["cooler_user", "viewer_two"]
    too_many = user.call("GET", "/users", params={"id": [str(i) for i in range(101)]})
    assert too_many.status_code == 400
    assert app_helix(http, sim).call("GET", "/users").status_code == 400  # an app token has no "me"


# -- Helix: custom rewards ---------------------------------------------------------------------------------


REWARDS = "/channel_points/custom_rewards"
MINE = {"broadcaster_id": DEFAULT_BROADCASTER.id}


def test_rewards_create_unique_titles_and_the_channel_limit(sim: TwitchSimulator, user: Helix) -> None:
    reward = user.create("Daily chest", 250, prompt="Open it", should_redemptions_skip_request_queue=False)
    assert (reward["title"], reward["cost"], reward["prompt"], reward["is_enabled"]) == (
        "Daily chest",
        250,
        "Open it",
        True,
    )
    duplicate = user.call("POST", REWARDS, params=MINE, json={"title": "daily CHEST", "cost": 1})
    assert duplicate.status_code == 400 and duplicate.json()["message"] == "CREATE_CUSTOM_REWARD_DUPLICATE_REWARD"
    assert user.call("POST", REWARDS, params=MINE, json={"title": "x" * 46, "cost": 1}).status_code == 400
    assert user.call("POST", REWARDS, params=MINE, json={"title": "no cost"}).status_code == 400
    sim.create_reward_as_other_app("Hydrate", 50)
    for index in range(48):
        user.create(f"Reward {index}")
    full = user.call("POST", REWARDS, params=MINE, json={"title": "The 51st", "cost": 1})
    assert full.status_code == 400 and "TOO_MANY" in full.json()["message"]
    assert len(user.call("GET", REWARDS, params=MINE).json()["data"]) == 50
    ours = user.call("GET", REWARDS, params={**MINE, "only_manageable_rewards": "true"}).json()["data"]
    assert len(ours) == 49 and "Hydrate" not in {r["title"] for r in ours}


def test_rewards_update_and_delete_only_our_own(sim: TwitchSimulator, user: Helix) -> None:
    reward = user.create("Daily chest")
    other = sim.create_reward_as_other_app("Hydrate", 50)
    changed = user.call("PATCH", REWARDS, params={**MINE, "id": reward["id"]}, json={"cost": 300, "is_paused": True})
    assert changed.status_code == 200 and changed.json()["data"][0]["cost"] == 300
    bad = user.call("PATCH", REWARDS, params={**MINE, "id": reward["id"]}, json={"cost": 5, "title": "y" * 46})
    assert bad.status_code == 400
    [listed] = user.call("GET", REWARDS, params={**MINE, "id": reward["id"]}).json()["data"]
    assert (listed["cost"], listed["is_paused"]) == (300, True)  # nothing of the refused update applied
    for method in ("PATCH", "DELETE"):
        refused = user.call(method, REWARDS, params={**MINE, "id": other["id"]}, json={"cost": 1})
        assert refused.status_code == 403
    assert user.call("DELETE", REWARDS, params={**MINE, "id": reward["id"]}).status_code == 204
    assert user.call("DELETE", REWARDS, params={**MINE, "id": reward["id"]}).status_code == 404
    assert [r["title"] for r in sim.rewards()] == ["Hydrate"]


def test_rewards_need_the_broadcasters_own_user_token_and_scope(http: requests.Session, sim: TwitchSimulator) -> None:
    device = start_device(http, sim)
    sim.approve(login="cooler_user")
    viewer = Helix(http, sim, poll(http, sim, device["device_code"]).json()["access_token"])
    mismatch = viewer.call("GET", REWARDS, params=MINE)
    assert mismatch.status_code == 401 and "must match" in mismatch.json()["message"]
    assert app_helix(http, sim).call("GET", REWARDS, params=MINE).status_code == 401
    narrow = http.post(f"{sim.auth_url}/device", data={"client_id": DEFAULT_CLIENT_ID, "scopes": "bits:read"}).json()
    sim.approve(str(narrow["user_code"]))
    reader = Helix(http, sim, poll(http, sim, narrow["device_code"]).json()["access_token"])
    missing = reader.call("GET", REWARDS, params=MINE)
    assert missing.status_code == 401 and "Missing scope" in missing.json()["message"]
    assert reader.call("GET", REWARDS).status_code == 401  # the scope check comes first


# -- Helix: redemptions --------------------------------------------------------------------------------------


def test_redeem_gives_an_eventsub_shaped_event(sim: TwitchSimulator, user: Helix) -> None:
    from pathlib import Path

    sample = json.loads(
        (
            Path(__file__).parents[1] / "producers/twitch/data/channel.channel_points_custom_reward_redemption.add.json"
        ).read_text()
    )["event"]
    reward = user.create("Daily chest", 250, prompt="Open it")
    event = sim.redeem(str(reward["id"]), "Cooler_User", "pogchamp")
    assert set(event) == set(sample) and set(dict(event["reward"])) == set(sample["reward"])  # type: ignore[call-overload]
    assert event["status"] == "unfulfilled" and event["user_id"] == "9001" and event["broadcaster_user_id"] == "1337"
    assert event["reward"] == {"id": reward["id"], "title": "Daily chest", "prompt": "Open it", "cost": 250}
    [listed] = user.redemptions(status="UNFULFILLED").json()["data"]
    assert listed["id"] == event["id"] and listed["status"] == "UNFULFILLED" and listed["user_login"] == "cooler_user"
    sim.rename_reward(str(reward["id"]), "Weekly chest")
    [again] = user.redemptions(id=event["id"]).json()["data"]
    assert dict(again["reward"])["title"] == "Daily chest"  # as it was at redemption time
    with pytest.raises(ValueError, match="no user"):
        sim.redeem(str(reward["id"]), "nobody")


def test_redemptions_listing_rules_pagination_and_sort(sim: TwitchSimulator, user: Helix) -> None:
    reward = user.create("Daily chest")
    other = sim.create_reward_as_other_app("Hydrate", 50)
    ids = [sim.redeem(str(reward["id"]), "cooler_user")["id"] for _ in range(5)]
    sim.redeem(str(other["id"]), "cooler_user")  # not ours: never listed
    assert user.redemptions().status_code == 400  # status is required without id
    assert user.redemptions(status="UNFULFILLED", first=51).status_code == 400
    assert user.redemptions(status="UNFULFILLED", reward_id=other["id"]).status_code == 403
    pages: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, object] = {"status": "UNFULFILLED", "first": 2, **({"after": cursor} if cursor else {})}
        body = user.redemptions(**params).json()
        pages.extend(r["id"] for r in body["data"])
        cursor = body["pagination"].get("cursor")
        if not cursor:
            break
    assert pages == ids
    newest = user.redemptions(status="UNFULFILLED", sort="NEWEST", reward_id=reward["id"]).json()["data"]
    assert [r["id"] for r in newest] == ids[::-1]
    assert user.redemptions(status="FULFILLED").json()["data"] == []
    assert user.redemptions(status="UNFULFILLED", broadcaster_id="9001").status_code == 401


def test_redemption_status_updates_only_unfulfilled_and_counts_refunds(sim: TwitchSimulator, user: Helix) -> None:
    reward = user.create("Daily chest")
    ids = [str(sim.redeem(str(reward["id"]), "cooler_user")["id"]) for _ in range(3)]
    done = user.set_status(reward["id"], ids[:2], "FULFILLED")
    assert done.status_code == 200 and {r["status"] for r in done.json()["data"]} == {"FULFILLED"}
    refunded = user.set_status(reward["id"], ids, "CANCELED")  # only the one still UNFULFILLED changes
    assert [r["id"] for r in refunded.json()["data"]] == [ids[2]]
    assert user.set_status(reward["id"], ids, "CANCELED").status_code == 404
    assert sim.refunds() == [ids[2]]
    assert [u.status for u in sim.status_updates()] == ["FULFILLED", "FULFILLED", "CANCELED"]
    assert user.set_status(reward["id"], [str(i) for i in range(51)], "FULFILLED").status_code == 400
    assert user.set_status(reward["id"], ids, "UNFULFILLED").status_code == 400
    other = sim.create_reward_as_other_app("Hydrate", 50)
    theirs = str(sim.redeem(str(other["id"]), "cooler_user")["id"])
    assert user.set_status(other["id"], [theirs], "CANCELED").status_code == 403
    assert sim.refunds() == [ids[2]]


def test_skip_queue_rewards_are_fulfilled_at_once_and_deleted_rewards_vanish(sim: TwitchSimulator, user: Helix) -> None:
    instant = user.create("Instant", should_redemptions_skip_request_queue=True)
    assert sim.redeem(str(instant["id"]), "cooler_user")["status"] == "fulfilled"
    assert len(user.redemptions(status="FULFILLED").json()["data"]) == 1
    queued = user.create("Queued")
    redemption = str(sim.redeem(str(queued["id"]), "cooler_user")["id"])
    sim.delete_reward(str(queued["id"]))
    assert user.redemptions(status="UNFULFILLED").json()["data"] == []
    assert user.set_status(queued["id"], [redemption], "CANCELED").status_code == 404
    assert sim.refunds() == []
    with pytest.raises(ValueError):
        sim.redeem(str(queued["id"]), "cooler_user")


# -- Helix: EventSub subscriptions ---------------------------------------------------------------------------


SUBS = "/eventsub/subscriptions"
CALLBACK = "https://example.com/webhooks/callback"


def webhook_body(kind: str = "channel.cheer", **condition: str) -> dict[str, object]:
    return {
        "type": kind,
        "version": "1",
        "condition": condition or {"broadcaster_user_id": DEFAULT_BROADCASTER.id},
        "transport": {"method": "webhook", "callback": CALLBACK, "secret": "s3cret-s3cret"},
    }


def test_webhook_subscriptions_need_the_broadcasters_grant_and_conflict_on_duplicates(
    http: requests.Session, sim: TwitchSimulator
) -> None:
    app = app_helix(http, sim)
    assert app.call("POST", SUBS, json=webhook_body()).status_code == 403  # the broadcaster never connected
    user = Helix(http, sim, connect(http, sim)["access_token"])
    created = app.call("POST", SUBS, json=webhook_body())
    assert created.status_code == 202
    body = created.json()
    assert (
        body["data"][0]["status"] == "webhook_callback_verification_pending"
        and "secret" not in body["data"][0]["transport"]
    )
    assert (body["total"], body["total_cost"], body["max_total_cost"]) == (1, 0, 10000)
    elsewhere = {"method": "webhook", "callback": "https://other.example/cb", "secret": "s3cret-s3cret"}
    duplicate = app.call("POST", SUBS, json={**webhook_body(), "transport": elsewhere})  # another callback: still 409
    assert duplicate.status_code == 409
    assert app.call("POST", SUBS, json=webhook_body("channel.subscribe")).status_code == 403  # scope not granted
    raid = app.call("POST", SUBS, json=webhook_body("channel.raid", to_broadcaster_user_id="1337")).json()
    assert raid["data"][0]["condition"] == {"from_broadcaster_user_id": "", "to_broadcaster_user_id": "1337"}
    assert raid["total_cost"] == 1  # no authorization needed, so it costs
    assert user.call("POST", SUBS, json=webhook_body()).status_code == 400  # webhooks need an app token
    listed = app.call("GET", SUBS).json()
    assert listed["total"] == 2 and [s["type"] for s in listed["data"]] == ["channel.cheer", "channel.raid"]
    assert app.call("GET", SUBS, params={"type": "channel.raid"}).json()["data"][0]["type"] == "channel.raid"
    assert app.call("GET", SUBS, params={"type": "x", "status": "enabled"}).status_code == 400
    sub_id = body["data"][0]["id"]
    sim.set_subscription_status(sub_id, "enabled")
    assert app.call("GET", SUBS, params={"status": "enabled"}).json()["data"][0]["id"] == sub_id
    assert user.call("GET", SUBS).json()["data"] == []  # a user token sees its websocket ones only
    sim.revoke_all()
    assert {s["status"] for s in sim.subscriptions()} == {
        "authorization_revoked",
        "webhook_callback_verification_pending",
    }
    assert app.call("DELETE", SUBS, params={"id": sub_id}).status_code == 401  # the app token died too
    app = app_helix(http, sim)
    assert app.call("DELETE", SUBS, params={"id": sub_id}).status_code == 204
    assert app.call("DELETE", SUBS, params={"id": sub_id}).status_code == 404


@pytest.fixture
def ws_sim(make_sim: SimFactory) -> Iterator[tuple[TwitchSimulator, EventSubWebSocketServer]]:
    server = EventSubWebSocketServer(close_unused=False).start()
    try:
        yield make_sim(device_poll_interval_s=0, sessions=server), server
    finally:
        server.stop()


def welcome(client: ClientConnection) -> str:
    message = json.loads(client.recv(timeout=5))
    assert message["metadata"]["message_type"] == "session_welcome"
    return str(message["payload"]["session"]["id"])


def test_websocket_subscriptions_bind_to_live_sessions_and_orphans_conflict(
    http: requests.Session, ws_sim: tuple[TwitchSimulator, EventSubWebSocketServer]
) -> None:
    sim, server = ws_sim
    assert sim.ws_url == server.url
    user = Helix(http, sim, connect(http, sim)["access_token"])
    with ws_connect(sim.ws_url) as first:
        session_a = welcome(first)
        redemptions = webhook_body("channel.channel_points_custom_reward_redemption.add")
        body = {**redemptions, "transport": {"method": "websocket", "session_id": session_a}}
        assert app_helix(http, sim).call("POST", SUBS, json=body).status_code == 400  # needs a user token
        created = user.call("POST", SUBS, json=body)
        assert created.status_code == 202, created.text
        sub = created.json()["data"][0]
        assert sub["status"] == "enabled" and sub["transport"]["session_id"] == session_a
        assert created.json()["max_total_cost"] == 10
        assert [s["id"] for s in server.subscriptions(session_a)] == [sub["id"]]
        unknown = {**body, "transport": {"method": "websocket", "session_id": "no-such-session"}}
        assert user.call("POST", SUBS, json=unknown).status_code == 400

        event = sim.redeem(str(user.create("Daily chest")["id"]), "cooler_user")  # EventSub delivers it
        notification = json.loads(first.recv(timeout=5))
        assert notification["metadata"]["message_type"] == "notification"
        assert notification["payload"]["event"] == event and notification["payload"]["subscription"]["id"] == sub["id"]

        with ws_connect(sim.ws_url) as second:
            session_b = welcome(second)
            moved = {**body, "transport": {"method": "websocket", "session_id": session_b}}
            assert user.call("POST", SUBS, json=moved).status_code == 409  # still "enabled" on the first session
    deadline = time.monotonic() + 5  # the first socket closed: the server ends its session
    while sim.subscriptions()[0]["status"] == "enabled" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.subscriptions()[0]["status"] == "websocket_disconnected"


def test_websocket_subscriptions_follow_deletes_and_ended_sessions(
    http: requests.Session, ws_sim: tuple[TwitchSimulator, EventSubWebSocketServer]
) -> None:
    sim, server = ws_sim
    user = Helix(http, sim, connect(http, sim)["access_token"])
    with ws_connect(sim.ws_url) as client:
        session = welcome(client)
        body = {**webhook_body(), "transport": {"method": "websocket", "session_id": session}}
        sub_id = user.call("POST", SUBS, json=body).json()["data"][0]["id"]
        assert user.call("DELETE", SUBS, params={"id": sub_id}).status_code == 204
        assert server.subscriptions(session) == []
        assert user.call("POST", SUBS, json=body).status_code == 202
        ended = sim.end_session(session)
        assert [s["status"] for s in ended] == ["websocket_disconnected"]
        again = user.call("POST", SUBS, json=body)
        assert again.status_code == 202  # the ended one no longer blocks
        assert [s["status"] for s in user.call("GET", SUBS).json()["data"]] == ["websocket_disconnected", "enabled"]
        sim.advance_clock(3601)  # disabled websocket subscriptions stay listed for an hour
        assert [s["status"] for s in user.call("GET", SUBS).json()["data"]] == ["enabled"]
        sim.revoke_all()  # the broadcaster disconnected the app
        revocation = json.loads(client.recv(timeout=5))
        assert revocation["metadata"]["message_type"] == "revocation"
        assert revocation["payload"]["subscription"]["status"] == "authorization_revoked"
        assert server.subscriptions(session) == []


def test_subscription_listing_pages(http: requests.Session, sim: TwitchSimulator) -> None:
    connect(http, sim)
    app = app_helix(http, sim)
    sim.set_subscription_page_size(2)
    for kind in ("channel.cheer", "channel.subscription.gift", "channel.channel_points_custom_reward_redemption.add"):
        assert app.call("POST", SUBS, json=webhook_body(kind)).status_code in (202, 403)
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        body = app.call("GET", SUBS, params={"after": cursor} if cursor else {}).json()
        seen.extend(s["type"] for s in body["data"])
        cursor = body["pagination"].get("cursor")
        if not cursor:
            break
    assert seen == ["channel.cheer", "channel.channel_points_custom_reward_redemption.add"]
    sim.create_reward("Chest", 10)
    body = app.call("GET", SUBS).json()
    assert body["total"] == 2 and "cursor" not in body["pagination"]


# -- Helix through /_sim ------------------------------------------------------------------------------------


def test_control_endpoints_for_the_channel(http: requests.Session, sim: TwitchSimulator, user: Helix) -> None:
    base = f"{sim.root_url}/_sim"
    mine = user.create("Daily chest")
    theirs = http.post(f"{base}/rewards/create", json={"title": "Hydrate", "cost": 50}).json()["reward"]
    assert [r["client_id"] for r in http.get(f"{base}/rewards").json()["rewards"]] == [
        DEFAULT_CLIENT_ID,
        OTHER_CLIENT_ID,
    ]
    assert theirs["title"] == "Hydrate"
    event = http.post(f"{base}/redeem", json={"reward_id": mine["id"], "login": "cooler_user"}).json()["event"]
    assert user.set_status(mine["id"], [event["id"]], "CANCELED").status_code == 200
    assert http.get(f"{base}/refunds").json() == {"refunds": [event["id"]]}
    assert http.get(f"{base}/redemptions").json()["redemptions"][0]["status"] == "CANCELED"
    assert http.post(f"{base}/rewards/rename", json={"reward_id": mine["id"], "title": "Hydrate"}).status_code == 400
    assert http.post(f"{base}/rewards/delete", json={"reward_id": theirs["id"]}).status_code == 200
    assert http.post(f"{base}/rate_limit", json={"limit": 1}).status_code == 200
    assert [user.call("GET", "/users").status_code for _ in range(2)] == [200, 429]
    assert http.get(f"{base}/subscriptions").json() == {"subscriptions": []}


def test_issue_user_token_skips_the_device_flow(http: requests.Session, sim: TwitchSimulator) -> None:
    tokens = sim.issue_user_token(scopes=["channel:manage:redemptions"])
    valid = validate(http, sim, tokens["access_token"]).json()
    assert (valid["login"], valid["scopes"]) == ("cool_user", ["channel:manage:redemptions"])
    over_http = http.post(f"{sim.root_url}/_sim/tokens/issue", json={"login": "cooler_user", "scopes": []}).json()
    assert validate(http, sim, dict(over_http["tokens"])["access_token"]).json()["user_id"] == "9001"
    assert refresh(http, sim, tokens["refresh_token"]).status_code == 200


def test_cli_serves_until_terminated(http: requests.Session) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "twitch", "--port", "0", "--poll-interval", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("Twitch simulator listening on http://127.0.0.1:"), banner
        auth_url = banner.split("TWITCH_AUTH_URL=")[1].split()[0]
        device = http.post(f"{auth_url}/device", data={"client_id": DEFAULT_CLIENT_ID, "scopes": "bits:read"}).json()
        root = auth_url.removesuffix("/oauth2")
        assert http.post(f"{root}/_sim/device/approve", json={}).status_code == 200
        form = {"client_id": DEFAULT_CLIENT_ID, "device_code": device["device_code"], "grant_type": DEVICE_GRANT}
        tokens = http.post(f"{auth_url}/token", data=form).json()
        assert proc.stdout.readline().split()[1:] == ["POST", "/oauth2/device", "200"]
        assert proc.stdout.readline().split()[1:] == ["POST", "/oauth2/token", "200"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Twitch simulator stopped" in out
    assert str(tokens["access_token"]) not in out and str(device["device_code"]) not in out
