"""``wetbot-rewards events list|show|reprocess``: the event inbox from the command line (``producers.inbox``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from admin.reprocess import NothingToReprocess, ReprocessRefused, reprocess
from config.domain import command_line, cursor_ms, whole_number
from config.errors import CliError
from config.settings import Settings
from producers.inbox import EventInbox, InboxEvent, Outcome
from producers.printable import terminal_safe as shown
from producers.state import checked_rewards, close_state, open_state
from producers.unconfirmed import ActionUnconfirmed
from worker.connections import connect_redis
from worker.keys import Keys

__all__ = ["register"]


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``list``, ``show`` and ``reprocess`` to the ``events`` noun."""
    events = parser.add_subparsers(title="events commands", metavar="COMMAND")
    listing = events.add_parser("list", help="events, newest first")
    listing.add_argument("--outcome", choices=[o.value for o in Outcome])
    listing.add_argument("--source", choices=["twitch", "patreon"])
    listing.add_argument("--limit", type=command_line(whole_number, field="--limit", minimum=1), default=50)
    listing.add_argument(
        "--cursor",
        type=command_line(cursor_ms, field="--cursor"),
        help="the next page, from the cursor a listing printed",
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_list)
    show = events.add_parser("show", help="one event: headers, body and outcome")
    show.add_argument("event_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_show)
    again = events.add_parser(
        "reprocess", help="handle events again after fixing the rules or links (never grants twice)"
    )
    again.add_argument("event_ids", nargs="+")
    again.set_defaults(run=_reprocess)


def _inbox(settings: Settings) -> EventInbox:
    return EventInbox(connect_redis(settings), None, Keys(settings.redis_key_prefix))


def _list(settings: Settings, args: argparse.Namespace) -> int:
    outcome = Outcome(args.outcome) if args.outcome else None
    found = _inbox(settings).recent(outcome=outcome, source=args.source, limit=args.limit, before_ms=args.cursor)
    if args.json:
        print(json.dumps([event.summary() for event in found], indent=2))
        return 0
    if not found:
        print("no events" + (f" with outcome {args.outcome}" if args.outcome else ""))
    for event in found:
        print(
            f"{event.id}  {_when(event.received_at)}  {event.source:<7}  {shown(event.kind):<28}  "
            f"{event.outcome.outcome.value:<12}  {shown(_gist(event))}"
        )
    if len(found) == args.limit:  # the same cursor as GET /admin/events gives
        print(f"more: --cursor {int(found[-1].received_at * 1000)}")
    return 0


def _show(settings: Settings, args: argparse.Namespace) -> int:
    event = _inbox(settings).get(args.event_id)
    if event is None:
        raise CliError(f"no event {args.event_id} in the inbox")
    if args.json:
        print(json.dumps({**event.summary(), "headers": event.headers, "body": _body_text(event)}, indent=2))
        return 0
    print(f"event     {event.id}")
    print(f"source    {event.source} {shown(event.kind)} ({shown(event.ref)})")
    print(f"received  {_when(event.received_at)}, {event.deliveries} deliver{'y' if event.deliveries == 1 else 'ies'}")
    if event.reprocessed:
        print(f"reprocessed {event.reprocessed} time(s)")
    print(f"outcome   {event.outcome.outcome.value}")
    for name, value in event.outcome.detail().items():
        if name != "outcome":
            print(f"  {name}: {shown(', '.join(value) if isinstance(value, list) else str(value))}")
    print("headers")
    for name, value in sorted(event.headers.items()):
        print(f"  {shown(name)}: {shown(value)}")
    print("body")
    for line in _body_text(event).splitlines():
        print(shown(line))
    return 0


def _reprocess(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_reprocess_all(settings, args.event_ids))


async def _reprocess_all(settings: Settings, event_ids: list[str]) -> int:
    state = open_state(settings, *checked_rewards(settings))
    failed = 0
    try:
        for event_id in event_ids:
            try:
                outcome = await reprocess(state, event_id)
            except NothingToReprocess as exc:
                done = exc.event.outcome.outcome.value
                print(f"{shown(event_id)}: nothing to do: {done} ({shown(_gist(exc.event))})")
                continue
            except ReprocessRefused as exc:
                print(f"{shown(event_id)}: refused: {shown(str(exc))}")
                failed += 1
                continue
            except ActionUnconfirmed as exc:
                print(f"{shown(event_id)}: not confirmed: {shown(exc.message)}", file=sys.stderr)
                failed += 1
                continue
            print(f"{shown(event_id)}: {shown(json.dumps(outcome.detail()))}")
    finally:
        await close_state(state)
    return 1 if failed else 0


def _gist(event: InboxEvent) -> str:
    outcome = event.outcome
    if outcome.error:
        return outcome.error
    if outcome.granted or outcome.parked:
        return f"{len(outcome.granted)} granted, {len(outcome.parked)} parked"
    return outcome.ignored or "; ".join(outcome.notes)


def _body_text(event: InboxEvent) -> str:
    try:
        return json.dumps(json.loads(event.body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return event.body.decode("utf-8", "replace")


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
