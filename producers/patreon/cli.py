"""``wetbot-rewards patreon send-test <trigger>``: sign a sample Patreon webhook and post it to a running instance.

The body comes from ``producers.patreon.samples`` (one fictional patron whose
pledge started at ``PLEDGE_START``); the charge date defaults to now, so each
``members:update`` is a new monthly charge and each ``members:pledge:create``
a new pledge. It is signed with ``PATREON_WEBHOOK_SECRET`` exactly as Patreon
signs (hex HMAC-MD5 of the bytes sent). The secret is never printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from config.domain import command_line, discord_id, platform_user_id, whole_number
from config.errors import CliError
from config.settings import Settings
from producers.answer_output import format_answer
from producers.patreon.events import MEMBER_TRIGGERS, normalise_date
from producers.patreon.samples import MEMBER_ID, TIER_ID, USER_ID, Member, encode, now_iso, portal_test
from producers.patreon.webhook import signature

__all__ = ["register"]

#: Seconds to wait for the service's answer.
TIMEOUT_S = 15.0
#: Port when neither ``--url`` nor ``PORT`` says otherwise (the Procfile's default).
DEFAULT_PORT = "8000"
#: Charge statuses Patreon documents (docs/patreon.md §4).
STATUSES = ("Paid", "Pending", "Declined", "Refunded", "Fraud", "Deleted", "Other")
#: ``--cents``: 0 or more, digits 0-9 only.
_cents = command_line(whole_number, field="--cents")
_MEMBER_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def register(noun: argparse.ArgumentParser) -> None:
    """Add ``send-test`` to the ``patreon`` noun."""
    patreon = noun.add_subparsers(title="patreon commands", metavar="COMMAND")
    parser = patreon.add_parser("send-test", help="sign a sample Patreon webhook and post it to the service")
    parser.add_argument("trigger", choices=sorted(MEMBER_TRIGGERS), help="X-Patreon-Event, e.g. members:update")
    parser.add_argument("--url", help="the service's base URL (default http://127.0.0.1:$PORT, PORT default 8000)")
    parser.add_argument("--discord-id", help="the patron's connected Discord id (default: not connected)")
    parser.add_argument("--status", choices=STATUSES, default="Paid", help="last_charge_status (default Paid)")
    parser.add_argument("--charge-date", help="last_charge_date, ISO 8601 (default now)")
    parser.add_argument("--tier", default=TIER_ID, help=f"entitled tier id (default {TIER_ID})")
    parser.add_argument(
        "--cents",
        type=command_line(whole_number, field="--cents"),
        default=500,
        help="the tier's amount in US cents (default 500)",
    )
    parser.add_argument("--member-id", default=MEMBER_ID, help="Patreon member id (a UUID)")
    parser.add_argument("--user-id", default=USER_ID, help=f"Patreon user id (default {USER_ID})")
    parser.add_argument("--portal-test", action="store_true", help="send the portal's 'Send Test' payload instead")
    parser.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Build, sign and post one event; print the service's answer. 0 on a 2xx answer, 1 otherwise."""
    if settings.patreon_webhook_secret is None:
        return _fail("PATREON_WEBHOOK_SECRET is not set; send-test signs with it, as Patreon does")
    endpoint = _endpoint(args.url)
    document = portal_test() if args.portal_test else _member(args).document()
    body = encode(document)
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked in _endpoint
        endpoint,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Patreon HTTP Robot (wetbot-rewards send-test)",
            "X-Patreon-Event": args.trigger,
            "X-Patreon-Signature": signature(settings.patreon_webhook_secret.get_secret_value(), body),
        },
    )
    print(f"POST {endpoint} {args.trigger} ({len(body)} bytes)")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - checked scheme
            status, reason, text = response.status, response.reason, response.read()
    except urllib.error.HTTPError as exc:
        status, reason, text = exc.code, exc.reason, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return _fail(f"cannot reach {endpoint} ({type(reason).__name__}); is the web process running?")
    print(format_answer(status, str(reason), text))
    return 0 if 200 <= status < 300 else 1


def _member(args: argparse.Namespace) -> Member:
    if args.discord_id is not None:
        discord_id(args.discord_id, field="--discord-id")
    if not _MEMBER_ID.fullmatch(args.member_id):
        raise CliError("--member-id: expected a UUID")
    platform_user_id(args.user_id, field="--user-id")
    charge_date = args.charge_date or now_iso()
    try:
        normalise_date(charge_date)
    except ValueError:
        raise CliError("--charge-date: expected an ISO 8601 date such as 2024-04-08T09:02:11+00:00") from None
    # As Patreon shows them: a failed charge ends the entitlement; a deleted pledge pays nothing next cycle.
    failed = args.status in ("Declined", "Fraud")
    return Member(
        member_id=args.member_id,
        user_id=args.user_id,
        discord_id=args.discord_id,
        status=args.status,
        charge_date=charge_date,
        tiers=() if failed else ((args.tier, args.cents),),
        will_pay_cents=0 if args.trigger == "members:pledge:delete" else None,
    )


def _endpoint(url: str | None) -> str:
    base = url or f"http://127.0.0.1:{os.environ.get('PORT') or DEFAULT_PORT}"
    try:
        parts = urlsplit(base)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise CliError("--url: expected an http:// or https:// URL such as http://127.0.0.1:8000")
    return base.rstrip("/") + "/webhooks/patreon"


def _fail(message: str) -> int:
    print(f"wetbot-rewards: {message}", file=sys.stderr)
    return 1
