"""``POST /webhooks/patreon`` end to end: real app and Redis, plus a real worker and the simulator for delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from producers.counters import read_counters
from producers.patreon import members as patreon_members
from producers.patreon import rules as patreon_rules
from producers.patreon.members import MemberStore
from producers.patreon.rules import Plan
from producers.patreon.samples import USER_ID, Member, encode, portal_test
from producers.patreon.webhook import MAX_BODY_BYTES
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, TOKEN, USER, RunningWorker, SettingsFactory, wait_for
from tests.producers.patreon.test_events import sample
from wetbot_rewards.app import create_app
from worker.grant import Grant, GrantState
from worker.keys import Keys
from worker.ledger import Ledger

SECRET = "patreon-webhook-secret-9d2c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARCH = "2024-03-08T08:24:05.000+00:00"
APRIL = "2024-04-08T09:02:11.000+00:00"
MAY = "2024-05-08T09:00:00.000+00:00"
MEMBER = "0c9a3f7e-1b2d-4e5f-8a6b-7c8d9e0f1a2b"

RULES = f"""
guild_id = "{GUILD}"

[[patreon.rules]]
name = "welcome"
event = "members:pledge:create"
revoke_on = ["members:pledge:delete"]
items = [{{ id = "patron-crate", amount = 1 }}]

[[patreon.rules]]
name = "monthly"
event = "renewal"
min_cents = 500
items = [{{ id = "monthly-crate", amount = 2 }}]

