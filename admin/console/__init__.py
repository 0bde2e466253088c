"""The operator console (``/console``): server-rendered pages to watch and steer the service from a browser.

No JavaScript, no build step: Jinja2 templates (``templates/``), one stylesheet, plain HTML
forms. Nothing but the login form and the stylesheet is reachable without a session
(``context.console_page`` / ``console_form``); every form carries a CSRF token; every
answer carries strict security headers (``route.ConsoleRoute``); every action is written to
the audit log (``producers.audit``).

``router`` gathers the pages (``overview_page``, ``grants_pages``, ``events_pages``,
``links_pages``, ``twitch_page``, ``twitch_connect``,
``audit_pages``) before the catch-all "no such page".
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

from admin.console import (
    audit_pages,
    events_pages,
    grants_pages,
    links_pages,
    login_pages,
    overview_page,
    twitch_connect,
    twitch_page,
)
from admin.console.context import BASE, ConsoleContext, console_page
from admin.console.route import ConsoleRoute, message_page

__all__ = ["router"]

_not_found = APIRouter(route_class=ConsoleRoute)
#: Every method the catch-all answers: a console address never falls through to the API's JSON 404 or 405.
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_CATCH_ALL = f"{BASE}/{{rest:path}}"
_PAGES = (login_pages, overview_page, grants_pages, events_pages, links_pages, twitch_page, twitch_connect, audit_pages)


@_not_found.api_route(BASE, methods=_ANY_METHOD)  # after the overview: its other methods
@_not_found.api_route(_CATCH_ALL, methods=_ANY_METHOD)
def no_such_page(request: Request, console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    """Any other console address or method (behind the login too, so the page list is not probed from outside):
    405 with ``Allow`` when a page is there for other methods, else 404; both the console's own pages."""
    allowed = _methods_at(request)
    if allowed:
        page = message_page(405, "Not a way to use this page", f"This page takes {', '.join(allowed)} only.")
        page.headers["Allow"] = ", ".join(allowed)
        return page
    return console.render("not_found.html", status_code=404, what="page", hint="Use the menu above.")


def _methods_at(request: Request) -> list[str]:
    """The methods the console's pages at this request's path take (none: no page is there)."""
    methods: set[str] = set()
    for pages in _PAGES:
        for route in pages.router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
                methods |= route.methods or set()
    return sorted(methods)


router = APIRouter()
for _pages in _PAGES:
    router.include_router(_pages.router, include_in_schema=False)  # HTML pages: not part of the API schema
router.include_router(_not_found, include_in_schema=False)
