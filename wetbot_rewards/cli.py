"""``wetbot-rewards``: the operator's command line, assembled from its groups.

``admin.cli.grants`` holds the commands on the ledger and links (grant,
inspect, replay, resolve, links); ``producers.twitch.cli`` and
``producers.patreon.cli`` add their ``send-test`` platforms and their own
commands. A ``CliError`` (``config.errors``) or an argument that breaks its rule
(``config.domain.InvalidInput``) is printed as one line, and so is
an action the Redis replicas did not confirm (``producers.unconfirmed``): exit
status 1, nothing reported done.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from redis import RedisError

from admin.cli import demo as demo_cli
from admin.cli import events as events_cli
from admin.cli import grants as operator_cli
from config.domain import InvalidInput
from config.errors import CliError, ConfigError
from config.settings import settings_or_exit
from producers.patreon import cli as patreon_cli
from producers.printable import terminal_safe
from producers.twitch import cli as twitch_cli
from producers.unconfirmed import ActionUnconfirmed
from worker.replication import NotReplicated

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wetbot-rewards`` console script."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except CliError as exc:  # an argument that breaks its rule (``config.domain.command_line``)
        print(f"wetbot-rewards: {terminal_safe(str(exc))}", file=sys.stderr)
        return 1
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    settings = settings_or_exit()
    try:
        return int(args.run(settings, args))
    except (CliError, InvalidInput) as exc:
        print(f"wetbot-rewards: {terminal_safe(str(exc))}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"wetbot-rewards: configuration error: {exc}", file=sys.stderr)
        return 2
    except ActionUnconfirmed as exc:
        print(f"wetbot-rewards: {terminal_safe(exc.message)}", file=sys.stderr)
        return 1
    except NotReplicated as exc:
        print(f"wetbot-rewards: not confirmed by the Redis replicas ({exc}); nothing is reported done, "
              "run the command again", file=sys.stderr)  # fmt: skip
        return 1
    except RedisError as exc:
        print(f"wetbot-rewards: cannot use Redis ({type(exc).__name__}); is it running at REDIS_URL?", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wetbot-rewards", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(title="commands")
    operator_cli.register(commands)
    events_cli.register(commands)
    demo_cli.register(commands)
    send_test = commands.add_parser(
        "send-test", help="sign a sample event and post it to a running instance"
    ).add_subparsers(title="platforms")
    for register in (twitch_cli.register, patreon_cli.register):
        register(commands, send_test)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
