"""The webhook subscription sweep against the Twitch simulator, over real HTTP: missing ones created, failed
ones created again, our stale ones removed, others' untouched, 409s, Helix 5xx/429, the status snapshot, and a
webhook revocation recorded as a gap that has the Twitch process sweep and catch up at once."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from config.rewards import TwitchSection, parse_rewards
from producers.twitch.gaps import missed_periods
from producers.twitch.helix import HelixClient
from producers.twitch.oauth import OAuthClient
from producers.twitch.runner import PeriodicTask, TwitchRunner
from producers.twitch.subscription_status import SubscriptionStatusBook
from producers.twitch.subscription_sweep import SubscriptionSweep, SweepFailed, SweepPass, webhook_callback
from producers.twitch.subscriptions import WantedSubscription
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_CLIENT_ID as CLIENT_ID
from simulator.twitch import DEFAULT_CLIENT_SECRET as CLIENT_SECRET
from simulator.twitch import TwitchSimulator
from tests.conftest import API_KEY, GUILD, TEST_REDIS_URL, SettingsFactory, wait_for
from tests.producers.twitch.eventsub_rig import LoopThread, WiredTwitch
from tests.producers.twitch.test_cli import BROADCASTER, CALLBACK, GRANTED, arrange, creates
from tests.producers.twitch.test_runner import RULES, RunProcess
from tests.producers.twitch.test_samples import documented
from tests.producers.twitch.test_tokens import KEY, connect, make_oauth
from tests.producers.twitch.test_webhook import SECRET, post
from wetbot_rewards.app import create_app
from worker.keys import Keys

WAIT_S = 20.0
ELSEWHERE = "https://elsewhere.example/webhooks/twitch"
SUBSCRIPTIONS = "/helix/eventsub/subscriptions"
CHEER = WantedSubscription("channel.cheer", "1", {"broadcaster_user_id": BROADCASTER})
FOLLOW = WantedSubscription(
    "channel.follow", "2", {"broadcaster_user_id": BROADCASTER, "moderator_user_id": BROADCASTER}
)


@pytest.fixture
def twitch() -> Iterator[TwitchSimulator]:
    with TwitchSimulator() as made:
        made.set_subscription_page_size(2)  # every listing spans pages
        made.issue_user_token(scopes=GRANTED)  # the broadcaster authorised our app
        yield made


@pytest.fixture
def helix(twitch: TwitchSimulator) -> Iterator[HelixClient]:
    client = HelixClient(
        api_url=twitch.api_url, auth_url=twitch.auth_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    yield client
    client.close()


@pytest.fixture
def book(redis: Redis, keys: Keys) -> SubscriptionStatusBook:
    return SubscriptionStatusBook(redis, keys)


def listed(sim: TwitchSimulator) -> dict[str, tuple[str, str, str]]:
    """id -> (type, status, callback) of every subscription the simulator holds."""
    return {s.id: (s.type, s.status, s.callback) for s in sim.eventsub.subscriptions}


def active_of(sim: TwitchSimulator, kind: str, callback: str = CALLBACK) -> list[str]:
    return [
        s.id
        for s in sim.eventsub.subscriptions
        if s.type == kind
        and s.callback == callback
        and s.status in ("enabled", "webhook_callback_verification_pending")
    ]


def test_the_missing_are_created_once_and_the_snapshot_written(
    twitch: TwitchSimulator, helix: HelixClient, book: SubscriptionStatusBook
) -> None:
    before = time.time()
    report = SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER, FOLLOW])
    assert (report.created, report.kept, report.failed, report.removed) == (2, 0, 0, 0)
    assert len(active_of(twitch, "channel.cheer")) == 1 and len(active_of(twitch, "channel.follow")) == 1
    check = book.read()
    assert check is not None and check.error is None and check.transport == "webhook"
    assert before <= check.checked_at <= time.time()
    shown = {(e.type, e.version, e.condition, e.status, e.transport, e.ours) for e in check.subscriptions}
    assert shown == {
        ("channel.cheer", "1", "broadcaster_user_id=1337", "webhook_callback_verification_pending", "webhook", True),
        (
            "channel.follow",
            "2",
            "broadcaster_user_id=1337 moderator_user_id=1337",
            "webhook_callback_verification_pending",
            "webhook",
            True,
        ),
    }
    assert all(e.created_at and before <= e.checked_at for e in check.subscriptions)

    again = SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER, FOLLOW])
    assert (again.created, again.kept) == (0, 2)
    assert creates(twitch) == 2 + 0, "nothing created the second time"


@pytest.mark.parametrize("status", ["notification_failures_exceeded", "authorization_revoked", "user_removed"])
def test_ours_in_a_failed_or_revoked_state_are_created_again(
    twitch: TwitchSimulator, helix: HelixClient, book: SubscriptionStatusBook, status: str
) -> None:
    dead = arrange(twitch, CHEER.type, CHEER.version, CHEER.condition, CALLBACK, status=status)
    pending = arrange(twitch, FOLLOW.type, FOLLOW.version, FOLLOW.condition, CALLBACK)
    twitch.set_subscription_status(pending, "webhook_callback_verification_pending")  # on its way: kept
    report = SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER, FOLLOW])
    assert (report.created, report.kept) == (1, 1)
    assert f"removing channel.cheer v1 (broadcaster_user_id=1337): {status}" in [line for line, _ in report.lines]
    assert dead not in listed(twitch)
    [again] = active_of(twitch, "channel.cheer")
    assert again != dead
    assert active_of(twitch, "channel.follow") == [pending]
    check = book.read()
    assert check is not None
    assert {e.id: e.status for e in check.subscriptions} == {
        again: "webhook_callback_verification_pending",
        pending: "webhook_callback_verification_pending",
    }


def test_our_stale_ones_are_removed_and_others_never_touched(
    twitch: TwitchSimulator, helix: HelixClient, book: SubscriptionStatusBook
) -> None:
    stale = arrange(twitch, "channel.raid", "1", {"to_broadcaster_user_id": BROADCASTER}, CALLBACK)
    stale_dead = arrange(
        twitch, "channel.subscribe", "1", {"broadcaster_user_id": BROADCASTER}, CALLBACK, "user_removed"
    )
    foreign = arrange(twitch, "channel.raid", "1", {"to_broadcaster_user_id": "9001"}, ELSEWHERE)
    foreign_dead = arrange(
        twitch, "channel.raid", "1", {"from_broadcaster_user_id": BROADCASTER}, ELSEWHERE, "user_removed"
    )
    report = SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER])
    assert (report.created, report.removed) == (1, 2)
    remaining = listed(twitch)
    assert stale not in remaining and stale_dead not in remaining
    assert remaining[foreign] == ("channel.raid", "enabled", ELSEWHERE)
    assert remaining[foreign_dead] == ("channel.raid", "user_removed", ELSEWHERE)
    check = book.read()
    assert check is not None
    assert {e.id: e.ours for e in check.subscriptions if not e.ours} == {foreign: False, foreign_dead: False}
    # A dry run says what it would do and does nothing.
    arrange(twitch, "channel.raid", "1", {"to_broadcaster_user_id": BROADCASTER}, CALLBACK)
    posts = creates(twitch)
    dry = SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER, FOLLOW], dry_run=True)
    assert any(line.startswith("would remove stale channel.raid") for line, _ in dry.lines)
    assert "would create channel.follow v2 (broadcaster_user_id=1337 moderator_user_id=1337)" in [
        line for line, _ in dry.lines
    ]
    assert creates(twitch) == posts and len(active_of(twitch, "channel.raid")) == 1


def test_a_409_counts_as_existing(twitch: TwitchSimulator, helix: HelixClient, book: SubscriptionStatusBook) -> None:
    # Made by Twitch but answered 409 (a concurrent sweep, a lost answer): the list read again finds it ours.
    twitch.inject("status_after", path=SUBSCRIPTIONS, method="POST", status=409, message="subscription already exists")
    report = SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER])
    assert (report.created, report.kept, report.failed) == (0, 1, 0)
    assert len(active_of(twitch, "channel.cheer")) == 1
    check = book.read()
    assert check is not None and [e.type for e in check.subscriptions] == ["channel.cheer"]
    # Held by another callback: Twitch keys duplicates on type and condition; the line says where it sends.
    arrange(twitch, FOLLOW.type, FOLLOW.version, FOLLOW.condition, ELSEWHERE)
    report = SubscriptionSweep(helix, CALLBACK, SECRET, book).run([CHEER, FOLLOW])
    assert (report.created, report.kept, report.failed) == (0, 2, 0)
    assert any(f"already exists, sending to {ELSEWHERE}" in line for line, _ in report.lines)
    assert active_of(twitch, "channel.follow") == []


def periodic_section() -> TwitchSection:
    rules = [{"event": "channel.cheer", "name": "cheer", "per_bits": 100, "items": [{"id": "gem", "amount": 1}]}]
    return parse_rewards({"guild_id": GUILD, "twitch": {"rules": rules}}).twitch


def sweep_pass(helix: HelixClient, book: SubscriptionStatusBook, callback: str | None = CALLBACK) -> SweepPass:
    return SweepPass(
        helix=helix,
        section=periodic_section(),
        broadcaster_id=lambda: BROADCASTER,
        callback=callback,
        secret=SECRET,
        status=book,
    )


@pytest.mark.parametrize(
    ("method", "status"), [("GET", 503), ("GET", 429), ("POST", 500), ("POST", 429)], ids=lambda v: str(v)
)
def test_helix_5xx_or_429_fails_the_pass_and_the_next_one_retries(
    twitch: TwitchSimulator,
    helix: HelixClient,
    book: SubscriptionStatusBook,
    caplog: pytest.LogCaptureFixture,
    method: str,
    status: int,
) -> None:
    caplog.set_level(logging.WARNING, logger="wetbot_rewards.twitch")
    twitch.inject("status", path=SUBSCRIPTIONS, method=method, status=status, message="Try later")
    with pytest.raises(SweepFailed):
        SubscriptionSweep(helix, CALLBACK, SECRET).run([CHEER])
    twitch.inject("status", path=SUBSCRIPTIONS, method=method, status=status, message="Try later")
    periodic = sweep_pass(helix, book)
    assert periodic.run_once() is None
    check = book.read()
    assert check is not None and check.error is not None
    assert f"answered {status}" in check.error and "the next one tries again" in check.error
    assert any(f"answered {status}" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert not any(r.exc_info for r in caplog.records), "a clear line, no traceback"
    assert active_of(twitch, "channel.cheer") == []
    report = periodic.run_once()  # the next pass
    assert report is not None and report.created == 1
    assert len(active_of(twitch, "channel.cheer")) == 1
    check = book.read()
    assert check is not None and check.error is None and len(check.subscriptions) == 1


def test_without_an_https_public_url_subscriptions_are_not_managed(
    twitch: TwitchSimulator, helix: HelixClient, book: SubscriptionStatusBook
) -> None:
    assert webhook_callback("https://bot.example.com/") == "https://bot.example.com/webhooks/twitch"
    assert webhook_callback("http://bot.example.com") is None and webhook_callback(None) is None
    assert sweep_pass(helix, book, callback=None).run_once() is None
    check = book.read()
    assert check is not None and check.error is not None and "PUBLIC_URL" in check.error
    assert creates(twitch) == 0


# -- a webhook revocation is a gap ------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs = 0

    def __call__(self) -> None:
        with self._lock:
            self.runs += 1


def test_a_webhook_revocation_records_the_gap_and_the_runner_sweeps_and_catches_up_at_once(
    twitch: TwitchSimulator,
    helix: HelixClient,
    book: SubscriptionStatusBook,
    redis: Redis,
    keys: Keys,
    make_settings: SettingsFactory,
) -> None:
    periodic = sweep_pass(helix, book)
    catch_up = Counter()
    order: list[str] = []

    def sweep() -> object:
        order.append("sweep")
        return periodic.run_once()

    def catch() -> None:
        order.append("catch-up")
        catch_up()

    tasks = [
        PeriodicTask("subscription sweep", 3600.0, sweep, after_gap=True),
        PeriodicTask("catch-up", 3600.0, catch, after_gap=True),
    ]
    runner = TwitchRunner(redis, keys, tasks=tasks, ready=lambda: None, lease_s=3.0)
    thread = LoopThread(runner.serve)
    try:
        wait_for(lambda: catch_up.runs == 1 and len(active_of(twitch, "channel.cheer")) == 1, timeout_s=WAIT_S)
        [first] = active_of(twitch, "channel.cheer")
        twitch.set_subscription_status(first, "authorization_revoked")  # Twitch revokes it and tells the callback
        payload = json.loads(documented("revocation.json"))
        payload["subscription"].update(
            id=first,
            type="channel.cheer",
            condition={"broadcaster_user_id": BROADCASTER},
            status="authorization_revoked",
        )
        revoked_at = time.time()
        with TestClient(create_app(make_settings(twitch_webhook_secret=SECRET))) as client:
            assert post(client, payload, message_type="revocation", message_id="rev-sweep").status_code == 200
        [period] = missed_periods(redis, keys)  # recorded by the web process, before any sweep
        assert "channel.cheer subscription was revoked (authorization_revoked)" in period.reason
        assert period.since is not None and revoked_at <= period.since <= period.until <= time.time()
        check = book.read()
        assert check is not None and {e.id: e.status for e in check.subscriptions}[first] == "authorization_revoked"
        # The runner noticed: the subscription is created again and catch-up ran, well before their 3600 s.
        wait_for(lambda: catch_up.runs == 2 and len(active_of(twitch, "channel.cheer")) == 1, timeout_s=WAIT_S)
        [again] = active_of(twitch, "channel.cheer")
        assert again != first
        assert order == ["sweep", "catch-up", "sweep", "catch-up"], "the subscription back first, then the poll"
        assert not redis.exists(keys.twitch_gap_requested()), "taken"
    finally:
        thread.stop()


# -- wetbot-rewards twitch run, webhook transport ------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path, prefix: str, wired: WiredTwitch) -> Iterator[Callable[[], RunProcess]]:
    rules = tmp_path / "rewards.toml"
    rules.write_text(RULES, encoding="utf-8")
    env = {
        **os.environ,
        "TWITCH_CLIENT_ID": CLIENT_ID,
        "TWITCH_CLIENT_SECRET": CLIENT_SECRET,
        "TWITCH_AUTH_URL": wired.sim.auth_url,
        "TWITCH_API_URL": wired.sim.api_url,
        "TWITCH_TRANSPORT": "webhook",
        "TWITCH_WEBHOOK_SECRET": SECRET,
        "PUBLIC_URL": "https://rewards.example.com",
        "TOKEN_ENCRYPTION_KEY": KEY.get_secret_value(),
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "REWARDS_FILE": str(rules),
        "WETBOT_API_KEY": API_KEY,
        "LOG_FORMAT": "text",
    }
    started: list[RunProcess] = []

    def start() -> RunProcess:
        started.append(RunProcess(env, tmp_path))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def test_twitch_run_sweeps_the_webhook_subscriptions_of_the_connected_channel(
    run: Callable[[], RunProcess], wired: WiredTwitch, redis: Redis, keys: Keys
) -> None:
    oauth: OAuthClient = make_oauth(wired.sim)
    try:
        connect(TokenVault(redis, keys, KEY, oauth), oauth)
    finally:
        oauth.close()
    process = run()
    book = SubscriptionStatusBook(redis, keys)

    def swept() -> bool:
        check = book.read()
        return check is not None and [e.type for e in check.subscriptions] == ["channel.cheer"]

    wait_for(swept, timeout_s=WAIT_S)
    [made] = wired.sim.eventsub.subscriptions
    assert (made.type, made.callback, made.secret) == ("channel.cheer", CALLBACK, SECRET)
    assert made.condition == {"broadcaster_user_id": BROADCASTER}, "the broadcaster from the stored tokens"
    status, _ = process.terminate()
    assert status == 0, process.lines
    assert not any("Traceback" in line for line in process.lines), process.lines
    assert not any(SECRET in line or CLIENT_SECRET in line for line in process.lines)


def test_without_a_connected_channel_the_pass_creates_nothing(
    twitch: TwitchSimulator, helix: HelixClient, book: SubscriptionStatusBook
) -> None:
    periodic = SweepPass(
        helix=helix,
        section=periodic_section(),
        broadcaster_id=lambda: "",
        callback=CALLBACK,
        secret=SECRET,
        status=book,
    )  # the tokens were removed mid-run
    assert periodic.run_once() is None
    check = book.read()
    assert check is not None and check.error is not None and "no channel is connected" in check.error
    assert creates(twitch) == 0


def test_twitch_subscribe_defaults_to_public_url_and_the_connected_channel(
    wired: WiredTwitch,
    redis: Redis,
    keys: Keys,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from wetbot_rewards.cli import main

    oauth: OAuthClient = make_oauth(wired.sim)
    try:
        connect(TokenVault(redis, keys, KEY, oauth), oauth)
    finally:
        oauth.close()
    rules = tmp_path / "rewards.toml"
    rules.write_text(RULES, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "TWITCH_CLIENT_ID": CLIENT_ID,
        "TWITCH_CLIENT_SECRET": CLIENT_SECRET,
        "TWITCH_AUTH_URL": wired.sim.auth_url,
        "TWITCH_API_URL": wired.sim.api_url,
        "TWITCH_WEBHOOK_SECRET": SECRET,
        "PUBLIC_URL": "https://rewards.example.com",
        "TOKEN_ENCRYPTION_KEY": KEY.get_secret_value(),
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "REWARDS_FILE": str(rules),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["twitch", "subscribe"]) == 0
    assert "1 created, 0 already there, 0 failed, 0 stale removed" in capsys.readouterr().out
    [made] = wired.sim.eventsub.subscriptions
    assert (made.callback, made.condition) == (CALLBACK, {"broadcaster_user_id": BROADCASTER})
