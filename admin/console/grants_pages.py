"""Grants in the console: the list (filters, search, pages), one grant's page, and what can be done to it.

Every action calls the function the operator API and the CLI call (``admin.grant_actions``,
``producers.link_actions``), with the grant's ``version`` (its history length when
the page was shown): a double click or a form sent again finds the grant moved and does nothing.
Each answer is a 303 back to the page with a flash message saying what happened.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Response

from admin import grant_actions
from admin.console.context import BASE, ConsoleContext, ConsoleForm, console_form, console_page, see_other
from admin.console.route import ConsoleRoute
from config.domain import InvalidInput, parse_digits
from producers.inbox import event_id
from producers.link_actions import LinkRefused, link
from worker.grant import FINAL_STATES, Grant, GrantState
from worker.grant_search import BadCursor, GrantQuery, find_grants
from worker.ledger import Transition

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute)

GRANTS_PATH = f"{BASE}/grants"
SOURCES = ("twitch", "patreon", "api", "cli")
PLATFORM_NAMES = {"twitch": "Twitch", "patreon": "Patreon"}
PAGE_SIZE = 50
#: ``repr(time.time())``: ASCII digits and one dot.
_SHOWN_AT = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,20})?")
_GRANT_ID = re.compile(r"^[0-9a-f]{32}$")


def _query(state: str, source: str, guild: str, q: str) -> GrantQuery:
    """The filters of a request; raises ``InvalidInput`` with a message for the page."""
    if state and state not in {s.value for s in GrantState}:
        raise InvalidInput("state", "not a grant state")
    return GrantQuery(state=GrantState(state) if state else None, source=source, guild_id=guild, text=q.strip())


def who(grant: Grant) -> str:
    """Who the grant is for, in words: the Discord id, or who it waits for."""
    platform = PLATFORM_NAMES.get(grant.platform, grant.platform)
    name = f" {grant.names[0]}" if grant.names else ""
    if grant.state == GrantState.PARKED and not grant.user_id:
        return f"waiting for a link: {platform} user{name} ({grant.external_id})"
    if grant.platform and grant.external_id:
        return f"{grant.user_id} ({platform}{name})"
    return grant.user_id


def _guilds(console: ConsoleContext) -> list[str]:
    return sorted(raw.decode() for raw in console.state.redis.smembers(console.state.keys.guilds()))  # type: ignore[union-attr]


@router.get(GRANTS_PATH)
def grants_list(
    console: Annotated[ConsoleContext, Depends(console_page)],
    state: str = "",
    source: str = "",
    guild_id: str = "",
    q: str = "",
    cursor: str = "",
    guild: str = "",
    after: str = "",
) -> Response:
    """Grants newest first; filters combine; a search finds a supporter by any id or name they go by.
    ``guild`` and ``after`` are the old names of ``guild_id`` and ``cursor`` (kept for old links)."""
    guild, after = guild_id or guild, cursor or after
    values: dict[str, Any] = {
        "state": state,
        "source": source,
        "guild": guild,
        "q": q,
        "sources": SOURCES,
        "states": [s.value for s in GrantState],
        "guilds": _guilds(console),
        "paged": bool(after),
        "error": "",
        "first": False,
        "bulk_link": "",
        "next_link": "",
    }
    try:
        query = _query(state, source, guild, q)
        if _GRANT_ID.fullmatch(q.strip()) and console.state.ledger.get(q.strip()) is not None:
            return see_other(f"{GRANTS_PATH}/{q.strip()}")
        page = find_grants(console.state.redis, console.state.keys, query, cursor=after or None, limit=PAGE_SIZE)
    except InvalidInput as exc:  # BadCursor too
        values.update(error=str(exc), first=isinstance(exc, BadCursor))
        return console.render("grants.html", active="grants", rows=[], **values, status_code=400)
    filters = query.filters()
    rows = [{"grant": grant, "who": who(grant)} for grant in page.grants]
    if page.next_cursor:
        values["next_link"] = f"{GRANTS_PATH}?{urlencode({**filters, 'cursor': page.next_cursor})}"
    if state == GrantState.DEAD.value and rows:
        values["bulk_link"] = f"{GRANTS_PATH}/replay-dead?{urlencode(filters)}"
    return console.render("grants.html", active="grants", rows=rows, page=page, **values)


@router.get(f"{GRANTS_PATH}/replay-dead")
def bulk_replay_confirm(
    console: Annotated[ConsoleContext, Depends(console_page)],
    source: str = "",
    guild_id: str = "",
    q: str = "",
    guild: str = "",
) -> Response:
    """How many dead grants the filters match, and a form to replay them all (nothing happens before it)."""
    guild = guild_id or guild
    try:
        query = _query(GrantState.DEAD.value, source, guild, q)
    except InvalidInput as exc:
        console.flash(f"Not replayed: {exc}", "error")
        return see_other(GRANTS_PATH)
    now = time.time()
    count = grant_actions.count_dead(console.state.ledger, query, up_to=now)
    return console.render(
        "bulk_replay.html",
        active="grants",
        count=count,
        up_to=repr(now),
        source=source,
        guild=guild,
        q=q,
        back=f"{GRANTS_PATH}?{urlencode(query.filters())}",
        limit=grant_actions.MAX_BULK,
    )


@router.post(f"{GRANTS_PATH}/replay-dead")
def bulk_replay(form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    """Replay every dead grant the filters matched when the count was shown (a second submit finds none dead)."""
    console = form.console
    try:
        query = _query(GrantState.DEAD.value, form.get("source"), form.get("guild_id"), form.get("q"))
        up_to = _shown_at(form.get("up_to"))
    except InvalidInput as exc:
        console.flash(f"Not replayed: {exc}", "error")
        return see_other(GRANTS_PATH)
    done = grant_actions.bulk_replay(
        console.state.ledger, query, up_to=up_to, audit=console.state.audit, actor=console.actor
    )
    skipped = f" ({done.skipped} had moved meanwhile and were left alone)" if done.skipped else ""
    kind = "ok" if done.replayed else "error"
    console.flash(f"{len(done.replayed)} dead grant(s) queued again{skipped}.", kind)
    return see_other(f"{GRANTS_PATH}?{urlencode({**query.filters(), 'state': GrantState.DEAD.value})}")


def _attempts(history: list[Transition]) -> list[Transition]:
    """The outcome of each request sent: every step out of ``sending`` (WetBot's answer is its reason)."""
    return [step for step in history if step.from_state == GrantState.SENDING.value]


@router.get(f"{GRANTS_PATH}/{{grant_id}}")
def grant_page(grant_id: str, console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    """One grant: items, state, ETA, history, attempts, results, its event, who it waits for, and its actions."""
    state = console.state
    grant = state.ledger.get(grant_id) if _GRANT_ID.fullmatch(grant_id) else None
    if grant is None:
        return console.render(
            "not_found.html",
            status_code=404,
            what="grant",
            hint="It may be mistyped, or older than the ledger's retention.",
        )
    history = state.ledger.history(grant.id)
    eta = None if grant.state in FINAL_STATES else state.eta.for_grants([grant]).get(grant.id)
    source_event = grant.event_id or (event_id("twitch", grant.source_ref) if grant.source == "twitch" else "")
    if source_event and not state.inbox.exists(source_event):
        source_event = ""
    waits_for_key = grant.state == GrantState.PARKED and bool(
        state.redis.sismember(state.keys.parked_for_key(grant.guild_id), grant.id)
    )
    return console.render(
        "grant.html",
        active="grants",
        grant=grant,
        who=who(grant),
        platform_name=PLATFORM_NAMES.get(grant.platform, grant.platform),
        history=history,
        attempts=_attempts(history),
        version=len(history),
        eta=eta,
        source_event=source_event,
        waits_for_key=waits_for_key,
        waits_for_link=grant.state == GrantState.PARKED and not waits_for_key and bool(grant.external_id),
        can_cancel=grant.cancellable,
        maybe_applied=grant.state in (GrantState.QUEUED, GrantState.RETRYING) and not grant.cancellable,
    )


def _shown_at(text: str) -> float:
    """The time the bulk form's count was taken (``repr(time.time())`` when the page was shown)."""
    up_to = float(text) if _SHOWN_AT.fullmatch(text) else math.nan
    if not math.isfinite(up_to) or up_to > time.time() + 5:
        raise InvalidInput("", "the count this form was sent with is not one this console showed; count again")
    return up_to


def _version(form: ConsoleForm) -> int:
    """The history length the form was shown with (-1, "do not check", when the form has none)."""
    text = form.get("version")
    return -1 if text == "" else parse_digits(text, field="version", max_digits=9)


def _act(form: ConsoleForm, grant_id: str, run: Callable[[], grant_actions.ActionDone]) -> Response:
    """Run a grant action and flash what it did (or why it did nothing); back to the grant's page."""
    console = form.console
    if not _GRANT_ID.fullmatch(grant_id):
        console.flash("No such grant.", "error")
        return see_other(GRANTS_PATH)
    try:
        result = run()
    except grant_actions.GrantMissing as exc:
        console.flash(exc.message, "error")
        return see_other(GRANTS_PATH)
    except grant_actions.ActionRefused as exc:  # ActionInvalid too: a cancel without a reason
        console.flash(f"Nothing done: {exc}", "error")
    else:
        console.flash(result.message[:1].upper() + result.message[1:] + ".")
    return see_other(f"{GRANTS_PATH}/{grant_id}")


@router.post(f"{GRANTS_PATH}/{{grant_id}}/replay")
def replay(grant_id: str, form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    state, actor = form.console.state, form.console.actor
    return _act(
        form,
        grant_id,
        lambda: grant_actions.replay(state.ledger, grant_id, version=_version(form), audit=state.audit, actor=actor),
    )


@router.post(f"{GRANTS_PATH}/{{grant_id}}/cancel")
def cancel(grant_id: str, form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    state, actor = form.console.state, form.console.actor
    reason = form.get("reason")
    return _act(
        form,
        grant_id,
        lambda: grant_actions.cancel(
            state.ledger, grant_id, reason, version=_version(form), audit=state.audit, actor=actor
        ),
    )


@router.post(f"{GRANTS_PATH}/{{grant_id}}/resolve")
def resolve(grant_id: str, form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    state, actor = form.console.state, form.console.actor
    try:
        decision = grant_actions.Decision(form.get("decision"))
    except ValueError:
        form.console.flash("Nothing done: choose delivered, send again or check by read-back.", "error")
        return see_other(f"{GRANTS_PATH}/{grant_id}")
    return _act(
        form,
        grant_id,
        lambda: grant_actions.resolve(
            state.ledger,
            grant_id,
            decision,
            note=form.get("note"),
            version=_version(form),
            audit=state.audit,
            actor=actor,
        ),
    )


@router.post(f"{GRANTS_PATH}/{{grant_id}}/link")
def link_user(grant_id: str, form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    """Link the platform user a parked grant waits for to a Discord id: every grant parked for them is queued."""
    console = form.console
    state = console.state
    grant = state.ledger.get(grant_id) if _GRANT_ID.fullmatch(grant_id) else None
    if grant is None:
        console.flash("No such grant.", "error")
        return see_other(GRANTS_PATH)
    try:
        done = link(
            state.ledger,
            state.links,
            grant.platform,
            grant.external_id,
            form.get("discord_user_id"),
            audit=state.audit,
            actor=console.actor,
        )
    except LinkRefused as exc:
        console.flash(f"Not linked: {exc}", "error")
    else:
        console.flash(f"{done.message}.")
    return see_other(f"{GRANTS_PATH}/{grant_id}")
