"""``wetbot-rewards links add|list|remove``: which Twitch/Patreon user is which Discord user.

Adding a link queues the grants parked for that user, in the same steps as ``POST /links`` and the
console (``producers.link_actions``). ``links add twitch:<login> <discord id>`` names the Twitch user by
login, resolved to the id through Helix (``producers.twitch.logins``); ``links add twitch <id> <discord id>``
and ``twitch:<id>`` take the numeric id as before.
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
    add = links.add_parser(
        "add",
        help="link a user and queue the grants parked for them",
        usage="%(prog)s {twitch:<login or id>,patreon:<id>} DISCORD_USER_ID | {twitch,patreon} ID DISCORD_USER_ID",
    )
    add.add_argument("who", metavar="USER", help="twitch:<login>, twitch:<id>, patreon:<id>, or the platform alone")
    add.add_argument("rest", nargs="+", metavar="ID", help="[the numeric user id] then the Discord user id")
    add.set_defaults(run=_add)
    listing = links.add_parser("list", help="every link of a platform")
    listing.add_argument("platform", choices=PLATFORMS)
    listing.set_defaults(run=_list)
    remove = links.add_parser("remove", help="forget a run-time link")
    remove.add_argument("platform", choices=PLATFORMS)
    remove.add_argument("external_id")
    remove.set_defaults(run=_remove)


def _add(settings: Settings, args: argparse.Namespace) -> int:
    # here: the other commands need neither Helix nor the token vault
    from producers.twitch.logins import LinkNames, LoginNotResolved, TwitchTarget, resolve_twitch_user

    platform, external, discord_user_id = _add_arguments(args.who, args.rest)
    on = ledger(settings)
    target = TwitchTarget(external)
    if platform == "twitch" and ":" in args.who:
        try:
            target = resolve_twitch_user(settings, on.redis, external)
        except LoginNotResolved as exc:
            raise CliError(str(exc)) from None
    try:
        done = link(
            on,
            link_store(settings, on),
            platform,
            target.user_id,
            discord_user_id,
            audit=audit_log(on),
            actor=actor(),
        )
    except LinkRefused as exc:
        raise CliError(str(exc)) from None
    if target.user is not None:
        LinkNames(on.redis, on.keys).remember(platform, target.user)
    print(
        f"{platform} user {safe(target.shown)} linked to Discord user {discord_user_id}; "
        f"{len(done.released)} parked grant(s) queued"
    )
    return 0


def _add_arguments(who: str, rest: list[str]) -> tuple[str, str, str]:
    """(platform, login or id, Discord id) from ``twitch:<login> <discord>`` or ``twitch <id> <discord>``."""
    platform, colon, external = who.partition(":")
    wanted = 1 if colon else 2
    if platform not in PLATFORMS:
        raise CliError(f"{safe(platform)[:40]!r}: expected a platform, one of {', '.join(PLATFORMS)}")
    if len(rest) != wanted:
        form = f"{platform}:<id> DISCORD_USER_ID" if colon else f"{platform} ID DISCORD_USER_ID"
        raise CliError(f"links add {form}: expected {wanted + 1} arguments, got {len(rest) + 1}")
    if colon:
        return platform, external, rest[0]
    return platform, rest[0], rest[1]


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
