"""The audit log in the console: every operator action, newest first, with who (a session fingerprint)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from admin.console.context import BASE, ConsoleContext, console_page
from admin.console.route import ConsoleRoute
from config.domain import InvalidInput

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute)

PAGE_SIZE = 50


@router.get(f"{BASE}/audit")
def audit_page(console: Annotated[ConsoleContext, Depends(console_page)], before: str = "") -> Response:
    """Newest first; ``before`` (an entry id) pages back."""
    try:
        entries = console.state.audit.recent(limit=PAGE_SIZE + 1, before=before or None)
    except InvalidInput:
        entries = console.state.audit.recent(limit=PAGE_SIZE + 1)
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    return console.render(
        "audit.html",
        active="audit",
        entries=entries,
        me=console.actor,
        older=entries[-1].id if more and entries else None,
        paged=bool(before),
    )
