"""``wetbot-rewards grants create|list|show|cancel|replay|resolve``: the operator's commands on the ledger.

Each one talks to the same Redis as the service: grants it creates or moves go
through the same ledger and schedule as the web app's, and every change is one
atomic step, so a command killed half-way or run twice does nothing twice.
Whatever came from data (ids, items, reasons, errors) is printed through
``safe`` (``producers.printable.terminal_safe``), so an old or hostile value
shows its escapes instead of driving the terminal; ``--json`` output is
escaped by ``json.dumps`` itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from admin.cli import connect
from admin.cli.renamed import RenamedOption
from config import domain
from config.errors import CliError
from config.settings import Settings
from producers.printable import terminal_safe as safe
from worker.connections import connect_redis
from worker.eta import Eta, EtaEstimator
from worker.grant import FINAL_STATES, Grant, GrantItem, GrantState, NewGrant
from worker.grant_search import BadCursor, GrantQuery, find_grants
from worker.ledger import Ledger

__all__ = ["register"]

#: ``--limit``: grants per page of a listing, 1-100 (``worker.grant_search`` pages at most 100).
_limit = domain.command_line(domain.whole_number, field="--limit", minimum=1, maximum=100)


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``create``, ``list``, ``show``, ``cancel``, ``replay`` and ``resolve`` to the ``grants`` noun.

    What they change goes through ``admin.grant_actions``, as the console's and the API's actions do.
    """
    grants = parser.add_subparsers(title="grants commands", metavar="COMMAND")
    create = grants.add_parser("create", help="queue a grant by hand")
    create.add_argument("--user", required=True, help="Discord user id")
    create.add_argument(
        "--guild", type=_discord_id("--guild"), help="Discord guild id (default: guild_id of the rewards file)"
    )
    create.add_argument(
        "--item", action="append", required=True, metavar="ID=AMOUNT", help="item and amount; repeat for more"
    )
    create.add_argument(
        "--key",
        type=domain.command_line(domain.idempotency_key, field="--key"),
        help="idempotency key (the same key never grants twice)",
    )
    create.add_argument("--reason", default="", help="free text kept on the grant")
    create.set_defaults(run=_create)

    listing = grants.add_parser("list", help="list grants, newest first (filters combine)")
    listing.add_argument("--state", choices=[s.value for s in GrantState])
    _add_filters(listing)
    listing.add_argument("--limit", type=_limit, default=50, help="grants per page (at most 100)")
    listing.add_argument("--cursor", help="the next page, from the cursor a listing printed")
    listing.add_argument("--after", dest="cursor", action=RenamedOption, new="--cursor")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_list)

    show = grants.add_parser("show", help="one grant with its history")
    show.add_argument("grant_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_show)

    cancel = grants.add_parser("cancel", help="cancel a queued, parked or retrying grant: it is never sent")
    cancel.add_argument("grant_id")
    cancel.add_argument("--reason", required=True, help="why (kept in the grant's history and the audit log)")
    cancel.set_defaults(run=_cancel)

    replay = grants.add_parser("replay", help="queue dead grants again (attempts start over)")
    replay.add_argument("grant_ids", nargs="*")
    replay.add_argument("--all", action="store_true", help="every dead grant (that the filters match)")
    _add_filters(replay)
    replay.set_defaults(run=_replay)

    resolve = grants.add_parser("resolve", help="decide a grant in state unknown")
    resolve.add_argument("grant_id")
    decision = resolve.add_mutually_exclusive_group(required=True)
    decision.add_argument("--delivered", action="store_true", help="WetBot did apply it: mark delivered")
    decision.add_argument("--resend", action="store_true", help="WetBot did not apply it: send it again")
    decision.add_argument(
        "--verify", action="store_true", help="read the member's profile back and let the worker decide (one rate slot)"
    )
    resolve.add_argument("--note", default="", help="why, kept in the grant's history")
    resolve.set_defaults(run=_resolve)


# --- commands -------------------------------------------------------------------------------
def _create(settings: Settings, args: argparse.Namespace) -> int:
    from config.rewards import load_rewards  # here: the listings need the rules only for waiting grants
    from producers.submit import submit_grant  # here: the other commands do not need it

    default_guild = load_rewards(settings.rewards_file, missing_ok=True).guild_id
    guild_id = default_guild if args.guild is None else args.guild
    if guild_id is None:
        raise CliError("--guild is required: the rewards file sets no default guild_id")
    for name, value in (("--user", args.user), ("--guild", guild_id)):
        domain.discord_id(value, field=name)
    keyring = settings.keyring(default_guild)
    if not keyring.empty and not keyring.covers(guild_id):
        raise CliError(f"--guild: {keyring.missing_key_problem(guild_id)}")
    items = tuple(_parse_item(text) for text in args.item)
    if len({item.item_id for item in items}) != len(items):
        raise CliError("--item: the same item id appears twice; give it once with the total amount")
    key = args.key or uuid.uuid4().hex
    new = NewGrant(
        guild_id=guild_id,
        user_id=args.user,
        items=items,
        source="cli",
        idempotency_key=f"cli:{key}",
        source_ref=args.key or "",
        reason=args.reason,
    )
    result = submit_grant(connect.ledger(settings), new)
    verb = "queued" if result.created else "already exists (same --key)"
    print(f"grant {result.grant.id} {verb}: state {result.grant.state.value}")
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    ledger = connect.ledger(settings)
    query = _query(args, GrantState(args.state) if args.state else None)
    try:
        page = find_grants(ledger.redis, ledger.keys, query, cursor=args.cursor, limit=args.limit)
    except BadCursor as exc:
        raise CliError(f"--cursor: {exc}") from None
    # A dead grant's last error says why it died: a listing of dead grants shows it.
    errors = query.state == GrantState.DEAD
    _print_grants(page.grants, as_json=args.json, errors=errors, etas=_etas(settings, page.grants))
    if page.next_cursor and not args.json:
        print(f"more: --cursor {page.next_cursor}")
    return 0


def _show(settings: Settings, args: argparse.Namespace) -> int:
    ledger = connect.ledger(settings)
    grant = _get(ledger, args.grant_id)
    history = ledger.history(grant.id)
    eta = _etas(settings, [grant]).get(grant.id)
    if args.json:
        data = grant.to_dict()
        data["eta"] = None if eta is None else eta.to_dict()
        data["history"] = [{"at": t.at, "from": t.from_state, "to": t.to_state, "reason": t.reason} for t in history]
        print(json.dumps(data, indent=2))
        return 0
    for key, value in {**grant.to_dict(), "eta": None if eta is None else eta.describe()}.items():
        if key == "items":
            value = ", ".join(f"{i['item_id']} x {_amount(i['amount'])}" for i in value)
        elif key in ("created_at", "updated_at"):
            value = _when(value)
        elif key == "names":
            value = ", ".join(value)
        print(f"{key:>16}: {safe(value) if value not in (None, '') else '-'}")
    print("         history:")
    for t in history:
        print(f"  {_when(t.at)}  {safe(t.from_state or '(new)'):>9} -> {safe(t.to_state):<9} {safe(t.reason)}")
    return 0


def _cancel(settings: Settings, args: argparse.Namespace) -> int:
    """Cancel one grant in one guarded step (run twice: the second says it was already cancelled)."""
    from admin import grant_actions  # here: listing and showing do not need it

    ledger = connect.ledger(settings)
    try:
        result = grant_actions.cancel(
            ledger, args.grant_id, args.reason, audit=connect.audit_log(ledger), actor=connect.actor()
        )
    except grant_actions.ActionRefused as exc:  # its message says what the grant is now
        raise CliError(exc.message) from None
    print(safe(result.message))
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    """Queue dead grants again, each in one atomic step: a second run (or a run after a kill) skips what moved."""
    from admin import grant_actions  # here: listing and showing do not need it

    ledger = connect.ledger(settings)
    if args.all == bool(args.grant_ids):
        raise CliError("grants replay: give grant ids or --all (not both)")
    audit, who = connect.audit_log(ledger), connect.actor()
    if args.all:
        try:
            bulk = grant_actions.bulk_replay(
                ledger, _query(args, GrantState.DEAD), up_to=time.time(), audit=audit, actor=who
            )
        except grant_actions.ActionUnconfirmed as exc:
            for grant_id in exc.done:
                print(f"grant {grant_id} queued again")
            raise
        for grant_id in bulk.replayed:
            print(f"grant {grant_id} queued again")
        print(f"{len(bulk.replayed)} grant(s) replayed")
        return 0
    replayed = 0
    for grant_id in args.grant_ids:
        try:
            result = grant_actions.replay(ledger, grant_id, audit=audit, actor=who)
        except grant_actions.GrantMissing as exc:
            raise CliError(exc.message) from None
        except grant_actions.ActionRefused as exc:
            print(f"{safe(exc.message)}; skipped", file=sys.stderr)
            continue
        replayed += 1
        print(result.message)
    print(f"{replayed} grant(s) replayed")
    return 0


def _resolve(settings: Settings, args: argparse.Namespace) -> int:
    """Decide an ``unknown`` grant in one atomic step (safe to run twice: the second finds it decided)."""
    from admin import grant_actions  # here: listing and showing do not need it

    decision = (
        grant_actions.Decision.DELIVERED
        if args.delivered
        else grant_actions.Decision.VERIFY
        if args.verify
        else grant_actions.Decision.RESEND
    )
    ledger = connect.ledger(settings)
    try:
        result = grant_actions.resolve(
            ledger, args.grant_id, decision, note=args.note, audit=connect.audit_log(ledger), actor=connect.actor()
        )
    except grant_actions.ActionRefused as exc:
        raise CliError(exc.message) from None
    print(safe(result.message))
    return 0


# --- helpers ----------------------------------------------------------------------------------
def _add_filters(parser: argparse.ArgumentParser) -> None:
    """The filters every listing shares with the console and ``GET /grants`` (``worker.grant_search``)."""
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--user", type=_discord_id("--user"), help="Discord user id")
    who.add_argument("--twitch", type=_given("--twitch"), help="Twitch login or user id")
    who.add_argument("--patreon", type=_given("--patreon"), help="Patreon member id, user id or name")
    who.add_argument("--search", type=_given("--search"), help="any of those, or an idempotency key")
    parser.add_argument("--source", type=_given("--source"), help="twitch, patreon, api or cli")
    parser.add_argument("--guild", type=_discord_id("--guild"), help="Discord guild id")


def _discord_id(option: str) -> Callable[[str], str]:
    return domain.command_line(domain.discord_id, field=option)


def _given(option: str) -> Callable[[str], str]:
    """A filter's text as given; an empty one (an unset shell variable) is refused, never "match every grant"."""

    def parse(text: str) -> str:
        if not text.strip():
            raise CliError(f"{option}: must not be empty")
        return text

    return parse


def _query(args: argparse.Namespace, state: GrantState | None) -> GrantQuery:
    text = args.user or args.twitch or args.patreon or args.search or ""
    try:
        return GrantQuery(state=state, source=args.source or "", guild_id=args.guild or "", text=text)
    except domain.InvalidInput as exc:
        raise CliError(f"--{exc}") from None


def _get(ledger: Ledger, grant_id: str) -> Grant:
    grant = ledger.get(grant_id)
    if grant is None:
        raise CliError(f"no grant with id '{grant_id}'")
    return grant


def _parse_item(text: str) -> GrantItem:
    item_id, sep, amount_text = text.rpartition("=")
    if not sep or not item_id:
        raise CliError(f"--item '{text}': expected ID=AMOUNT, e.g. gem=5")
    try:
        field = f"--item {text!r}"
        return GrantItem(domain.item_id(item_id, field=field), domain.parse_amount(amount_text, field=field))
    except domain.InvalidInput as exc:
        raise CliError(str(exc)) from None


def _etas(settings: Settings, grants: list[Grant]) -> dict[str, Eta]:
    """When each waiting grant of ``grants`` is expected to go out (``worker.eta``)."""
    if all(g.state in FINAL_STATES for g in grants):
        return {}
    from config.rewards import load_rewards  # here: only waiting grants need the rules' default guild

    keyring = settings.keyring(load_rewards(settings.rewards_file, missing_ok=True).guild_id)
    return EtaEstimator.build(connect_redis(settings), settings, keyring).for_grants(grants)


def _print_grants(
    grants: list[Grant], *, as_json: bool, errors: bool = False, etas: dict[str, Eta] | None = None
) -> None:
    etas = etas or {}
    if as_json:
        print(json.dumps([{**g.to_dict(), "eta": _eta_dict(etas.get(g.id))} for g in grants], indent=2))
        return
    if not grants:
        print("no grants")
        return
    for g in grants:
        items = ", ".join(f"{safe(i.item_id)} x {_amount(i.amount)}" for i in g.items)
        who = f"{safe(g.guild_id)}/{safe(g.user_id)}"
        line = f"{safe(g.id)}  {g.state.value:<9} {_when(g.updated_at)}  {who}  {items}  [{safe(g.source)}]"
        if g.id in etas:
            line += f"  eta: {safe(etas[g.id].describe())}"
        if errors and g.last_error:
            line += f"\n    last error: {safe(g.last_error)}"
        print(line)


def _eta_dict(eta: Eta | None) -> dict[str, object] | None:
    return None if eta is None else eta.to_dict()


def _amount(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
