"""ETA: a waiting grant's place in its key's queue at that key's rate, a pause or block included."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from config.keyring import key_fingerprint
from config.settings import RateLimit, Settings
from simulator.wetbot import WetbotSimulator
from tests.conftest import API_KEY, GUILD, TOKEN, USER, DelivererFactory, SettingsFactory
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main as cli_main
from worker import key_health
from worker.effects import Park, StepEffects
from worker.eta import EtaEstimator, WaitReason, describe_wait, request_start
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter

OTHER_GUILD = "444444444444444444"
OTHER_KEY = "test-other-key-91c2d7e0a4"


def member(n: int) -> str:
    return f"5{n:017d}"


def add(ledger: Ledger, key: str, *, user: str = USER, guild: str = GUILD) -> str:
    new = NewGrant(guild, user, (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{key}")
    return ledger.create(new).grant.id


def estimator(redis: Redis, settings: Settings) -> EtaEstimator:
    return EtaEstimator.build(redis, settings, settings.keyring(GUILD))


def eta_of(redis: Redis, settings: Settings, ledger: Ledger, grant_id: str) -> object:
    grant = ledger.get(grant_id)
    assert grant is not None
    return estimator(redis, settings).for_grants([grant])[grant_id]


@pytest.mark.parametrize(("members", "shown"), [(50, "in about 4 min"), (51, "in about 5 min")])
def test_a_gift_bomb_shows_when_its_last_recipient_gets_the_items(
    make_settings: SettingsFactory, ledger: Ledger, redis: Redis, members: int, shown: str
) -> None:
    # At 10 requests a minute the first 10 go at once, then 10 a minute: request 50 starts after 4 windows.
    ids = [add(ledger, f"gift-{n}", user=member(n)) for n in range(members)]
    settings = make_settings()
    etas = estimator(redis, settings).for_grants([g for g in (ledger.get(i) for i in ids) if g is not None])
    last = etas[ids[-1]]
    assert last.requests_ahead == members - 1
    assert last.describe().startswith(shown) and last.waiting_for == "rate limit"
    assert etas[ids[0]].describe() == "now" and etas[ids[9]].describe() == "now (9 request(s) ahead)"
    assert 59 < etas[ids[10]].in_s < 62  # type: ignore[operator]
    in_s = [etas[i].in_s for i in ids]
    assert in_s == sorted(in_s), "oldest first"  # type: ignore[type-var]


def test_the_estimate_counts_the_window_already_used_and_one_request_per_member(
    make_settings: SettingsFactory, make_deliverer: DelivererFactory, ledger: Ledger, redis: Redis, sim: WetbotSimulator
) -> None:
    settings = make_settings(wetbot_rate_limit="2/60s")
    sim.set_limit(2, 60)
    deliverer = make_deliverer(settings)
    for n in range(2):
        deliverer.deliver(add(ledger, f"sent-{n}", user=member(n)))
    assert len(sim.requests()) == 2
    same_member = [add(ledger, f"same-{n}") for n in range(3)]  # one merged request
    behind = add(ledger, "behind", user=member(9))
    eta_same = eta_of(redis, settings, ledger, same_member[2])
    eta_behind = eta_of(redis, settings, ledger, behind)
    assert eta_same.requests_ahead == 0 and 59 < eta_same.in_s < 62  # type: ignore[attr-defined]
    assert eta_behind.requests_ahead == 1 and 59 < eta_behind.in_s < 62  # type: ignore[attr-defined]
    third = add(ledger, "third", user=member(8))
    assert 119 < eta_of(redis, settings, ledger, third).in_s < 123  # type: ignore[attr-defined]


def test_a_paused_or_blocked_key_moves_the_estimate_back(
    make_settings: SettingsFactory, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    settings = make_settings()
    grant_id = add(ledger, "waiting")
    key_id = key_fingerprint(API_KEY)
    key_health.pause(redis, keys, key_id, GUILD, "HTTP 401", 300)
    paused = eta_of(redis, settings, ledger, grant_id)
    assert paused.waiting_for == "key paused" and 295 < paused.in_s <= 300  # type: ignore[attr-defined]
    key_health.clear(redis, keys, key_id, GUILD)
    seconds, micros = redis.time()  # type: ignore[misc]
    redis.set(keys.rate_block(key_id), (int(seconds) + 40) * 1_000_000 + int(micros))
    blocked = eta_of(redis, settings, ledger, grant_id)
    assert blocked.waiting_for == "rate limit" and 38 < blocked.in_s <= 40  # type: ignore[attr-defined]


def test_another_keys_backlog_does_not_move_the_estimate(
    make_settings: SettingsFactory, ledger: Ledger, redis: Redis
) -> None:
    settings = make_settings(wetbot_api_keys=f"{OTHER_GUILD}={OTHER_KEY}")
    for n in range(40):
        add(ledger, f"a-{n}", user=member(n))
    lone = add(ledger, "b", guild=OTHER_GUILD)
    eta = eta_of(redis, settings, ledger, lone)
    assert eta.describe() == "now" and eta.requests_ahead == 0  # type: ignore[attr-defined]


def test_parked_and_final_grants(make_settings: SettingsFactory, ledger: Ledger, redis: Redis) -> None:
    settings = make_settings()
    parked = add(ledger, "parked")
    assert ledger.transition(parked, GrantState.PARKED, "waiting for a link")
    eta = eta_of(redis, settings, ledger, parked)
    assert eta.at is None and eta.describe() == "waits for a Discord link"  # type: ignore[attr-defined]
    done = add(ledger, "done")
    assert ledger.transition(done, GrantState.CANCELLED, "test")
    assert estimator(redis, settings).for_grants([ledger.get(done)]) == {}  # type: ignore[list-item]


def test_a_parked_grant_waits_for_what_parked_it_whatever_its_last_error_says(
    make_settings: SettingsFactory, ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    # Parked for want of a key by a worker without it (this process has it): in the guild's key-parked index.
    for_key = add(ledger, "for-key")
    park = Park(keys.parked_for_key(GUILD), keys.key_parked_guilds(), GUILD)
    assert ledger.transition(for_key, GrantState.PARKED, "no key", last_error="", effects=StepEffects(park=park))
    # Parked for a link after an earlier refusal of the key: its last error names the key.
    for_link = add(ledger, "for-link")
    assert ledger.transition(for_link, GrantState.PARKED, "waiting for a link", last_error="API key refused (HTTP 401)")
    grants = [g for g in (ledger.get(i) for i in (for_key, for_link)) if g is not None]
    etas = estimator(redis, make_settings()).for_grants(grants)
    assert etas[for_key].waiting_for is WaitReason.API_KEY
    assert etas[for_key].describe() == "waits for an API key for its guild"
    assert etas[for_link].waiting_for is WaitReason.LINK
    assert etas[for_link].to_dict()["waiting_for"] == "link"


def test_a_grant_parked_for_a_link_waits_for_the_link_where_this_process_knows_no_key(
    make_settings: SettingsFactory, ledger: Ledger, redis: Redis
) -> None:
    # The CLI beside a demo service knows no key; what the grant waits for is still the viewer's link.
    parked = add(ledger, "parked-no-key")
    assert ledger.transition(parked, GrantState.PARKED, "waiting for a link")
    queued = add(ledger, "queued-no-key")
    settings = make_settings(wetbot_api_key=None)
    etas = EtaEstimator.build(redis, settings, settings.keyring(None)).for_grants(
        [g for g in (ledger.get(i) for i in (parked, queued)) if g is not None]
    )
    assert etas[parked].waiting_for is WaitReason.LINK
    assert etas[parked].describe() == "waits for a Discord link"
    assert etas[queued].waiting_for is WaitReason.API_KEY, "a queued grant without a key known here waits for one"


def test_api_and_cli_show_the_eta(
    make_settings: SettingsFactory, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings()
    ids = [add(ledger, f"g-{n}", user=member(n)) for n in range(25)]
    with TestClient(create_app(settings)) as client:
        view = client.get(f"/grants/{ids[-1]}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert view["eta"]["requests_ahead"] == 24 and view["eta"]["text"].startswith("in about 2 min")
    env = {
        "REDIS_URL": settings.redis_url,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "WETBOT_API_KEY": API_KEY,
        "REWARDS_FILE": str(settings.rewards_file),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli_main(["grants", "show", ids[-1]]) == 0
        assert "eta: in about 2 min (rate limit, 24 request(s) ahead)" in capsys.readouterr().out
        assert cli_main(["grants", "list", "--json", "--limit", "3"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert all(entry["eta"]["text"] for entry in listed)


def test_describe_wait() -> None:
    assert [describe_wait(s) for s in (0, 1.9, 12, 61, 241, 7200)] == [
        "now", "now", "in about 10 s", "in about 60 s", "in about 4 min", "in about 2 h",
    ]  # fmt: skip


def test_a_backlog_too_long_to_walk_is_counted_from_the_guilds_state_indexes(
    make_settings: SettingsFactory, ledger: Ledger, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 51 members with one grant each: read from the indexes, the estimate is the walk's (4 windows, 50 ahead)
    ids = [add(ledger, f"big-{n}", user=member(n)) for n in range(51)]
    other = add(ledger, "other-guild", guild=OTHER_GUILD)  # another guild of no key of ours: not ahead
    monkeypatch.setattr("worker.eta.MAX_SCANNED", 10)
    queries: list[str] = []

    def walk(self: EtaEstimator) -> tuple[float, list[object]]:
        queries.append("walked")
        return 0.0, []

    monkeypatch.setattr(EtaEstimator, "_queue", walk)
    grants = [g for g in (ledger.get(i) for i in [*ids, other]) if g is not None]
    etas = estimator(redis, make_settings()).for_grants(grants)
    assert queries == [], "the schedule was not walked"
    assert etas[ids[-1]].requests_ahead == 50 and etas[ids[-1]].describe().startswith("in about 5 min")
    assert etas[ids[0]].describe() == "now" and etas[ids[9]].requests_ahead == 9
    assert etas[other].waiting_for == "API key"


@pytest.mark.parametrize("blocked_s", [0.0, 30.0])
def test_request_start_gives_the_turn_the_limiters_script_gives(redis: Redis, keys: Keys, blocked_s: float) -> None:
    """``request_start`` is the estimate's (and the overview's) copy of ``lua/sliding_window.lua``'s turns."""
    limiter = SlidingWindowLimiter(redis, keys, RateLimit(3, 10.0))
    for _ in range(3):
        assert limiter.try_acquire("k").granted
    seconds, micros = redis.time()  # type: ignore[misc]
    now = int(seconds) + int(micros) / 1_000_000
    if blocked_s:
        redis.set(keys.rate_block("k"), int((now + blocked_s) * 1_000_000))
    held = limiter.held_slots("k", now)
    for ahead in range(8):
        before = redis_now(redis)
        decision = limiter.try_acquire("k", waiter=f"w{ahead}")
        after = redis_now(redis)
        assert not decision.granted
        turn = request_start(held, ahead, floor=now + blocked_s, limit=3, window_s=limiter.effective_window_s)
        # The script answers its turn less its own clock, read between ``before`` and ``after``.
        assert before + decision.wait_s - 1e-5 <= turn <= after + decision.wait_s + 1e-5, ahead


def redis_now(redis: Redis) -> float:
    seconds, micros = redis.time()  # type: ignore[misc]
    return int(seconds) + int(micros) / 1_000_000
