"""The operator console (``/console``): server-rendered pages to watch and steer the service from a browser.

No JavaScript, no build step: Jinja2 templates (``templates/``), one stylesheet, plain HTML
forms. Nothing but the login form and the stylesheet is reachable without a session
(``context.console_page`` / ``console_form``); every form carries a CSRF token; every
answer carries strict security headers (``route.ConsoleRoute``); every action is written to
the audit log (``producers.audit``).

``router`` gathers the pages (``overview_page``, ``grants_pages``, ``events_pages``,
``links_pages``, ``audit_pages``) before the catch-all "no such page".
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from admin.console import audit_pages, events_pages, grants_pages, links_pages, login_pages, overview_page
from admin.console.context import BASE, ConsoleContext, console_page
from admin.console.route import ConsoleRoute

__all__ = ["router"]

_not_found = APIRouter(route_class=ConsoleRoute)


@_not_found.get(f"{BASE}/{{rest:path}}")
def no_such_page(rest: str, console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    """Any other console address (behind the login too, so the page list is not probed from outside)."""
    return console.render("not_found.html", status_code=404, what="page", hint="Use the menu above.")


router = APIRouter()
for _pages in (login_pages, overview_page, grants_pages, events_pages, links_pages, audit_pages):
    router.include_router(_pages.router, include_in_schema=False)  # HTML pages: not part of the API schema
router.include_router(_not_found, include_in_schema=False)