[[patreon.rules]]
name = "upgrade"
event = "members:pledge:update"
upgrade_only = true
items = [{{ id = "upgrade-gift", amount = 1 }}]
"""


@pytest.fixture
def patreon_settings(make_settings: SettingsFactory, rewards_file: Path) -> Settings:
    rewards_file.write_text(RULES, encoding="utf-8")
    return make_settings(patreon_webhook_secret=SECRET)


@pytest.fixture
def client(patreon_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(patreon_settings)) as test_client:
        yield test_client


def sign(body: bytes, secret: str = SECRET) -> str:
    """Computed here, independently of the code under test: hex HMAC-MD5 of the raw bytes."""
    return hmac.new(secret.encode(), body, hashlib.md5).hexdigest()


def deliver(client: TestClient, trigger: str, body: bytes, *, signature: str | None = None, **headers: str) -> Any:
    sent = {
        "Content-Type": "application/json",
        "X-Patreon-Event": trigger,
        "X-Patreon-Signature": sign(body) if signature is None else signature,
        **headers,
    }
    return client.post("/webhooks/patreon", content=body, headers=sent)


def member_event(client: TestClient, trigger: str, **member: Any) -> Any:
    return deliver(client, trigger, encode(Member(**member).document()))


def grants(ledger: Ledger) -> list[Grant]:
    return sorted(ledger.list_grants(limit=1000), key=lambda g: g.created_at)


def summary(ledger: Ledger) -> list[tuple[str, str, tuple[tuple[str, float], ...]]]:
    return [(g.rule, g.user_id, tuple((i.item_id, i.amount) for i in g.items)) for g in grants(ledger)]


# -- verification ---------------------------------------------------------------------------------------


def test_the_signature_is_hmac_md5_of_the_raw_bytes(client: TestClient, ledger: Ledger) -> None:
    body = sample("members_pledge_create_discord_linked.json")  # pretty-printed: not how Python would write it
    assert deliver(client, "members:pledge:create", body, signature="0" * 32).status_code == 403
    assert deliver(client, "members:pledge:create", body, signature="").status_code == 403
    missing = client.post("/webhooks/patreon", content=body, headers={"X-Patreon-Event": "members:pledge:create"})
    assert missing.status_code == 403 and SECRET not in missing.text
    reserialised = json.dumps(json.loads(body)).encode()
    assert deliver(client, "members:pledge:create", reserialised, signature=sign(body)).status_code == 403
    assert deliver(client, "members:pledge:create", body, signature=sign(body, "other-secret")).status_code == 403
    assert grants(ledger) == []

    response = deliver(client, "members:pledge:create", body, signature=sign(body).upper())
    assert response.status_code == 200 and response.json()["outcome"] == "granted"
    [grant] = grants(ledger)
    assert response.json()["granted"] == [grant.id]
    assert (grant.user_id, grant.guild_id, grant.rule, grant.source) == (
        "123456789012345678",
        GUILD,
        "welcome",
        "patreon",
    )
    assert grant.idempotency_key == f"patreon:{MEMBER}:pledge-20240308T082358Z-20240308T082405Z:welcome"
    assert (grant.platform, grant.external_id) == ("patreon", "11223344")
    counters = read_counters(client.app.state.wetbot.redis, client.app.state.wetbot.keys)  # type: ignore[attr-defined]
    assert counters["patreon.rejected"] == 5 and counters["patreon.members:pledge:create.granted"] == 1


def test_a_bad_signature_logs_nothing_derived_from_the_right_one(
    client: TestClient, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    body = encode(Member(discord_id=USER).document())
    expected = sign(body)
    for wrong in ("", "z" * 32, sign(body, "other-secret")):
        assert deliver(client, "members:pledge:create", body, signature=wrong).status_code == 403
    assert "bad signature" in caplog.text  # the rejection is still logged
    logged = caplog.text
    leaked = {expected[i : i + 4] for i in range(len(expected) - 3)} & {
        logged[i : i + 4] for i in range(len(logged) - 3)
    }
    assert not leaked and SECRET not in caplog.text
    assert grants(ledger) == []


def test_without_a_secret_the_endpoint_answers_503(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings())) as client:
        body = encode(Member().document())
        assert deliver(client, "members:pledge:create", body).status_code == 503


def test_signed_deliveries_the_rules_cannot_read_are_kept_and_answered_200(client: TestClient, ledger: Ledger) -> None:
    """Patreon pauses the whole webhook after repeated failures: an odd delivery must not stop every reward."""
    inbox = client.app.state.wetbot.inbox  # type: ignore[attr-defined]
    for body in (b"{not json", b"[]", b'{"data": {"type": "member", "id": 5}}'):
        response = deliver(client, "members:update", body)
        assert response.status_code == 200 and response.json()["outcome"] == "unusable", body
        assert inbox.get(response.json()["event_id"]).body == body
    no_trigger = client.post("/webhooks/patreon", content=b"{}", headers={"X-Patreon-Signature": sign(b"{}")})
    assert no_trigger.status_code == 200 and "X-Patreon-Event" in no_trigger.json()["error"]
    assert grants(ledger) == []
    counters = read_counters(client.app.state.wetbot.redis, client.app.state.wetbot.keys)  # type: ignore[attr-defined]
    assert counters["patreon.unusable"] == 4


def test_dates_at_the_ends_of_the_calendar_are_read_or_refused_never_a_500(
    make_settings: SettingsFactory, rewards_file: Path, ledger: Ledger
) -> None:
    rewards_file.write_text(RULES, encoding="utf-8")
    with TestClient(create_app(make_settings(patreon_webhook_secret=SECRET)), raise_server_exceptions=False) as client:
        year_one = "0001-01-01T00:00:00.000+00:00"
        assert member_event(client, "members:update", discord_id=USER, pledge_start=year_one).status_code == 200
        assert member_event(client, "members:update", discord_id=USER, charge_date=year_one).status_code == 200
        assert member_event(client, "members:pledge:create", discord_id=USER, pledge_start=year_one).status_code == 200
        last = "9999-12-31T23:59:59+14:00"
        assert member_event(client, "members:update", discord_id=USER, charge_date=last).status_code == 200
        no_utc_form = member_event(client, "members:update", pledge_start="0001-01-01T00:00:00+01:00")
        assert no_utc_form.status_code == 200 and no_utc_form.json()["outcome"] == "unusable"
        assert "pledge_relationship_start" in no_utc_form.json()["error"]
    # A March charge 2023 years after its pledge began is a renewal; then the pledge; then the last renewal.
    assert [g.idempotency_key for g in grants(ledger)] == [
        f"patreon:{MEMBER}:charge-20240308T082405Z:monthly",
        f"patreon:{MEMBER}:pledge-00010101T000000Z-20240308T082405Z:welcome",
        f"patreon:{MEMBER}:charge-99991231T095959Z:monthly",
    ]


def test_bodies_are_capped_large_not_small(client: TestClient, ledger: Ledger) -> None:
    big = Member(discord_id=USER).document()
    big["included"][1]["attributes"]["about"] = "x" * 100_000  # far beyond a real 17.6 KB body
    assert member_event(client, "members:pledge:create", discord_id=USER).status_code == 200
    assert deliver(client, "members:update", encode(big)).status_code == 200
    too_big = b" " * (MAX_BODY_BYTES + 1)
    assert deliver(client, "members:update", too_big).status_code == 413
    chunked = (b" " * 1024 * 1024 for _ in range(5))  # no Content-Length: counted as it streams in
    headers = {"X-Patreon-Event": "members:update", "X-Patreon-Signature": "0" * 32}
    assert client.post("/webhooks/patreon", content=chunked, headers=headers).status_code == 413


def test_the_portal_test_payload_is_acknowledged_and_grants_nothing(
    client: TestClient, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="wetbot_rewards.patreon")
    body = encode(portal_test())
    assert deliver(client, "members:pledge:create", body).status_code == 200
    assert grants(ledger) == [] and "portal test delivery" in caplog.text


def test_authentic_events_no_rule_wants_are_acknowledged_and_counted(client: TestClient, ledger: Ledger) -> None:
    assert deliver(client, "posts:publish", sample("posts_publish.json")).status_code == 200
    assert deliver(client, "members:create", sample("members_create.json")).status_code == 200
    # A real capture with no Discord account; no rule takes a pledge change of unknown previous level.
    assert deliver(client, "members:pledge:update", sample("members_pledge_update.json")).status_code == 200
    assert deliver(client, "members:pledge:create", sample("members_pledge_create_portal_test.json")).status_code == 200
    assert grants(ledger) == []
    counters = read_counters(client.app.state.wetbot.redis, client.app.state.wetbot.keys)  # type: ignore[attr-defined]
    assert counters == {
        "patreon.other.ignored": 1,
        "patreon.members:create.ignored": 1,
        "patreon.members:pledge:update.ignored": 1,
        "patreon.test": 1,
    }


# -- the member's life, delivered ------------------------------------------------------------------------


def test_create_renewal_redelivery_and_cancel_net_out_in_the_inventory(
    client: TestClient,
    patreon_settings: Settings,
    ledger: Ledger,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
    redis: Any,
    keys: Keys,
) -> None:
    deliveries = [
        ("members:pledge:create", Member(discord_id=USER, charge_date=MARCH)),
        ("members:update", Member(discord_id=USER, charge_date=MARCH)),  # the pledge's own charge: no renewal
        ("members:update", Member(discord_id=USER, charge_date=APRIL)),  # renewal
        ("members:update", Member(discord_id=USER, charge_date=APRIL)),  # redelivered
        ("members:pledge:delete", Member(discord_id=USER, charge_date=APRIL, will_pay_cents=0)),
    ]
    workers(patreon_settings)
    for trigger, member in deliveries[:-1]:
        assert deliver(client, trigger, encode(member.document())).status_code == 200
    wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED)) == 2, timeout_s=15)
    trigger, member = deliveries[-1]  # cancelled after delivery: taken back with a negative grant
    assert deliver(client, trigger, encode(member.document())).status_code == 200
    assert summary(ledger) == [
        ("welcome", USER, (("patron-crate", 1.0),)),
        ("monthly", USER, (("monthly-crate", 2.0),)),
        ("welcome", USER, (("patron-crate", -1.0),)),
    ]
    welcome, monthly, revoke = grants(ledger)
    assert monthly.idempotency_key == f"patreon:{MEMBER}:charge-20240408T090211Z:monthly"
    assert revoke.idempotency_key == f"patreon-revoke:{welcome.id}"
    memory = MemberStore(redis, keys).load(MEMBER)
    assert memory.grants == {"monthly": (monthly.id,)} and memory.charge_date == "20240408T090211Z"

    # Patreon resumes a paused webhook and sends everything again: nothing new.
    for trigger, member in deliveries:
        assert deliver(client, trigger, encode(member.document())).status_code == 200
    assert len(grants(ledger)) == 3
    wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED)) == 3, timeout_s=15)
    assert sim.inventory(GUILD, USER) == {"patron-crate": 0.0, "monthly-crate": 2.0}


def test_an_unlinked_patron_is_parked_until_linked_then_delivered(
    client: TestClient,
    patreon_settings: Settings,
    ledger: Ledger,
    sim: WetbotSimulator,
    workers: Callable[..., RunningWorker],
) -> None:
    assert member_event(client, "members:pledge:create", charge_date=MARCH).status_code == 200
    assert member_event(client, "members:update", charge_date=APRIL).status_code == 200
    parked = grants(ledger)
    assert [(g.state, g.user_id, g.external_id) for g in parked] == [(GrantState.PARKED, "", USER_ID)] * 2
    workers(patreon_settings)
    link = {"platform": "patreon", "external_id": USER_ID, "discord_user_id": USER}
    response = client.post("/links", json=link, headers=AUTH)
    assert response.status_code == 201 and sorted(response.json()["released"]) == sorted(g.id for g in parked)
    wait_for(lambda: len(ledger.list_grants(GrantState.DELIVERED)) == 2, timeout_s=15)
    assert sim.inventory(GUILD, USER) == {"patron-crate": 1.0, "monthly-crate": 2.0}
    # Once linked, new grants go straight to the linked user.
    assert member_event(client, "members:update", charge_date=MAY).status_code == 200
    assert grants(ledger)[-1].user_id == USER and grants(ledger)[-1].state != GrantState.PARKED


def test_require_paid_grants_once_the_first_charge_is_paid(
    make_settings: SettingsFactory, rewards_file: Path, ledger: Ledger
) -> None:
    rewards_file.write_text(
        f'guild_id = "{GUILD}"\n[[patreon.rules]]\nname = "paid"\nevent = "members:pledge:create"\n'
        'require_paid = true\nrevoke_on = ["Refunded"]\nitems = [{ id = "crate", amount = 1 }]\n',
        encoding="utf-8",
    )
    with TestClient(create_app(make_settings(patreon_webhook_secret=SECRET))) as client:
        for _ in range(2):  # the pledge, redelivered
            response = member_event(
                client, "members:pledge:create", discord_id=USER, status="Pending", charge_date=MARCH
            )
            assert response.status_code == 200
        assert grants(ledger) == []
        assert (
            member_event(client, "members:update", discord_id=USER, status="Paid", charge_date=MARCH).status_code == 200
        )
        assert (
            member_event(client, "members:update", discord_id=USER, status="Paid", charge_date=MARCH).status_code == 200
        )
        # The pending pledge replayed after its grant: no new hold, nothing granted again.
        member_event(client, "members:pledge:create", discord_id=USER, status="Pending", charge_date=MARCH)
        assert member_event(client, "members:update", discord_id=USER, charge_date=MARCH).status_code == 200
        [grant] = grants(ledger)
        assert grant.items[0].amount == 1
        # A refund takes it back, once: not sent yet (no worker here), so it is cancelled.
        for _ in range(2):
            member_event(client, "members:update", discord_id=USER, status="Refunded", charge_date=MARCH)
        assert [(g.items[0].amount, g.state) for g in grants(ledger)] == [(1, GrantState.CANCELLED)]


def test_an_upgrade_grants_once_and_a_downgrade_not_at_all(client: TestClient, ledger: Ledger) -> None:
    gold, silver = (("9512023", 1000),), (("9512103", 500),)
    member_event(client, "members:pledge:create", discord_id=USER, charge_date=MARCH, tiers=silver)
    for _ in range(2):
        member_event(client, "members:pledge:update", discord_id=USER, charge_date=APRIL, tiers=gold)
    member_event(client, "members:pledge:update", discord_id=USER, charge_date=APRIL, tiers=silver)
    assert [g.rule for g in grants(ledger)] == ["welcome", "upgrade"]
    # The upgrade's own charge is not a renewal when it arrives as members:update too.
    member_event(client, "members:update", discord_id=USER, charge_date=APRIL, tiers=gold)
    assert [g.rule for g in grants(ledger)] == ["welcome", "upgrade"]


def test_a_delivery_racing_another_for_the_same_member_is_decided_again(
    make_settings: SettingsFactory,
    rewards_file: Path,
    ledger: Ledger,
    redis: Any,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rewards_file.write_text(
        f'guild_id = "{GUILD}"\n[[patreon.rules]]\nname = "paid"\nevent = "members:pledge:create"\n'
        'require_paid = true\nitems = [{ id = "crate", amount = 1 }]\n',
        encoding="utf-8",
    )
    store = MemberStore(redis, keys)
    real = patreon_rules.decide
    attempts: list[Plan] = []

    def racing(*args: Any) -> Plan:
        plan = real(*args)
        attempts.append(plan)
        if len(attempts) == 1:  # another web process stores the Pending pledge's hold right now
            redis.hset(
                store.key(MEMBER),
                mapping={
                    "first_paid": "0",
                    "charge_date": "20240308T082405Z",
                    "hold:paid": json.dumps({"fact": "pledge-x", "charge_date": "20240308T082405Z"}),
                },
            )
        return plan

    monkeypatch.setattr(patreon_members, "decide", racing)
    with TestClient(create_app(make_settings(patreon_webhook_secret=SECRET))) as client:
        assert member_event(client, "members:update", discord_id=USER, charge_date=MARCH).status_code == 200
    assert [len(plan.grants) for plan in attempts] == [0, 1]  # the first decision saw no hold; the second did
    [grant] = grants(ledger)
    assert grant.idempotency_key == f"patreon:{MEMBER}:pledge-x:paid"
    memory = store.load(MEMBER)
    assert memory.holds == {} and memory.grants == {"paid": (grant.id,)} and memory.first_paid is True


def test_a_member_always_losing_the_race_gets_a_503_and_nothing_written(
    client: TestClient, ledger: Ledger, redis: Any, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemberStore(redis, keys)
    real = patreon_rules.decide

    def always_racing(*args: Any) -> Plan:
        redis.hincrby(store.key(MEMBER), "noise", 1)
        return real(*args)

    monkeypatch.setattr(patreon_members, "decide", always_racing)
    response = member_event(client, "members:pledge:create", discord_id=USER, charge_date=MARCH)
    assert response.status_code == 503
    # Grants and memory are written in one step: a lost race leaves neither.
    assert store.load(MEMBER).grants == {} and grants(ledger) == []
    monkeypatch.setattr(patreon_members, "decide", real)
    assert member_event(client, "members:pledge:create", discord_id=USER, charge_date=MARCH).status_code == 200
    [grant] = grants(ledger)
    assert store.load(MEMBER).grants == {"welcome": (grant.id,)}
