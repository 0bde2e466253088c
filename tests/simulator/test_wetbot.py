"""Tests of the WetBot API simulator (simulator/wetbot.py), over real HTTP on loopback."""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from simulator.wetbot import (
    NO_RESPONSE,
    AppliedChange,
    WetbotSimulator,
    key_fingerprint,
    parse_rate,
)

GUILD = "111111111111111111"
OTHER_GUILD = "222222222222222222"
KEY = "demo-key"
USER = "42"
AUTH = {"Authorization": KEY}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A session that ignores proxy settings from the environment (loopback only)."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


@pytest.fixture
def make_sim() -> Iterator[Callable[..., WetbotSimulator]]:
    started: list[WetbotSimulator] = []

    def make(**kwargs: Any) -> WetbotSimulator:
        sim = WetbotSimulator(**kwargs).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., WetbotSimulator]) -> WetbotSimulator:
    return make_sim()


def inv_url(sim: WetbotSimulator, user: str = USER, guild: str = GUILD) -> str:
    return f"{sim.url}/guilds/{guild}/users/{user}/inventory"


def user_url(sim: WetbotSimulator, user: str = USER, guild: str = GUILD) -> str:
    return f"{sim.url}/guilds/{guild}/users/{user}"


def grant(
    http: requests.Session,
    sim: WetbotSimulator,
    *items: tuple[str, float],
    user: str = USER,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    body = {"items": [{"itemID": i, "amount": a} for i, a in items]}
    return http.post(inv_url(sim, user), json=body, headers=headers or AUTH, timeout=timeout)


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# ---------------------------------------------------------------- success path


def test_success_envelope_and_accumulation(http: requests.Session, sim: WetbotSimulator) -> None:
    r = grant(http, sim, ("sword", 2), ("gem", 0.1))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {
        "code": 200,
        "response": {
            "userID": USER,
            "guildID": GUILD,
            "currency": 0,
            "xp": 0,
            "rp": 0,
            "inventory": [
                {"itemID": "sword", "amount": 2, "fav": False},
                {"itemID": "gem", "amount": 0.1, "fav": False},
            ],
        },
    }
    # Decimal addition (0.1 + 0.2 == 0.3), negative totals allowed, zero entries kept.
    grant(http, sim, ("gem", 0.2), ("sword", -2), ("shield", -5))
    assert sim.inventory(GUILD, USER) == {"sword": 0.0, "gem": 0.3, "shield": -5.0}
    inventory = grant(http, sim, ("gem", 0)).json()["response"]["inventory"]
    assert [(e["itemID"], e["amount"]) for e in inventory] == [("sword", 0), ("gem", 0.3), ("shield", -5)]
    # Duplicate ids in one request add up; the change log keeps them as sent.
    grant(http, sim, ("dup", 1), ("dup", 2.5))
    assert sim.inventory(GUILD, USER)["dup"] == 3.5
    changes = sim.applied()
    assert len(changes) == 4
    assert changes[-1].items == (("dup", 1.0), ("dup", 2.5))
    assert (changes[0].guild_id, changes[0].user_id, changes[0].kind) == (GUILD, USER, "inventory")
    assert sim.count_status(200) == 4


def test_get_autocreates_profile_and_patch(http: requests.Session, sim: WetbotSimulator) -> None:
    assert sim.profile(GUILD, "7") is None
    r = http.get(user_url(sim, "7"), headers=AUTH, timeout=5)
    assert r.status_code == 200
    assert r.json()["response"] == {
        "userID": "7",
        "guildID": GUILD,
        "currency": 0,
        "xp": 0,
        "rp": 0,
        "inventory": [],
    }
    r = http.patch(user_url(sim, "7"), json={"currency": 150, "xp": 10.5, "rp": -3, "other": 1}, headers=AUTH)
    assert r.status_code == 200
    profile = r.json()["response"]
    assert (profile["currency"], profile["xp"], profile["rp"]) == (150, 10.5, -3)
    assert sim.applied()[-1] == AppliedChange(
        sim.applied()[-1].at, GUILD, "7", (("currency", 150.0), ("xp", 10.5), ("rp", -3.0)), "profile"
    )
    for body in ({"currency": 1e9 + 1}, {"xp": 100_001}, {"rp": -101}, {"currency": "5"}, {}):
        r = http.patch(user_url(sim, "7"), json=body, headers=AUTH, timeout=5)
        assert r.status_code == 400, body
    assert sim.profile(GUILD, "7") == profile


# ---------------------------------------------------------------- auth, routing


def test_bare_key_required_and_wrong_guild(http: requests.Session, make_sim: Callable[..., WetbotSimulator]) -> None:
    sim = make_sim(keys={KEY: GUILD, "other-key": OTHER_GUILD})
    for headers in ({}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": "nope"}):
        r = grant(http, sim, ("a", 1), headers=headers or {"X-None": "1"})
        assert r.status_code == 401
        assert r.json() == {"code": 401, "message": "Invalid API key"}
    r = grant(http, sim, ("a", 1), headers={"Authorization": "other-key"})
    assert r.status_code == 403
    assert r.json()["code"] == 403
    assert sim.applied() == []
    # Revocation at run time.
    sim.revoke_key(KEY)
    assert grant(http, sim, ("a", 1)).status_code == 401
    sim.restore_key(KEY)
    assert grant(http, sim, ("a", 1)).status_code == 200
    # Records never hold the key itself.
    records = sim.requests()
    assert {r.key for r in records} == {
        None,
        key_fingerprint(f"Bearer {KEY}"),
        key_fingerprint("nope"),
        key_fingerprint("other-key"),
        key_fingerprint(KEY),
    }
    assert all(KEY not in repr(r) for r in records)


def test_unknown_path_and_wrong_method(http: requests.Session, sim: WetbotSimulator) -> None:
    for path in ("/guilds", f"/guilds/{GUILD}/users/{USER}/wallet", f"/guilds/{GUILD}/wormholes/x/spawn"):
        r = http.get(sim.url + path, headers=AUTH, timeout=5)
        assert r.status_code == 404
        assert r.json()["code"] == 404
    r = http.get(inv_url(sim), headers=AUTH, timeout=5)
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    assert r.json() == {"code": 405, "message": "Method not allowed"}
    assert http.delete(user_url(sim), headers=AUTH, timeout=5).status_code == 405
    # One trailing slash is tolerated.
    assert http.get(user_url(sim) + "/", headers=AUTH, timeout=5).status_code == 200


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "valid JSON"),
        (b"[1]", "JSON object"),
        (b"{}", "'items'"),
        (b'{"items": []}', "'items'"),
        (b'{"items": {"itemID": "a", "amount": 1}}', "'items'"),
        (b'{"items": [5]}', "items[0] must be an object"),
        (b'{"items": [{"amount": 1}]}', "items[0].itemID"),
        (b'{"items": [{"itemID": "", "amount": 1}]}', "items[0].itemID"),
        (b'{"items": [{"itemID": 7, "amount": 1}]}', "items[0].itemID"),
        (b'{"items": [{"itemID": "a"}]}', "items[0].amount"),
        (b'{"items": [{"itemID": "a", "amount": "1"}]}', "items[0].amount"),
        (b'{"items": [{"itemID": "a", "amount": true}]}', "items[0].amount"),
        (b'{"items": [{"itemID": "a", "amount": 1000000001}]}', "items[0].amount"),
        (b'{"items": [{"itemID": "a", "amount": -1000000000.5}]}', "items[0].amount"),
        (b'{"items": [{"itemID": "a", "amount": NaN}]}', "items[0].amount"),
        (b'{"items": [{"itemID": "a", "amount": Infinity}]}', "items[0].amount"),
        (b'{"items": [{"itemID": "a", "amount": 1e400}]}', "items[0].amount"),
        (b'{"items": [{"itemID": "a", "amount": 1}, {"itemID": "b", "amount": null}]}', "items[1].amount"),
    ],
)
def test_validation_errors(http: requests.Session, sim: WetbotSimulator, body: bytes, fragment: str) -> None:
    r = http.post(inv_url(sim), data=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400
    assert r.json()["code"] == 400
    assert fragment in r.json()["message"]
    assert sim.applied() == []
    assert sim.inventory(GUILD, USER) == {}


def test_validation_limits_and_content_type(http: requests.Session, sim: WetbotSimulator) -> None:
    assert grant(http, sim, ("a", 1e9), ("b", -1e9)).status_code == 200
    assert grant(http, sim, *[(f"i{n}", 1) for n in range(101)]).status_code == 400
    assert grant(http, sim, *[(f"i{n}", 1) for n in range(100)]).status_code == 200
    body = b'{"items": [{"itemID": "a", "amount": 1}]}'
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = dict(AUTH) if content_type is None else {**AUTH, "Content-Type": content_type}
        r = http.post(inv_url(sim), data=body, headers=headers, timeout=5)
        assert r.status_code == 400
        assert "Content-Type" in r.json()["message"]
    ok = http.post(inv_url(sim), data=body, headers={**AUTH, "Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_unknown_item_with_catalogue_is_404_and_atomic(
    http: requests.Session, make_sim: Callable[..., WetbotSimulator]
) -> None:
    sim = make_sim(items={GUILD: ["lxobim9a", "lxobim9b"]})
    r = grant(http, sim, ("lxobim9a", 1), ("ghost", 1))
    assert r.status_code == 404
    assert r.json() == {"code": 404, "message": "Item not found: ghost"}
    # All or nothing: the valid item of the rejected request was not applied.
    assert sim.inventory(GUILD, USER) == {}
    assert sim.applied() == []
    assert grant(http, sim, ("lxobim9a", 1), ("lxobim9b", 2)).status_code == 200
    # A validation error anywhere in the array also applies nothing.
    body = b'{"items": [{"itemID": "lxobim9a", "amount": 1}, {"itemID": "lxobim9b", "amount": NaN}]}'
    r = http.post(inv_url(sim), data=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400
    assert sim.inventory(GUILD, USER) == {"lxobim9a": 1.0, "lxobim9b": 2.0}


# ---------------------------------------------------------------- rate limit


def test_sliding_window(http: requests.Session, make_sim: Callable[..., WetbotSimulator]) -> None:
    sim = make_sim(limit=3, window_s=0.5)
    assert [grant(http, sim, ("a", 1)).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert sim.requests()[-1].status == 429
    assert grant(http, sim, ("a", 1)).json() == {"code": 429, "message": "Too many requests"}
    assert "Retry-After" not in grant(http, sim, ("a", 1)).headers
    assert sim.inventory(GUILD, USER) == {"a": 3.0}
    time.sleep(0.6)
    assert grant(http, sim, ("a", 1)).status_code == 200
    # Without a known key the limiter still keys on the raw header value; other keys are not affected.
    other = {"Authorization": "other"}
    assert [grant(http, sim, ("a", 1), headers=other).status_code for _ in range(4)] == [401, 401, 401, 429]


@pytest.mark.parametrize("count_rejected", [True, False])
def test_rejected_requests_count_when_configured(
    http: requests.Session, make_sim: Callable[..., WetbotSimulator], count_rejected: bool
) -> None:
    sim = make_sim(limit=3, window_s=0.6, count_rejected=count_rejected)
    assert [grant(http, sim, ("a", 1)).status_code for _ in range(3)] == [200, 200, 200]
    time.sleep(0.3)
    assert grant(http, sim, ("a", 1)).status_code == 429  # t~0.3
    time.sleep(0.4)  # t~0.7: the first three have left the window, the 429 (if counted) has not
    statuses = [grant(http, sim, ("a", 1)).status_code for _ in range(3)]
    assert statuses == ([200, 200, 429] if count_rejected else [200, 200, 200])
    # Arrivals may exceed the limit (the client sent too many); admitted requests never do.
    assert sim.max_in_window() == 4
    assert sim.max_in_window(statuses={200}) == 3


def test_retry_after_header(http: requests.Session, make_sim: Callable[..., WetbotSimulator]) -> None:
    sim = make_sim(limit=2, window_s=2.0, retry_after=True)
    assert grant(http, sim, ("a", 1)).status_code == 200
    assert grant(http, sim, ("a", 1)).status_code == 200
    r = grant(http, sim, ("a", 1))
    assert r.status_code == 429
    assert r.headers["Retry-After"] in {"1", "2"}


def test_set_limit_and_max_in_window(http: requests.Session, make_sim: Callable[..., WetbotSimulator]) -> None:
    sim = make_sim(limit=10, window_s=60)
    for _ in range(4):
        grant(http, sim, ("a", 1))
    assert sim.max_in_window() == 4
    assert sim.max_in_window(statuses={429}) == 0
    sim.set_limit(2, 60)
    assert grant(http, sim, ("a", 1)).status_code == 429
    assert sim.max_in_window(statuses={200}) == 4
    assert sim.max_in_window(key=KEY) == 5
    assert sim.max_in_window(key="other") == 0
    time.sleep(0.25)
    grant(http, sim, ("a", 1))
    # A window shorter than the gap separates the bursts.
    assert sim.max_in_window(0.2) == 5
    assert sim.max_in_window(10) == 6


# ---------------------------------------------------------------- faults


def test_fault_500_before_and_status(http: requests.Session, sim: WetbotSimulator) -> None:
    sim.inject("500_before")
    sim.inject("status", status=503, message="Service unavailable")
    r = grant(http, sim, ("a", 1))
    assert (r.status_code, r.json()) == (500, {"code": 500, "message": "Internal server error"})
    r = grant(http, sim, ("a", 1))
    assert (r.status_code, r.json()) == (503, {"code": 503, "message": "Service unavailable"})
    assert sim.applied() == []
    assert grant(http, sim, ("a", 1)).status_code == 200  # faults consumed
    assert [r.fault for r in sim.requests()] == ["500_before", "status", None]


def test_fault_drop_before(http: requests.Session, sim: WetbotSimulator) -> None:
    sim.inject("drop_before")
    with pytest.raises(requests.ConnectionError):
        grant(http, sim, ("a", 1))
    assert sim.applied() == []
    assert sim.requests()[-1].status == NO_RESPONSE
    assert grant(http, sim, ("a", 1)).status_code == 200


def test_fault_500_after_applies(http: requests.Session, sim: WetbotSimulator) -> None:
    sim.inject("500_after")
    assert grant(http, sim, ("a", 1)).status_code == 500
    assert sim.inventory(GUILD, USER) == {"a": 1.0}
    assert len(sim.applied()) == 1


def test_fault_slow_after_applies_despite_read_timeout(http: requests.Session, sim: WetbotSimulator) -> None:
    sim.inject("slow_after", delay_s=1.0)
    with pytest.raises(requests.ReadTimeout):
        grant(http, sim, ("a", 1), timeout=0.3)
    assert sim.inventory(GUILD, USER) == {"a": 1.0}
    wait_for(lambda: sim.count_status(200) == 1)
    assert sim.requests()[-1].fault == "slow_after"


def test_fault_stall_before_applies_nothing_when_client_leaves(http: requests.Session, sim: WetbotSimulator) -> None:
    sim.inject("stall_before", delay_s=1.0)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        grant(http, sim, ("a", 1), timeout=0.3)
    http.close()  # make sure the client's socket is closed, as a killed worker's would be
    wait_for(lambda: len(sim.requests()) == 1)
    assert sim.requests()[0].status == NO_RESPONSE
    assert time.monotonic() - started < 1.5
    assert sim.applied() == []
    assert sim.inventory(GUILD, USER) == {}


def test_fault_stall_before_applies_when_client_waits(http: requests.Session, sim: WetbotSimulator) -> None:
    sim.inject("stall_before", delay_s=0.3)
    started = time.monotonic()
    assert grant(http, sim, ("a", 1), timeout=3).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert sim.inventory(GUILD, USER) == {"a": 1.0}


def test_fault_html_200_applies_nothing_and_html_200_after_applies(
    http: requests.Session, sim: WetbotSimulator
) -> None:
    sim.inject("html_200")
    sim.inject("html_200_after")
    for _ in range(2):
        r = grant(http, sim, ("a", 1))
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/html")
        assert r.text.startswith("<!DOCTYPE html>")
    assert sim.inventory(GUILD, USER) == {"a": 1.0}  # only the second one reached WetBot
    assert len(sim.applied()) == 1
    assert [(r.status, r.fault) for r in sim.requests()] == [(200, "html_200"), (200, "html_200_after")]
    assert grant(http, sim, ("a", 1)).json()["code"] == 200  # faults consumed


def test_each_record_names_the_shape_its_answer_was_in(http: requests.Session, sim: WetbotSimulator) -> None:
    """What a client received is on its record: the profile's shape, or None when the answer held no profile."""
    grant(http, sim, ("a", 1))
    sim.set_profile_shape("not_object")
    assert isinstance(grant(http, sim, ("a", 1)).json()["response"], list)
    assert isinstance(http.get(user_url(sim), headers=AUTH, timeout=5).json()["response"], list)
    assert http.patch(user_url(sim), json={"xp": 1}, headers=AUTH, timeout=5).json()["response"]["xp"] == 1
    sim.inject("500_after")
    sim.inject("html_200_after")
    assert grant(http, sim, ("a", 1)).status_code == 500
    assert grant(http, sim, ("a", 1)).status_code == 200
    assert http.post(inv_url(sim), json={"items": []}, headers=AUTH, timeout=5).status_code == 400
    expected = [
        ("POST", 200, "documented"),
        ("POST", 200, "not_object"),
        ("GET", 200, "not_object"),
        ("PATCH", 200, "documented"),  # PATCH answers are never reshaped
        ("POST", 500, None),
        ("POST", 200, None),
        ("POST", 400, None),
    ]
    assert [(r.method, r.status, r.shape) for r in sim.requests()] == expected
    records = http.get(f"{sim.root_url}/_sim/requests", timeout=5).json()["requests"]
    assert [(r["method"], r["status"], r["shape"]) for r in records] == expected


def test_fault_filters_and_count(http: requests.Session, sim: WetbotSimulator) -> None:
    sim.inject("500_before", count=2, user_id="2")
    assert grant(http, sim, ("a", 1), user="1").status_code == 200
    assert grant(http, sim, ("a", 1), user="2").status_code == 500
    assert grant(http, sim, ("a", 1), user="2").status_code == 500
    assert grant(http, sim, ("a", 1), user="2").status_code == 200
    sim.inject("500_before", method="POST")
    assert http.get(user_url(sim), headers=AUTH, timeout=5).status_code == 200
    assert grant(http, sim, ("a", 1)).status_code == 500
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.inject("explode")


def test_faults_come_after_auth_and_count_in_window(
    http: requests.Session, make_sim: Callable[..., WetbotSimulator]
) -> None:
    sim = make_sim(limit=2, window_s=30)
    sim.inject("500_before")
    assert grant(http, sim, ("a", 1), headers={"Authorization": "wrong"}).status_code == 401  # not consumed
    assert grant(http, sim, ("a", 1)).status_code == 500
    assert grant(http, sim, ("a", 1)).status_code == 200
    assert grant(http, sim, ("a", 1)).status_code == 429


# ---------------------------------------------------------------- lifecycle and control endpoints


def test_stop_closes_kept_alive_connections_and_restart_keeps_state(
    http: requests.Session, sim: WetbotSimulator
) -> None:
    assert grant(http, sim, ("a", 1)).status_code == 200
    url = sim.url
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        grant(http, sim, ("a", 1), timeout=2)
    sim.start()
    assert sim.url == url
    assert grant(http, sim, ("a", 1)).json()["response"]["inventory"][0]["amount"] == 2
    sim.reset()
    assert sim.inventory(GUILD, USER) == {}
    assert sim.requests() == []
    assert sim.applied() == []


def test_stop_during_slow_after_answers_nothing(http: requests.Session, sim: WetbotSimulator) -> None:
    sim.inject("slow_after", delay_s=30)
    result: list[BaseException | int] = []

    def call() -> None:
        try:
            result.append(grant(http, sim, ("a", 1), timeout=10).status_code)
        except requests.RequestException as exc:
            result.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: sim.inventory(GUILD, USER) == {"a": 1.0})
    started = time.monotonic()
    sim.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 2
    assert len(result) == 1
    assert isinstance(result[0], requests.ConnectionError)
    assert sim.requests()[-1].status == NO_RESPONSE


@pytest.mark.parametrize("fault", ["slow_after", "stall_before"])
def test_stop_returns_once_a_held_request_is_recorded(
    http: requests.Session, sim: WetbotSimulator, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    # A handler thread starved after stop() woke it: the record must still come before the client's
    # connection is cut (a caller that saw the cut and read the log found nothing).
    record = sim._record

    def slow_record(*args: Any) -> None:
        time.sleep(0.3)
        record(*args)

    sim.inject(fault, delay_s=30)
    result: list[BaseException | int] = []

    def call() -> None:
        try:
            result.append(grant(http, sim, ("a", 1), timeout=10).status_code)
        except requests.RequestException as exc:
            result.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: sim._server is not None and sim._server._holding == 1)  # the handler holds the request
    monkeypatch.setattr(sim, "_record", slow_record)
    sim.stop()
    caller.join(timeout=5)
    assert [r.status for r in sim.requests()] == [NO_RESPONSE]


def test_control_endpoints(http: requests.Session, sim: WetbotSimulator) -> None:
    root = sim.root_url
    assert http.get(f"{root}/_sim/health", timeout=5).json() == {"ok": True, "url": sim.url}
    r = http.post(f"{root}/_sim/faults", json={"kind": "500_after", "count": 1}, timeout=5)
    assert r.json() == {"ok": True}
    assert grant(http, sim, ("a", 1.5)).status_code == 500
    applied = http.get(f"{root}/_sim/applied", timeout=5).json()["applied"]
    assert len(applied) == 1
    assert applied[0]["items"] == [["a", 1.5]]
    assert applied[0]["guild_id"] == GUILD
    records = http.get(f"{root}/_sim/requests", timeout=5).json()["requests"]
    assert [(r["method"], r["status"], r["key"], r["fault"]) for r in records] == [
        ("POST", 500, key_fingerprint(KEY), "500_after")
    ]
    assert http.get(f"{root}/_sim/inventory/{GUILD}/{USER}", timeout=5).json() == {"inventory": {"a": 1.5}}
    assert http.get(f"{root}/_sim/max_in_window?statuses=500", timeout=5).json() == {"max_in_window": 1}
    assert http.post(f"{root}/_sim/keys/revoke", json={"key": KEY}, timeout=5).ok
    assert grant(http, sim, ("a", 1)).status_code == 401
    assert http.post(f"{root}/_sim/keys/restore", json={"key": KEY}, timeout=5).ok
    assert http.post(f"{root}/_sim/limit", json={"limit": 1, "window_s": 30}, timeout=5).ok
    assert grant(http, sim, ("a", 1)).status_code == 429
    assert http.post(f"{root}/_sim/faults", json={"kind": "nope"}, timeout=5).status_code == 400
    assert http.get(f"{root}/_sim/nope", timeout=5).status_code == 404
    assert http.get(f"{root}/_sim/reset", timeout=5).status_code == 405
    assert http.post(f"{root}/_sim/reset", timeout=5).json() == {"ok": True}
    assert sim.requests() == []
    assert grant(http, sim, ("a", 1)).status_code == 200  # reset restored the constructor's limit
    # Control calls are neither logged nor rate limited.
    assert len(sim.requests()) == 1


def test_control_endpoints_can_be_disabled(http: requests.Session, make_sim: Callable[..., WetbotSimulator]) -> None:
    sim = make_sim(control=False)
    assert http.get(f"{sim.root_url}/_sim/health", headers=AUTH, timeout=5).status_code == 404


# ---------------------------------------------------------------- CLI


def test_parse_rate() -> None:
    assert parse_rate("10/60s") == (10, 60.0)
    assert parse_rate("3/500ms") == (3, 0.5)
    assert parse_rate("5/2m") == (5, 120.0)
    assert parse_rate("1/1") == (1, 1.0)
    assert parse_rate("2/.5s") == (2, 0.5)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rate("ten per minute")


def _read_line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no line from the simulator within {timeout}s (got {line!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"simulator exited early (got {line!r})")
        line += chunk
    return line.decode()


def test_cli_serves_and_logs_without_the_key(http: requests.Session) -> None:
    key = "cli-secret-key"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.wetbot",
            "--port",
            "0",
            "--key",
            key,
            "--guild",
            GUILD,
            "--rate",
            "2/60s",
            "--items",
            "lxobim9a,lxobim9b",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        banner = _read_line(proc)
        url = banner.split(" listening on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/api")
        body = {"items": [{"itemID": "lxobim9a", "amount": 1}]}
        r = http.post(f"{url}/guilds/{GUILD}/users/{USER}/inventory", json=body, headers={"Authorization": key})
        assert r.status_code == 200
        log = _read_line(proc)
        assert f"POST /api/guilds/{GUILD}/users/{USER}/inventory 200" in log
        body = {"items": [{"itemID": "ghost", "amount": 1}]}
        r = http.post(f"{url}/guilds/{GUILD}/users/{USER}/inventory", json=body, headers={"Authorization": key})
        assert r.status_code == 404
        assert _read_line(proc).rstrip().endswith(" 404")
        assert http.post(f"{url}/guilds/{GUILD}/users/{USER}", headers={"Authorization": key}).status_code == 429
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert key not in banner + log + out.decode() + err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
