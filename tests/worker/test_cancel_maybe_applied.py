"""A grant ``retrying`` after an outcome that may have been applied (a read-back pending, or a resend under
``AMBIGUOUS_POLICY=retry``) is not "nothing reached WetBot": it cannot be cancelled, and a Patreon take-back
of it is left to an operator instead of cancelling it (which would leave the member the items)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from simulator.wetbot import WetbotSimulator
from tests.conftest import GUILD, USER, DelivererFactory, ScheduleDriver, SettingsFactory
from tests.producers.patreon.test_exactly_once import RULES, by_rule, linked, of_rule, send
from tests.producers.patreon.test_webhook import MARCH, SECRET
from wetbot_rewards.app import create_app
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger


@pytest.fixture
def patreon_settings(make_settings: SettingsFactory, rewards_file: Path) -> Settings:
    rewards_file.write_text(RULES, encoding="utf-8")
    return make_settings(patreon_webhook_secret=SECRET, wetbot_timeout_s=0.5)


@pytest.fixture
def client(patreon_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(patreon_settings)) as test_client:
        yield test_client


def test_a_grant_whose_read_back_is_pending_cannot_be_cancelled(
    make_settings: SettingsFactory, make_deliverer: DelivererFactory, ledger: Ledger, sim: WetbotSimulator
) -> None:
    deliverer = make_deliverer(make_settings(wetbot_timeout_s=0.5))
    grant_id = ledger.create(
        NewGrant(GUILD, USER, (GrantItem("gem", 2),), source="test", idempotency_key="t:x")
    ).grant.id
    sim.inject("500_after", method="POST")
    deliverer.deliver(grant_id)
    g = ledger.get(grant_id)
    assert g is not None and g.state == GrantState.RETRYING and g.verify_pending
    assert sim.inventory(GUILD, USER) == {"gem": 2.0}  # applied
    # A grant that may have been applied must not be cancellable as "not sent yet".
    assert not ledger.cancel(grant_id, "operator cancel")


def test_a_patreon_take_back_of_a_grant_awaiting_its_read_back_is_not_a_cancel(
    client: TestClient,
    patreon_settings: Settings,
    make_deliverer: DelivererFactory,
    ledger: Ledger,
    sim: WetbotSimulator,
    redis: Any,
    keys: Keys,
    driver: ScheduleDriver,
) -> None:
    deliverer = make_deliverer(patreon_settings)
    send(client, "members:pledge:create", linked(charge_date=MARCH))
    welcome = of_rule(ledger, "welcome")
    token = redis.hget(keys.grant(welcome.id), "dispatch").decode()
    sim.inject("500_after", method="POST")  # WetBot applies the crate, then answers 500
    deliverer.deliver(welcome.id, token)
    assert ledger.get(welcome.id).verify_pending  # type: ignore[union-attr]
    send(client, "members:pledge:delete", linked(charge_date=MARCH, will_pay_cents=0))
    driver.run(deliverer)
    # The patron left: what the welcome rule gave must be taken back (negative grant) or left to an operator.
    crates = sim.inventory(GUILD, USER).get("patron-crate", 0.0)
    assert crates == 0.0 or ledger.get(welcome.id).state != GrantState.CANCELLED, (  # type: ignore[union-attr]
        by_rule(ledger),
        [t.reason for t in ledger.history(welcome.id)],
        sim.inventory(GUILD, USER),
    )
