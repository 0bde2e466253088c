"""Overview (``/console``) and grants (``/console/grants``...): placeholders until their pages are built."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from producers.console.context import BASE, ConsoleContext, console_page
from producers.console.route import ConsoleRoute

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute)


@router.get(BASE)
def overview(console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    return console.render("coming.html", active="overview", title="Overview", text="The overview is coming.")


@router.get(f"{BASE}/grants")
def grants(console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    return console.render("coming.html", active="grants", title="Grants", text="The grants pages are coming.")


@router.get(f"{BASE}/grants/{{grant_id}}")
def grant(grant_id: str, console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    return console.render("coming.html", active="grants", title="Grant", text="The grant page is coming.")
