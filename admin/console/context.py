"""What a console page works with: the app state, the operator's session, and the ways a request is refused.

Pages (``admin.console.*_pages``) declare what they need as FastAPI dependencies:

* ``console_page`` for a GET: the operator must have a live session, or the browser is sent
  to the login form (303);
* ``console_form`` for a POST: a live session (else 403) and a form carrying this session's
  ``csrf`` token (else 403, nothing done).

Both answer 503 "set ADMIN_TOKEN" while no console token is configured. The refusals are
exceptions (``ConsoleRefusal``) that ``admin.console.route.ConsoleRoute`` turns into pages.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from admin.console.forms import read_form
from admin.console.rendering import render_html
from admin.console.sessions import Flash, Session, SessionStore
from config.errors import WetbotRewardsError
from producers.state import AppState, app_state

__all__ = [
    "COOKIE",
    "ConsoleContext",
    "ConsoleForm",
    "ConsoleOff",
    "ConsoleRefusal",
    "CsrfRefused",
    "NeedSession",
    "console_form",
    "console_page",
    "console_state",
    "see_other",
    "session_store",
]

logger = logging.getLogger("wetbot_rewards.console")

#: The session cookie (HttpOnly, SameSite=Strict, Path=/console).
COOKIE = "wbr_console"
#: Where the console lives; the cookie's Path.
BASE = "/console"


class ConsoleRefusal(WetbotRewardsError):
    """Raised for a request the console refuses before doing anything; ``ConsoleRoute`` answers it."""


class ConsoleOff(ConsoleRefusal):
    """Neither ``ADMIN_TOKEN`` nor ``GRANTS_API_TOKEN`` is set: 503 with how to turn the console on."""


class NeedSession(ConsoleRefusal):
    """No live session: a GET is sent to the login form, anything else gets 403."""


class CsrfRefused(ConsoleRefusal):
    """A form without this session's ``csrf`` token (a forged or stale form): 403, nothing done."""


def session_store(state: AppState) -> SessionStore:
    return SessionStore(state.redis, state.keys, state.settings.console_session_s)


def console_state(request: Request) -> AppState:
    """The app state, once the console is known to be on (a dependency; raises ``ConsoleOff``)."""
    state = app_state(request)
    if state.settings.console_token is None:
        raise ConsoleOff
    return state


@dataclass
class ConsoleContext:
    """One request of a logged-in operator: use ``render``, ``audit``, ``flash`` and ``see_other``."""

    request: Request
    state: AppState
    session: Session
    store: SessionStore
    #: the message left by the previous action (GET pages only).
    flash_message: Flash | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        """``console:<fingerprint>``, the audit log's name for this session."""
        return self.session.actor

    def render(self, template: str, *, active: str = "", status_code: int = 200, **values: Any) -> HTMLResponse:
        """``template`` (extending ``base.html``) with the layout's values: nav (``active``: ``overview``,
        ``grants``, ``events``, ``links``, ``twitch``, ``audit``), the session's csrf token and fingerprint,
        the flash."""
        context = {
            "active": active,
            "session": self.session,
            "csrf": self.session.csrf,
            "flash": self.flash_message,
            **values,
        }
        return render_html(template, context, status_code=status_code)

    def audit(self, action: str, target: str, outcome: str, detail: str = "") -> None:
        """Write an audit entry as this session (never put a token or cookie in it)."""
        self.state.audit.record(self.actor, action, target, outcome, detail)

    def flash(self, text: str, kind: str = "ok") -> None:
        """Show ``text`` on the next page this session opens (``kind``: ``ok`` or ``error``)."""
        self.store.set_flash(self.session, Flash(text, kind))


@dataclass
class ConsoleForm:
    """A POST whose session and CSRF token were checked: ``fields`` and the ``console`` context."""

    console: ConsoleContext
    fields: dict[str, str]

    def get(self, name: str) -> str:
        """The field's value, stripped ("" when absent)."""
        return self.fields.get(name, "")


def console_page(request: Request, state: Annotated[AppState, Depends(console_state)]) -> ConsoleContext:
    """A dependency: the operator's session, or ``NeedSession``. A GET takes the waiting flash message."""
    store = session_store(state)
    session = store.get(request.cookies.get(COOKIE))
    if session is None:
        raise NeedSession
    flash = store.pop_flash(session) if request.method in ("GET", "HEAD") else None
    return ConsoleContext(request, state, session, store, flash)


async def console_form(request: Request, console: Annotated[ConsoleContext, Depends(console_page)]) -> ConsoleForm:
    """A dependency for POST routes: the form, read (``read_form``) and checked against the session's csrf token."""
    fields = await read_form(request)
    sent = fields.pop("csrf", "")
    if not hmac.compare_digest(sent.encode(), console.session.csrf.encode()):
        logger.warning("console: %s %s refused: missing or wrong csrf token", request.method, request.url.path)
        raise CsrfRefused
    return ConsoleForm(console, fields)


def see_other(path: str) -> RedirectResponse:
    """303 to ``path`` (post/redirect/get: a reload of the next page does not post again)."""
    return RedirectResponse(path, status_code=303)
