"""Links in the console: who is who (Twitch/Patreon user -> Discord user); search, add, remove.

Adding calls ``producers.link_actions.link``, as ``POST /links`` and the CLI do: the
link is stored, then every grant parked for that user is queued, each exactly once, so a
form sent twice releases nothing the second time. Static links (the rewards file's
``[twitch.links]``) are shown but cannot be removed here: they live in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from admin.console.context import BASE, ConsoleContext, ConsoleForm, console_form, console_page, see_other
from admin.console.route import ConsoleRoute
from producers.link_actions import LinkRefused, link, unlink
from producers.links import PLATFORMS

__all__ = ["LinkRow", "router"]

router = APIRouter(route_class=ConsoleRoute)

LINKS_PATH = f"{BASE}/links"
#: Longest search text taken.
MAX_QUERY_CHARS = 40
#: Most links one page shows (a channel whose viewers link themselves may have thousands: search then).
MAX_ROWS = 200
#: How each origin is shown.
ORIGIN_LABELS = {"runtime": "added by an operator", "self": "viewer's link reward", "static": "rewards file"}


@dataclass(frozen=True)
class LinkRow:
    platform: str
    external_id: str
    discord_user_id: str
    origin: str

    @property
    def hook(self) -> str:
        """The row's ``data-link``: ``<platform>:<external id>``."""
        return f"{self.platform}:{self.external_id}"

    @property
    def removable(self) -> bool:
        return self.origin != "static"

    @property
    def origin_label(self) -> str:
        return ORIGIN_LABELS.get(self.origin, self.origin)


@router.get(LINKS_PATH)
def links_page(console: Annotated[ConsoleContext, Depends(console_page)], q: str = "") -> Response:
    """Every link of both platforms (``q``: part of an external or Discord id), and the add form."""
    query = q.strip()[:MAX_QUERY_CHARS]
    rows = [
        LinkRow(platform, ext, discord, origin)
        for platform in PLATFORMS
        for ext, (discord, origin) in sorted(console.state.links.all(platform).items())
    ]
    total = len(rows)
    if query:
        rows = [row for row in rows if query in row.external_id or query in row.discord_user_id]
    matched = len(rows)
    return console.render(
        "links.html",
        active="links",
        rows=rows[:MAX_ROWS],
        matched=matched,
        total=total,
        q=query,
        platforms=PLATFORMS,
        max_rows=MAX_ROWS,
    )


@router.post(LINKS_PATH)
def add_link(form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    """Link a user to a Discord id and queue their parked grants (``producers.link_actions.link``)."""
    console = form.console
    state = console.state
    try:
        done = link(
            state.ledger,
            state.links,
            form.get("platform"),
            form.get("external_id"),
            form.get("discord_user_id"),
            audit=state.audit,
            actor=console.actor,
        )
    except LinkRefused as exc:
        console.flash(f"Not linked: {exc}", "error")
    else:
        console.flash(f"{done.message}.")
    return see_other(LINKS_PATH)


@router.post(f"{LINKS_PATH}/remove")
def remove_link(form: Annotated[ConsoleForm, Depends(console_form)]) -> Response:
    """Forget a run-time link (a static one stays: it is in the rewards file)."""
    console = form.console
    platform, external_id = form.get("platform"), form.get("external_id")
    try:
        unlink(console.state.links, platform, external_id, audit=console.state.audit, actor=console.actor)
    except LinkRefused as exc:
        console.flash(f"Not removed: {exc}.", "error")
    else:
        console.flash(f"Removed the link of {platform} user {external_id}.")
    return see_other(LINKS_PATH)
