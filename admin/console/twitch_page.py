"""The console's Twitch page (``/console/twitch``): the connected channel, its token, scopes, rewards, gaps.

What it shows is ``admin.twitch_status``'s view of what the other processes left in Redis; no Twitch call
is made to draw it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from admin.console.context import BASE, ConsoleContext, console_page
from admin.console.route import ConsoleRoute
from admin.twitch_status import twitch_status
from producers.state import AppState
from producers.twitch.logins import LinkNames
from producers.twitch.oauth import OAuthClient
from producers.twitch.reward_catalogue import RewardCatalogue
from producers.twitch.runner import missed_periods
from producers.twitch.tokens import TokenVault

__all__ = ["TWITCH_PATH", "router", "vault_of"]

router = APIRouter(route_class=ConsoleRoute)

TWITCH_PATH = f"{BASE}/twitch"


@contextmanager
def vault_of(state: AppState) -> Iterator[TokenVault]:
    """The token vault as this process has it (its HTTP session closed after use).

    Without ``TWITCH_CLIENT_ID`` the vault can still say what is stored (its state needs no Twitch call),
    so the page is drawn either way; only connecting and disconnecting need the client id.
    """
    settings = state.settings
    if settings.twitch_client_id is not None:
        vault = TokenVault.from_settings(settings, state.redis)
    else:
        oauth = OAuthClient(auth_url=settings.twitch_auth_url, client_id="")
        vault = TokenVault(state.redis, state.keys, settings.token_encryption_key, oauth)
    try:
        yield vault
    finally:
        vault.oauth.close()


@router.get(TWITCH_PATH)
def twitch_page(console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    state = console.state
    with vault_of(state) as vault:
        stored = vault.state()
        key_problem, key_fits = vault.key_problem, vault.key_fits()
    view = twitch_status(
        stored,
        key_problem=key_problem,
        key_fits=key_fits,
        section=state.rewards.twitch,
        catalogue=RewardCatalogue(state.redis, state.keys).load(),
        missed=missed_periods(state.redis, state.keys),
        display_names=LinkNames(state.redis, state.keys).all("twitch"),
    )
    return console.render(
        "twitch.html",
        active="twitch",
        view=view,
        client_id_set=state.settings.twitch_client_id is not None,
    )
