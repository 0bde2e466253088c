"""The wetbot-rewards command line: one command per noun, each loaded only when it is used.

``wetbot-rewards --help`` imports no command module at all, and ``wetbot-rewards grants list`` only the
grants commands (and what they import on their own), so the command line starts in a fraction of a
second. Old spellings (``grant``, ``dead list``, ``resolve``, ``send-test twitch``, ...) are rewritten to
the new ones with one warning line (``admin.cli.renamed``). A ``CliError`` (``config.errors``) or an
argument that breaks its rule (``config.domain.InvalidInput``) is printed as one line, and so is an action the
Redis replicas did not confirm: exit status 1, nothing reported done.
A closed pipe (``grants list | head -1``) ends quietly with status 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING

from admin.cli.renamed import new_spelling

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["NOUNS", "main"]

#: Each noun: the module whose ``register(parser)`` adds its commands, and its one line of help.
NOUNS: dict[str, tuple[str, str]] = {
    "grants": ("admin.cli.grants", "create, list, show, cancel, replay or resolve grants"),
    "links": ("admin.cli.links", "Twitch/Patreon user -> Discord user links"),
    "events": ("admin.cli.events", "the event inbox: every verified webhook"),
    "twitch": ("producers.twitch.cli", "Twitch: connect the channel, EventSub subscriptions, signed test events"),
    "patreon": ("producers.patreon.cli", "Patreon: signed test webhooks"),
    "demo": ("admin.cli.demo", "demo mode: clear its data, redeem a reward in its Twitch simulator"),
}

DESCRIPTION = "The operator's command line of wetbot-rewards: grants, links, the event inbox and the sources."

Command = Callable[["Settings", argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wetbot-rewards`` console script."""
    try:
        status = _main(new_spelling(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): what it wanted it has; say nothing more, and let the
        # interpreter's last flush write to /dev/null rather than fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    return status


def _main(words: list[str]) -> int:
    parser = parser_for(words[0] if words else None)
    try:
        args = parser.parse_args(words)
    except _cli_error() as exc:  # an argument that breaks its rule (``config.domain.command_line``)
        from producers.printable import terminal_safe

        print(f"wetbot-rewards: {terminal_safe(str(exc))}", file=sys.stderr)
        return 1
    run: Command | None = getattr(args, "run", None)
    if run is None:
        getattr(args, "noun_parser", parser).print_help()
        return 2
    return _run(run, args)


def _cli_error() -> type[Exception]:
    from config.errors import CliError

    return CliError


def parser_for(noun: str | None) -> argparse.ArgumentParser:
    """The parser with every noun listed and only ``noun``'s commands loaded: the top-level help lists
    the nouns, and each noun's help its own commands, so no run needs the others' modules."""
    parser = argparse.ArgumentParser(prog="wetbot-rewards", description=DESCRIPTION)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, (module, summary) in NOUNS.items():
        noun_parser = commands.add_parser(name, help=summary, description=summary)
        noun_parser.set_defaults(noun_parser=noun_parser)
        if name == noun:
            import_module(module).register(noun_parser)
    return parser


def _run(run: Command, args: argparse.Namespace) -> int:
    from redis import RedisError

    from config.domain import InvalidInput
    from config.errors import CliError, ConfigError, report_config_error
    from config.settings import settings_or_exit
    from producers.printable import terminal_safe
    from producers.unconfirmed import ActionUnconfirmed
    from worker.replication import NotReplicated

    settings = settings_or_exit()
    try:
        return int(run(settings, args))
    except (CliError, InvalidInput) as exc:
        print(f"wetbot-rewards: {terminal_safe(str(exc))}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        report_config_error(exc)
        return 2
    except ActionUnconfirmed as exc:
        print(f"wetbot-rewards: {terminal_safe(exc.message)}", file=sys.stderr)
        return 1
    except NotReplicated as exc:
        print(
            f"wetbot-rewards: not confirmed by the Redis replicas ({exc}); nothing is reported done, "
            "run the command again",
            file=sys.stderr,
        )
        return 1
    except RedisError as exc:
        print(f"wetbot-rewards: cannot use Redis ({type(exc).__name__}); is it running at REDIS_URL?", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
