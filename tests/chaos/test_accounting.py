"""The harness' accounting of what the faults explain (``devtools/chaos/harness.py``), on real simulator records."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from devtools.chaos.harness import is_ambiguous, sent_without_baseline
from simulator.wetbot import WetbotSimulator
from worker.grant import Grant, GrantState, grant_from_fields

GUILD = "111111111111111111"
KEY = "demo-key"
USER = "42"


@pytest.fixture
def sim() -> Iterator[WetbotSimulator]:
    with WetbotSimulator() as started:
        yield started


def answer(sim: WetbotSimulator, method: str, shape: str) -> bool:
    """Send one ``method`` request answered in ``shape``; whether the harness counts it ambiguous."""
    sim.set_profile_shape(shape)
    url = f"{sim.url}/guilds/{GUILD}/users/{USER}"
    with requests.Session() as http:
        http.trust_env = False
        http.headers["Authorization"] = KEY
        if method == "POST":
            response = http.post(f"{url}/inventory", json={"items": [{"itemID": "a", "amount": 1}]}, timeout=5)
        else:
            response = http.get(url, timeout=5)
    assert response.status_code == 200
    (record,) = sim.requests()
    return is_ambiguous(record)


@pytest.mark.parametrize(
    ("method", "shape", "ambiguous"),
    [
        # A 200 holding no profile object is no proof that WetBot applied the request.
        ("POST", "not_object", True),
        # WetBot's success envelope with a profile says it applied; only the inventory is unreadable.
        ("POST", "itemId", False),
        ("POST", "documented", False),
        # A read changes nothing, whatever its answer.
        ("GET", "not_object", False),
    ],
)
def test_a_200_in_a_drifted_shape_is_ambiguous_only_when_it_proves_nothing(
    sim: WetbotSimulator, method: str, shape: str, ambiguous: bool
) -> None:
    assert answer(sim, method, shape) is ambiguous


def unknown_grant(*, baseline_missing: str, last_error: str) -> Grant:
    return grant_from_fields(
        {
            "id": "g1",
            "state": GrantState.UNKNOWN.value,
            "guild_id": GUILD,
            "user_id": USER,
            "items": json.dumps([["a", 1]]),
            "source": "api",
            "idempotency_key": "k1",
            "created_at": "1",
            "updated_at": "2",
            "baseline_missing": baseline_missing,
            "last_error": last_error,
        }
    )


def test_sent_without_baseline_is_read_from_the_grants_field_not_its_error_text() -> None:
    assert sent_without_baseline(unknown_grant(baseline_missing="the key had no spare rate slot", last_error="held"))
    assert not sent_without_baseline(
        unknown_grant(baseline_missing="", last_error="an operator wrote: no baseline was read")
    )
