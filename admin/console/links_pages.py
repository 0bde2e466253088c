"""Links in the console: who is who (Twitch/Patreon user -> Discord user); search, add, remove.

Adding calls ``producers.link_actions.link``, as ``POST /links`` and the CLI do: the
link is stored, then every grant parked for that user is queued, each exactly once, so a
form sent twice releases nothing the second time. Static links (the rewards file's
``[twitch.links]``) are shown but cannot be removed here: they live in the file.

A Twitch user may be given by login instead of id: it is resolved through Helix as the connected
broadcaster (``producers.twitch.logins``), and the login and display name are shown next to the id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from admin.console.context import BASE, ConsoleContext, ConsoleForm, console_form, console_page, see_other
from admin.console.route import ConsoleRoute
from config.domain import is_platform_user_id
from producers.link_actions import LinkRefused, link, unlink
from producers.links import PLATFORMS
from producers.twitch.logins import LinkNames, LoginNotResolved, TwitchTarget, resolve_twitch_user, twitch_login

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
    #: the login and display name remembered for this user ("" when linked by id).
    login: str = ""
    display_name: str = ""

    @property
    def name(self) -> str:
        """The display name, with the login when it differs from it other than by case ("" when unknown)."""
        if not self.login:
            return self.display_name
        if not self.display_name or self.display_name.lower() == self.login:
            return self.display_name or self.login
        return f"{self.display_name} ({self.login})"

    def matches(self, query: str) -> bool:
        """``query`` is part of an id, the login or the display name (names case-insensitively)."""
        folded = query.casefold()
        return (
            query in self.external_id
            or query in self.discord_user_id
            or folded in self.login.casefold()
            or folded in self.display_name.casefold()
        )

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
    """Every link of both platforms (``q``: part of an id, login or display name), and the add form."""
    query = q.strip()[:MAX_QUERY_CHARS]
    state = console.state
    rows = []
    for platform in PLATFORMS:
        names = LinkNames(state.redis, state.keys).all(platform)
        for ext, (discord, origin) in sorted(state.links.all(platform).items()):
            rows.append(LinkRow(platform, ext, discord, origin, *names.get(ext, ("", ""))))
    total = len(rows)
    if query:
        rows = [row for row in rows if row.matches(query)]
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
    platform, external_id = form.get("platform"), form.get("external_id").strip()
    target = TwitchTarget(external_id)
    try:
        if platform == "twitch" and twitch_login(external_id) is not None and not is_platform_user_id(external_id):
            target = resolve_twitch_user(state.settings, state.redis, external_id)
        done = link(
            state.ledger,
            state.links,
            platform,
            target.user_id,
            form.get("discord_user_id"),
            audit=state.audit,
            actor=console.actor,
        )
    except (LinkRefused, LoginNotResolved) as exc:
        console.flash(f"Not linked: {exc}", "error")
    else:
        if target.user is not None:
            LinkNames(state.redis, state.keys).remember(platform, target.user)
        named = f" ({target.user.display_name or target.user.login})" if target.user is not None else ""
        console.flash(f"{done.message}{named}.")
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
