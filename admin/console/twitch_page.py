"""The console's Twitch page (``/console/twitch``): the connected channel, its token, scopes, rewards, gaps.

What it shows is ``admin.twitch_status``'s view of what the other processes left in Redis; no Twitch call
is made to draw it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Response

from admin.console.context import BASE, ConsoleContext, console_page
from admin.console.route import FORM_ACTION_ORIGIN, ConsoleRoute
from admin.twitch_status import twitch_status
from config.settings import Settings
from producers.state import AppState
from producers.twitch.gaps import missed_periods
from producers.twitch.logins import LinkNames
from producers.twitch.oauth import OAuthClient
from producers.twitch.reward_catalogue import RewardCatalogue
from producers.twitch.subscription_status import SubscriptionStatusBook
from producers.twitch.tokens import TokenVault

__all__ = ["CALLBACK_PATH", "TWITCH_PATH", "connect_blocker", "redirect_uri", "router", "vault_of"]

router = APIRouter(route_class=ConsoleRoute)

TWITCH_PATH = f"{BASE}/twitch"
#: Where Twitch sends the browser back to (``admin.console.twitch_connect``).
CALLBACK_PATH = f"{TWITCH_PATH}/callback"
_DEVICE_FLOW = "run wetbot-rewards twitch connect on the server (the device code flow) instead"


def redirect_uri(settings: Settings) -> str | None:
    """``<PUBLIC_URL>/console/twitch/callback``, the redirect URI Twitch is sent; None without ``PUBLIC_URL``."""
    return None if settings.public_url is None else settings.public_url + CALLBACK_PATH


def connect_blocker(settings: Settings) -> str | None:
    """Why the console cannot offer "Connect with Twitch" (None: it can)."""
    if settings.public_url is None:
        return f"PUBLIC_URL is not set, so Twitch cannot send the browser back here: {_DEVICE_FLOW}"
    if settings.twitch_client_id is None:
        return "TWITCH_CLIENT_ID is not set: set it to your app's client id (dev.twitch.tv/console)"
    if settings.twitch_client_secret is None:
        return f"TWITCH_CLIENT_SECRET is not set, and Twitch's redirect flow needs it: {_DEVICE_FLOW}"
    if settings.token_encryption_key is None:
        return "TOKEN_ENCRYPTION_KEY is not set: the tokens could not be stored"
    return None


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
    blocker = connect_blocker(state.settings)
    if blocker is None:  # the Connect form is answered with a redirect to Twitch: let the page's forms go there
        auth = urlsplit(state.settings.twitch_auth_url)
        setattr(console.request.state, FORM_ACTION_ORIGIN, f"{auth.scheme}://{auth.netloc}")
    return console.render(
        "twitch.html",
        active="twitch",
        view=view,
        client_id_set=state.settings.twitch_client_id is not None,
        connect_blocker=blocker,
        redirect_uri=redirect_uri(state.settings) or "",
        subscriptions=SubscriptionStatusBook(state.redis, state.keys).read(),
    )
