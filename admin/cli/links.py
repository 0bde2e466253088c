"""``wetbot-rewards links add|list|remove``: which Twitch/Patreon user is which Discord user.

Adding a link queues the grants parked for that user, in the same steps as ``POST /links`` and the
console (``producers.link_actions``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from admin.cli.connect import actor, audit_log, ledger, link_store
from config.errors import CliError
from producers.link_actions import LinkRefused, link, unlink
from producers.links import PLATFORMS
from producers.printable import terminal_safe as safe

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["register"]


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``add``, ``list`` and ``remove`` to the ``links`` noun."""
    links = parser.add_subparsers(title="links commands", metavar="COMMAND")
    add = links.add_parser("add", help="link a user and queue the grants parked for them")
    add.add_argument("platform", choices=PLATFORMS)
    add.add_argument("external_id", help="the platform's numeric user id")
    add.add_argument("discord_user_id")
    add.set_defaults(run=_add)
    listing = links.add_parser("list", help="every link of a platform")
    listing.add_argument("platform", choices=PLATFORMS)
    listing.set_defaults(run=_list)
    remove = links.add_parser("remove", help="forget a run-time link")
    remove.add_argument("platform", choices=PLATFORMS)
    remove.add_argument("external_id")
    remove.set_defaults(run=_remove)


def _add(settings: Settings, args: argparse.Namespace) -> int:
    on = ledger(settings)
    try:
        done = link(
            on,
            link_store(settings, on),
            args.platform,
            args.external_id,
            args.discord_user_id,
            audit=audit_log(on),
            actor=actor(),
        )
    except LinkRefused as exc:
        raise CliError(str(exc)) from None
    print(
        f"{args.platform} user {args.external_id} linked to Discord user {args.discord_user_id}; "
        f"{len(done.released)} parked grant(s) queued"
    )
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    found = link_store(settings, ledger(settings)).all(args.platform)
    if not found:
        print("no links")
    for external_id, (discord_id, origin) in sorted(found.items()):
        print(f"{safe(external_id):>20} -> {safe(discord_id)}  ({safe(origin)})")
    return 0


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    on = ledger(settings)
    try:
        unlink(link_store(settings, on), args.platform, args.external_id, audit=audit_log(on), actor=actor())
    except LinkRefused as exc:
        raise CliError(f"link of {args.platform} user {args.external_id} not removed: {exc}") from None
    print(f"link of {args.platform} user {args.external_id} removed")
    return 0
