"""The console's front page (``/console``): per guild and key, what waits, what failed, what went out today."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from admin.console.context import BASE, ConsoleContext, console_page
from admin.console.route import ConsoleRoute
from admin.console.twitch_page import vault_of
from admin.overview import overview, revoked_subscription
from admin.twitch_status import token_status
from worker.eta import describe_wait

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute)


@router.get(BASE)
def overview_page(console: Annotated[ConsoleContext, Depends(console_page)]) -> Response:
    state = console.state
    rewards = state.rewards
    rule_guilds = [rule.guild_id for rule in rewards.rule_guilds() if rule.guild_id]
    if rewards.guild_id:
        rule_guilds.append(rewards.guild_id)
    seen = overview(state.redis, state.keys, state.settings, state.keyring, state.inbox, rule_guilds)
    revocations = [(event, *revoked_subscription(event)) for event in seen.revocations]
    with vault_of(state) as vault:
        stored = vault.state()
        twitch = token_status(stored, vault.key_problem, vault.key_fits())
    return console.render(
        "overview.html",
        active="overview",
        view=seen,
        revocations=revocations,
        describe_wait=describe_wait,
        twitch=twitch,
        twitch_login=stored.login,
    )
