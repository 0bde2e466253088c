"""Adversarial reproductions against "Many guilds" (config/keyring.py, worker/guild_clients.py, worker/runtime.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from config.errors import ConfigError
from config.settings import Settings
from simulator.wetbot import WetbotSimulator
from tests.conftest import API_KEY, GUILD, USER, ScheduleDriver, SettingsFactory
from worker.delivery import Deliverer
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger
from worker.runtime import worker_keyring

OTHER_GUILD = "444444444444444444"
Deliv = Callable[[Settings], Deliverer]


@pytest.mark.xfail(strict=True, reason="one key given to two guilds is accepted; WetBot keys belong to one guild")
def test_one_key_for_two_guilds_is_refused_at_start(
    make_settings: SettingsFactory, make_deliverer: Deliv, ledger: Ledger, sim: WetbotSimulator,
    driver: ScheduleDriver,
) -> None:  # fmt: skip
    """README "Many guilds": "WetBot keys belong to one guild ... every guild ... needs its own key".
    A copy-paste slip (``WETBOT_API_KEYS=<other guild>=<the home key>``) is accepted by
    ``parse_api_keys``/``Keyring.build``/``worker_keyring`` (``GuildClients`` even merges the two guilds
    onto one client and one rate window, by design). Every grant for the other guild then gets 403,
    which pauses the key for that guild and re-probes it for ever: the grants stay ``queued`` (no
    failure, never dead, never parked) and ``POST /grants`` keeps accepting more. A config that cannot
    work should stop the start, like a rule whose guild has no key does.
    """
    settings = make_settings(wetbot_api_keys=f"{OTHER_GUILD}={API_KEY}", wetbot_auth_pause_s=0.2)
    # What the worker does with it today: the other guild's grant is refused and waits, unseen by its state.
    new = NewGrant(OTHER_GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:other")
    grant_id = ledger.create(new).grant.id
    deliverer = make_deliverer(settings)
    for _ in range(3):
        deliverer.deliver(grant_id)
        driver.schedule.reschedule(grant_id, "", "", 0)
        time.sleep(0.25)
    stuck = ledger.get(grant_id)
    assert stuck is not None and stuck.state == GrantState.QUEUED and stuck.failures == 0
    assert {r.status for r in sim.requests()} == {403}
    assert sim.inventory(GUILD, USER) == {}
    with pytest.raises(ConfigError):
        worker_keyring(settings)
