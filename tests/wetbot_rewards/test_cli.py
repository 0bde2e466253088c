"""The assembled command line: one command per noun, old spellings with one warning, plain help, a quiet
end on a closed pipe, and a ``--help`` that loads none of the service's heavy dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from admin.cli.renamed import RENAMED_COMMANDS
from tests.admin.test_cli import dead_grant, unknown_grant
from tests.conftest import GUILD, USER
from wetbot_rewards.cli import NOUNS, main, parser_for
from worker.grant import GrantItem, GrantState, NewGrant
from worker.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("cli_env")


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def subcommands(noun: str) -> list[str]:
    """The commands of ``noun``, as its parser has them."""
    parser = parser_for(noun)
    [nouns] = [action for action in parser._actions if action.choices]
    assert isinstance(nouns.choices, dict)
    [commands] = [action for action in nouns.choices[noun]._actions if action.choices]
    assert isinstance(commands.choices, dict)
    return sorted(commands.choices)


def test_one_command_per_noun() -> None:
    assert sorted(NOUNS) == ["demo", "events", "grants", "links", "patreon", "twitch"]
    assert subcommands("grants") == ["cancel", "create", "list", "replay", "resolve", "show"]
    assert subcommands("links") == ["add", "list", "remove"]
    assert subcommands("events") == ["list", "reprocess", "show"]
    assert subcommands("twitch") == ["connect", "disconnect", "run", "send-test", "subscribe"]
    assert subcommands("patreon") == ["send-test"]
    assert subcommands("demo") == ["clear", "redeem"]


def test_every_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    pages = [help_of([], capsys)[0]]
    for noun in NOUNS:
        pages.append(help_of([noun], capsys)[0])
        pages.extend(help_of([noun, command], capsys)[0] for command in subcommands(noun))
    assert len(pages) == 1 + len(NOUNS) + 20
    for page in pages:
        assert page.startswith("usage: wetbot-rewards")
        for markup in ("``", ":class:", ":func:", ".. "):
            assert markup not in page, page


@pytest.mark.parametrize(("old", "new"), RENAMED_COMMANDS, ids=[" ".join(old) for old, _ in RENAMED_COMMANDS])
def test_an_old_spelling_runs_the_new_command_with_one_warning(
    old: tuple[str, ...], new: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    out, err = help_of(list(old), capsys)
    command = " ".join(word for word in new if not word.startswith("-") and word != "dead")
    assert out.startswith(f"usage: wetbot-rewards {command} ")
    assert (
        err == f"wetbot-rewards: warning: '{' '.join(old)}' is deprecated and goes in the next release; "
        f"use '{' '.join(new)}'\n"
    )


def test_old_grant_and_dead_spellings_do_what_they_did(capsys: pytest.CaptureFixture[str], ledger: Ledger) -> None:
    assert main(["grant", "--user", USER, "--item", "gem=5", "--key", "old"]) == 0
    captured = capsys.readouterr()
    assert "queued: state queued" in captured.out and "use 'grants create'" in captured.err
    dead = dead_grant(ledger, "t:dead")
    assert main(["dead", "list"]) == 0
    captured = capsys.readouterr()
    assert dead in captured.out and "last error: HTTP 404" in captured.out and len(captured.err.splitlines()) == 1
    assert main(["dead", "replay", dead]) == 0
    assert ledger.get(dead).state == GrantState.QUEUED  # type: ignore[union-attr]
    unsure = unknown_grant(ledger, "t:unsure")
    assert main(["resolve", unsure, "--delivered"]) == 0
    assert ledger.get(unsure).state == GrantState.DELIVERED  # type: ignore[union-attr]
    assert "use 'grants resolve'" in capsys.readouterr().err


def test_after_is_the_old_name_of_cursor(capsys: pytest.CaptureFixture[str], ledger: Ledger) -> None:
    for key in ("t:1", "t:2"):
        ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key=key))
    assert main(["grants", "list", "--limit", "1"]) == 0
    first, more = capsys.readouterr().out.strip().splitlines()
    cursor = more.removeprefix("more: --cursor ")
    assert main(["grants", "list", "--limit", "1", "--json", "--after", cursor]) == 0
    captured = capsys.readouterr()
    [second] = json.loads(captured.out)
    assert second["id"] not in first
    assert (
        captured.err == "wetbot-rewards: warning: '--after' is deprecated and goes in the next release; "
        "use '--cursor'\n"
    )


def run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run the command line with its stdout a pipe whose reader has already gone (``| head`` that ended)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "wetbot_rewards.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=dict(os.environ),
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("argv", [["--help"], ["grants", "list"]])
def test_a_closed_pipe_ends_quietly(argv: list[str], ledger: Ledger) -> None:
    for number in range(200):  # more than a pipe's buffer of output
        ledger.create(NewGrant(GUILD, USER, (GrantItem("gem", 1),), source="test", idempotency_key=f"t:{number}"))
    done = run_into_closed_pipe(argv)
    assert (done.returncode, done.stderr) == (0, b"")


HEAVY = ("fastapi", "starlette", "dramatiq", "redis", "pydantic", "pydantic_settings", "requests", "sentry_sdk")


def loaded_by(argv: list[str]) -> set[str]:
    """The top-level modules a run of the command line has imported, seen from inside its process."""
    code = (
        "import contextlib, io, json, sys\n"
        "from wetbot_rewards.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({argv!r})\n"
        "print(json.dumps(sorted({name.partition('.')[0] for name in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout))


def test_help_imports_none_of_the_heavy_dependencies() -> None:
    assert loaded_by(["--help"]) & set(HEAVY) == set()
    assert loaded_by(["grants", "--help"]) & set(HEAVY) <= {"redis", "pydantic", "pydantic_settings", "dramatiq"}


def test_grants_list_needs_no_web_framework_and_no_sentry() -> None:
    assert {"redis", "pydantic_settings"} <= loaded_by(["grants", "list"])
    assert loaded_by(["grants", "list"]) & {"fastapi", "starlette", "sentry_sdk", "requests"} == set()
