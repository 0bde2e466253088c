"""The ``wetbot-rewards`` command line against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from producers.audit import AuditLog
from tests.conftest import GUILD, USER
from tests.schedule_view import due_ids
from wetbot_rewards.cli import main
from worker.broker import QUEUE_NAME
from worker.creation import Mode, Planned
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

pytestmark = pytest.mark.usefixtures("cli_env")


def due_now(redis: Redis, keys: Keys) -> set[str]:
    """Grants the ledger's schedule has due now: a worker's reconciler dispatches them within a second."""
    return set(due_ids(redis, keys))


def test_grant_queues_once_per_key(
    capsys: pytest.CaptureFixture[str], ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    assert main(["grants", "create", "--user", USER, "--item", "gem=5", "--item", "potion=1.5", "--key", "k1"]) == 0
    assert "queued: state queued" in capsys.readouterr().out
    assert main(["grants", "create", "--user", USER, "--item", "gem=5", "--item", "potion=1.5", "--key", "k1"]) == 0
    assert "already exists" in capsys.readouterr().out
    [grant] = ledger.list_grants()
    assert grant.guild_id == GUILD and grant.source == "cli"
    assert grant.items == (GrantItem("gem", 5.0), GrantItem("potion", 1.5))
    assert int(redis.llen(f"{keys.dramatiq_namespace}:{QUEUE_NAME}")) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--item", "gem"], "expected ID=AMOUNT"),
        (["--item", "gem=lots"], "not a number"),
        (["--item", "gem=0"], "must not be 0"),
        (["--item", "gem=2e9"], "must be between -1000000000 and 1000000000"),
        (["--item", "gem=1", "--item", "gem=2"], "appears twice"),
        (["--item", "gem=1", "--guild", "12"], "--guild: expected a Discord id"),
    ],
)
def test_grant_rejects_bad_input_and_queues_nothing(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], ledger: Ledger
) -> None:
    assert main(["grants", "create", "--user", USER, *args]) == 1
    assert message in capsys.readouterr().err
    assert ledger.list_grants() == []


def test_grants_list_and_show(capsys: pytest.CaptureFixture[str], ledger: Ledger) -> None:
    grant = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 2),), source="test", idempotency_key="t:1")).grant
    assert main(["grants", "list", "--json"]) == 0
    assert [g["id"] for g in json.loads(capsys.readouterr().out)] == [grant.id]
    assert main(["grants", "list", "--state", "dead"]) == 0
    assert capsys.readouterr().out.strip() == "no grants"
    assert main(["grants", "show", grant.id]) == 0
    out = capsys.readouterr().out
    assert grant.id in out and "gem x 2" in out and "created by test" in out
    assert main(["grants", "show", "nope"]) == 1
    assert "no grant with id" in capsys.readouterr().err


def dead_grant(ledger: Ledger, key: str) -> str:
    grant = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key=key)).grant
    ledger.transition(grant.id, GrantState.SENDING, "test", add_attempt=True)
    ledger.transition(grant.id, GrantState.DEAD, "test", add_failure=True, last_error="HTTP 404: Item not found")
    return grant.id


def test_dead_grants_listed_and_replayed(
    capsys: pytest.CaptureFixture[str], ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    first, second = dead_grant(ledger, "t:a"), dead_grant(ledger, "t:b")
    assert main(["grants", "list", "--state", "dead"]) == 0
    assert capsys.readouterr().out.count("last error: HTTP 404: Item not found") == 2
    assert main(["grants", "replay", first]) == 0
    replayed = ledger.get(first)
    assert replayed is not None and replayed.state == GrantState.QUEUED and replayed.failures == 0
    assert due_now(redis, keys) == {first}, "the replay and its place on the schedule are one step"
    assert main(["grants", "replay", "--all"]) == 0
    assert "1 grant(s) replayed" in capsys.readouterr().out
    assert ledger.get(second).state == GrantState.QUEUED  # type: ignore[union-attr]
    assert due_now(redis, keys) == {first, second}
    # Run again (as after a kill mid-run): nothing is replayed twice.
    assert main(["grants", "replay", first, second]) == 0
    assert "0 grant(s) replayed" in capsys.readouterr().out
    assert [t.to_state for t in ledger.history(first)].count("queued") == 2  # created, replayed once
    assert main(["grants", "replay"]) == 1


def unknown_grant(ledger: Ledger, key: str) -> str:
    grant = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key=key)).grant
    ledger.transition(grant.id, GrantState.SENDING, "test", add_attempt=True)
    ledger.transition(grant.id, GrantState.UNKNOWN, "timeout", last_error="may have been applied")
    return grant.id


def test_resolve_delivered_and_resend(
    capsys: pytest.CaptureFixture[str], ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    applied, lost = unknown_grant(ledger, "t:u1"), unknown_grant(ledger, "t:u2")
    assert main(["grants", "resolve", applied, "--delivered", "--note", "saw it in Discord"]) == 0
    assert ledger.get(applied).state == GrantState.DELIVERED  # type: ignore[union-attr]
    assert "saw it in Discord" in ledger.history(applied)[-1].reason
    assert due_now(redis, keys) == set()
    assert main(["grants", "resolve", lost, "--resend"]) == 0
    assert ledger.get(lost).state == GrantState.QUEUED  # type: ignore[union-attr]
    assert due_now(redis, keys) == {lost}
    assert main(["grants", "resolve", applied, "--resend"]) == 1
    assert "only grants in state unknown" in capsys.readouterr().err


def test_resolve_verify_asks_the_worker_for_a_read_back(
    capsys: pytest.CaptureFixture[str], ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    grant_id = unknown_grant(ledger, "t:v1")
    assert main(["grants", "resolve", grant_id, "--verify"]) == 0
    grant = ledger.get(grant_id)
    assert grant is not None and grant.state == GrantState.RETRYING and grant.verify_pending
    assert due_now(redis, keys) == {grant_id}
    assert redis.get(keys.hold(GUILD, USER)) == grant_id.encode(), "the user's other grants wait for the read-back"
    assert main(["grants", "resolve", grant_id, "--verify"]) == 1, "a second run finds it decided"


def test_console_script_is_installed_and_reports_redis_down(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "wetbot-rewards"
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([script, "grants", "list"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("wetbot-rewards: cannot use Redis")
    assert subprocess.run([script, "--help"], capture_output=True, cwd=tmp_path, timeout=30).returncode == 0


HOSTILE_ITEM = "gem\x1b[2J\u202e"
HOSTILE_REASON = "refund\x1b]0;pwned\x07\r\nfake line\u2028"


def test_data_the_cli_prints_is_escaped_so_it_cannot_drive_the_terminal(
    capsys: pytest.CaptureFixture[str], ledger: Ledger
) -> None:
    """Old or hostile values (written before the API checked them, or straight into Redis) print as escapes."""
    new = NewGrant(
        GUILD, USER, (GrantItem(HOSTILE_ITEM, 1),), source="te\x1bst", idempotency_key="t:h", reason=HOSTILE_REASON
    )
    grant = ledger.create(new).grant
    ledger.transition(grant.id, GrantState.SENDING, "\x1b[31mred", add_attempt=True)
    ledger.transition(grant.id, GrantState.DEAD, "test", add_failure=True, last_error="HTTP 400: \x1b[1mbad\u200f")
    outputs = []
    for command in (["grants", "list"], ["grants", "show", grant.id], ["grants", "list", "--state", "dead"]):
        assert main(command) == 0
        outputs.append(capsys.readouterr().out)
    for out in outputs:
        assert all(char.isprintable() or char == "\n" for char in out), repr(out)
    listing, shown, dead = outputs
    assert "gem\\x1b[2J\\u202e x 1" in listing and "[te\\x1bst]" in listing
    assert "gem\\x1b[2J\\u202e x 1" in shown
    assert "refund\\x1b]0;pwned\\x07\\x0d\\x0afake line\\u2028" in shown
    assert "\\x1b[31mred" in shown
    assert "last error: HTTP 400: \\x1b[1mbad\\u200f" in dead
    assert main(["grants", "list", "--json"]) == 0
    data = capsys.readouterr().out
    assert data.isascii() and json.loads(data)[0]["items"][0]["item_id"] == HOSTILE_ITEM


def twitch_parked(ledger: Ledger, key: str, login: str, twitch_id: str, guild: str = GUILD) -> str:
    new = NewGrant(
        guild,
        "",
        (GrantItem("gem", 1),),
        source="twitch",
        idempotency_key=key,
        platform="twitch",
        external_id=twitch_id,
        names=(login,),
    )
    return ledger.create_many([Planned(new, Mode.PARK)]).results[0].grant.id


def test_grants_list_filters_by_supporter_source_and_guild_and_pages(
    capsys: pytest.CaptureFixture[str], ledger: Ledger
) -> None:
    fan = twitch_parked(ledger, "twitch:a", "StreamFan", "5151")
    other = twitch_parked(ledger, "twitch:b", "someone", "6161", guild="222222222222222222")
    api = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="api", idempotency_key="api:x")).grant.id
    capsys.readouterr()

    def listed(*options: str) -> list[str]:
        assert main(["grants", "list", "--json", *options]) == 0
        return [grant["id"] for grant in json.loads(capsys.readouterr().out)]

    assert listed("--twitch", "streamfan") == [fan]
    assert listed("--twitch", "6161") == [other]
    assert listed("--user", USER) == [api]
    assert listed("--source", "twitch") == [other, fan]
    assert listed("--guild", GUILD) == [api, fan]
    assert listed("--state", "parked", "--guild", GUILD) == [fan]
    assert main(["grants", "list", "--limit", "1"]) == 0
    cursor = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("more: --cursor ")
    assert listed("--limit", "1", "--cursor", cursor) == [other]
    assert main(["grants", "list", "--guild", "nope"]) == 1
    with pytest.raises(SystemExit):  # one supporter at a time (argparse refuses both)
        main(["grants", "list", "--user", USER, "--twitch", "x"])


def test_grants_cancel_needs_a_reason_cancels_once_and_is_audited(
    capsys: pytest.CaptureFixture[str], ledger: Ledger, redis: Redis, keys: Keys
) -> None:
    grant_id = twitch_parked(ledger, "twitch:c", "wrongperson", "7171")
    with pytest.raises(SystemExit):
        main(["grants", "cancel", grant_id])  # --reason is required
    assert main(["grants", "cancel", grant_id, "--reason", "sent to the wrong person"]) == 0
    assert "cancelled: it will not be sent" in capsys.readouterr().out
    assert main(["grants", "cancel", grant_id, "--reason", "again"]) == 0
    assert "already cancelled" in capsys.readouterr().out
    assert [t.to_state for t in ledger.history(grant_id)] == ["parked", "cancelled"]
    delivered = ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="cli", idempotency_key="c:d"))
    assert ledger.transition(delivered.grant.id, GrantState.DELIVERED, "arranged")
    assert main(["grants", "cancel", delivered.grant.id, "--reason", "too late"]) == 1
    assert "only queued, parked or retrying" in capsys.readouterr().err
    entries = AuditLog(redis, keys).recent()
    assert [(e.action, e.outcome) for e in entries] == [
        ("cancel", "refused"),
        ("cancel", "nothing to do"),
        ("cancel", "done"),
    ]
    assert all(e.actor.startswith("cli:") for e in entries)


def test_dead_replay_all_takes_the_filters(capsys: pytest.CaptureFixture[str], ledger: Ledger) -> None:
    mine, theirs = dead_grant(ledger, "t:mine"), dead_grant(ledger, "t:theirs")
    assert ledger.transition(theirs, GrantState.QUEUED, "arranged", expect=[GrantState.DEAD])
    ledger.transition(theirs, GrantState.DEAD, "arranged")
    redis_guild = "222222222222222222"
    other = ledger.create(NewGrant(redis_guild, USER, (GrantItem("gem", 1),), source="test", idempotency_key="t:o"))
    assert ledger.transition(other.grant.id, GrantState.DEAD, "arranged")
    assert main(["grants", "replay", "--all", "--guild", redis_guild]) == 0
    assert "1 grant(s) replayed" in capsys.readouterr().out
    assert ledger.get(other.grant.id).state == GrantState.QUEUED  # type: ignore[union-attr]
    assert {ledger.get(g).state for g in (mine, theirs)} == {GrantState.DEAD}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["grants", "show", "g\x1b[2J\n"], "no grant with id 'g\\x1b[2J\\x0a'"),
        (["grants", "cancel", "g\x1b[2J\n", "--reason", "r"], "no grant with id g\\x1b[2J\\x0a (mistyped"),
        (["grants", "resolve", "g\x1b[2J\n", "--delivered"], "no grant with id g\\x1b[2J\\x0a (mistyped"),
        (["events", "show", "e\x1b[2J\n"], "no event e\\x1b[2J\\x0a in the inbox"),
        (["grants", "create", "--user", USER, "--item", "g\x1b"], "--item 'g\\x1b': expected ID=AMOUNT"),
    ],
)
def test_an_error_line_escapes_what_it_names_once(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An escape in the output always means one character: the line is escaped once, where it is printed."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"wetbot-rewards: {line}") and err.count("\n") == 1, err
