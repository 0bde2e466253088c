"""The event inbox: re-processing after a fix (never twice), the CLI, and retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from config.settings import Settings
from producers.inbox import EventInbox, EventOutcome, Outcome
from producers.twitch.samples import sample_event, sample_payload, signed_request
from tests.conftest import GUILD, TEST_REDIS_URL, USER, SettingsFactory
from wetbot_rewards.app import create_app
from wetbot_rewards.cli import main
from worker.keys import Keys
from worker.ledger import Ledger
from worker.retention import trim_events

SECRET = "twitch-test-secret-inbox-77"
TWITCH_USER = "4242"
BASE_RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "follow"
event = "channel.follow"
items = [{{ id = "kit", amount = 1 }}]

[twitch.links]
"{TWITCH_USER}" = "{USER}"
"""
CHEER_RULE = """
[[twitch.rules]]
name = "cheer"
event = "channel.cheer"
per_bits = 100
items = [{ id = "gem", amount = 1 }]
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rewards.toml"
    path.write_text(BASE_RULES, encoding="utf-8")
    return path


@pytest.fixture
def app_settings(make_settings: SettingsFactory, rules: Path) -> Settings:
    return make_settings(rewards_file=rules, twitch_webhook_secret=SECRET)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app_settings: Settings, rules: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("REDIS_URL", app_settings.redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", app_settings.redis_key_prefix)
    monkeypatch.setenv("REWARDS_FILE", str(rules))
    monkeypatch.setenv("TWITCH_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("WETBOT_API_KEY", "test-key-for-the-cli-0001")


def cheer(client: TestClient, bits: int = 300, message_id: str | None = None) -> dict[str, object]:
    event = sample_event("channel.cheer")
    event.update(user_id=TWITCH_USER, bits=bits)
    body, headers = signed_request(SECRET, sample_payload("channel.cheer", event), message_id=message_id)
    response = client.post("/webhooks/twitch", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


@pytest.mark.usefixtures("cli_env")
def test_an_ignored_event_grants_once_when_reprocessed_after_the_rules_are_fixed(
    client: TestClient, rules: Path, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = cheer(client)
    assert answer["outcome"] == "ignored" and ledger.list_grants() == []
    event_id = str(answer["event_id"])

    rules.write_text(BASE_RULES + CHEER_RULE, encoding="utf-8")  # the streamer adds the cheer rule
    assert main(["events", "reprocess", event_id]) == 0
    assert '"outcome": "granted"' in capsys.readouterr().out
    [grant] = ledger.list_grants()
    assert (grant.user_id, grant.items[0].item_id, grant.items[0].amount) == (USER, "gem", 3)

    # Twice (a double click, a retried command): nothing more.
    assert main(["events", "reprocess", event_id]) == 0
    assert "nothing to do: granted" in capsys.readouterr().out
    # Twitch redelivering the message: still nothing more.
    assert cheer(client, message_id=ledger.get(grant.id).source_ref)["outcome"] == "duplicate"  # type: ignore[union-attr]
    assert len(ledger.list_grants()) == 1


@pytest.mark.usefixtures("cli_env")
def test_concurrent_reprocessing_of_one_event_grants_once_and_keeps_the_grant_named(
    client: TestClient, rules: Path, ledger: Ledger
) -> None:
    event_id = str(cheer(client, bits=500)["event_id"])  # ignored: no cheer rule yet
    rules.write_text(BASE_RULES + CHEER_RULE, encoding="utf-8")
    with ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(lambda _: main(["events", "reprocess", event_id]), range(3)))
    assert codes == [0, 0, 0]
    [grant] = ledger.list_grants()
    kept = client.app.state.wetbot.inbox.get(event_id)  # type: ignore[attr-defined]
    assert grant.items[0].amount == 5 and kept.reprocessed >= 1
    assert kept.outcome.outcome == Outcome.GRANTED and kept.outcome.granted == (grant.id,)


@pytest.mark.usefixtures("cli_env")
def test_events_list_and_show_print_what_happened_with_data_escaped(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = b'{"subscription": {"type": "channel.cheer"}, "event": {"bits": "\x1b[2J\xe2\x80\xae", "user_id": "1"}}'
    body, headers = signed_request(SECRET, hostile)
    answer = client.post("/webhooks/twitch", content=body, headers=headers).json()
    assert answer["outcome"] == "unusable"
    assert main(["events", "list", "--outcome", "unusable"]) == 0
    listed = capsys.readouterr().out
    assert answer["event_id"] in listed and "unusable" in listed
    assert main(["events", "show", answer["event_id"]]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\u202e" not in shown and "\\x1b" in shown and "\\u202e" in shown
    assert "twitch-eventsub-message-signature" not in shown and SECRET not in shown
    assert main(["events", "reprocess", "0" * 24]) == 1
    assert "refused: no event" in capsys.readouterr().out


def test_retention_deletes_old_events_with_their_index_entries_and_is_safe_twice(
    client: TestClient, redis: Redis, keys: Keys
) -> None:
    old, new = cheer(client)["event_id"], cheer(client)["event_id"]
    redis.zadd(keys.events(), {str(old): 1_000})  # received long ago
    redis.zadd(keys.events_by_outcome("ignored"), {str(old): 1_000})
    assert trim_events(redis, keys, retention_s=30 * 86_400, now=time.time()) == 1
    assert trim_events(redis, keys, retention_s=30 * 86_400, now=time.time()) == 0
    inbox = client.app.state.wetbot.inbox  # type: ignore[attr-defined]
    assert inbox.get(str(old)) is None and inbox.get(str(new)) is not None
    assert redis.zscore(keys.events_by_outcome("ignored"), str(old)) is None
    assert [e.id for e in inbox.recent()] == [new]


def test_record_keeps_the_first_body_and_never_hides_an_outcome_behind_a_duplicate(redis: Redis, keys: Keys) -> None:
    async def scenario() -> None:
        aredis = AsyncRedis.from_url(TEST_REDIS_URL)
        inbox = EventInbox(redis, aredis, keys)
        headers = {"X-Patreon-Signature": "s", "X-Patreon-Event": "members:update"}
        granted = EventOutcome(Outcome.GRANTED, granted=("g1",))
        first = await inbox.record("patreon", "members:update", "ref-1", headers, b"{}", granted)
        again = await inbox.record("patreon", "members:update", "ref-1", {}, b"other", EventOutcome(Outcome.DUPLICATE))
        assert (first.id, first.outcome, again.outcome) == (again.id, Outcome.GRANTED, Outcome.GRANTED)
        await aredis.aclose()
        kept = inbox.get(first.id)
        assert kept is not None and kept.body == b"{}" and kept.deliveries == 2
        assert kept.headers == {"x-patreon-event": "members:update"}  # never the signature
        assert inbox.count(Outcome.GRANTED) == 1 and inbox.count(Outcome.DUPLICATE) == 0

    asyncio.run(scenario())


def test_concurrent_records_share_script_calls_and_each_gets_its_own_answer(redis: Redis, keys: Keys) -> None:
    async def scenario() -> None:
        aredis = AsyncRedis.from_url(TEST_REDIS_URL)
        inbox = EventInbox(redis, aredis, keys)
        unusable, ignored = EventOutcome(Outcome.UNUSABLE, error="e"), EventOutcome(Outcome.IGNORED, ignored="x")
        outcomes = [unusable if n % 2 else ignored for n in range(20)]
        recorded = await asyncio.gather(
            *(inbox.record("twitch", "notification", f"m-{n}", {}, b"{}", o) for n, o in enumerate(outcomes))
        )
        await aredis.aclose()
        assert [r.outcome for r in recorded] == [o.outcome for o in outcomes]
        assert [r.first_unusable for r in recorded] == [bool(n % 2) for n in range(20)]
        assert inbox._group.calls < 20 and inbox._group.requests == 20
        assert inbox.count() == 20 and inbox.count(Outcome.UNUSABLE) == 10

    asyncio.run(scenario())


@pytest.mark.usefixtures("cli_env")
def test_events_list_pages_by_cursor_as_the_api_does(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [str(cheer(client, bits=100 + n)["event_id"]) for n in range(3)]
    assert main(["events", "list", "--limit", "2"]) == 0
    *first, more = capsys.readouterr().out.strip().splitlines()
    assert len(first) == 2 and more.startswith("more: --cursor ")
    assert main(["events", "list", "--limit", "2", "--cursor", more.removeprefix("more: --cursor ")]) == 0
    [last] = capsys.readouterr().out.strip().splitlines()
    assert {line.split()[0] for line in [*first, last]} == set(ids)
    assert main(["events", "list", "--cursor", "\u00b2"]) == 1
    assert "--cursor" in capsys.readouterr().err
