"""The Twitch connection as ``/readyz`` warnings and ``/metrics`` lines.

A revoked token, a refresh that keeps failing or tokens this key cannot open stop the Twitch work (catch-up,
fulfilment, refunds, the EventSub session) while webhooks and the rest keep going: readiness must not fail for
it (grants still queue), so it is a warning, and a gauge to alert on. Read from the vault's public state
(``producers.twitch.tokens.read_vault_state``): no token, no key, no Twitch call.
"""

from __future__ import annotations

from producers.twitch.tokens import AuthState, VaultState

__all__ = ["twitch_metric_lines", "twitch_warnings"]

_WHAT_TO_DO = {
    AuthState.REVOKED: "Twitch refused the broadcaster's tokens: connect again (wetbot-rewards twitch connect)",
    AuthState.REFRESH_FAILED: "the broadcaster's token could not be refreshed (Twitch unreachable?); retrying",
    AuthState.UNDECRYPTABLE: "the stored Twitch tokens do not open with TOKEN_ENCRYPTION_KEY: set the key they "
    "were stored with, or connect again",
}


def twitch_warnings(vault: VaultState, *, twitch_configured: bool) -> list[str]:
    """One line when the connection needs attention; a channel never connected counts only where Twitch is set
    up (``TWITCH_CLIENT_ID``), so a Patreon-only service has no warning."""
    if vault.state is AuthState.NOT_CONNECTED:
        return ["twitch: no channel connected (wetbot-rewards twitch connect)"] if twitch_configured else []
    todo = _WHAT_TO_DO.get(vault.state)
    if todo is None:
        return []
    return [f"twitch: {todo}" + (f" ({vault.reason})" if vault.reason else "")]


def twitch_metric_lines(vault: VaultState) -> list[str]:
    """``wetbot_rewards_twitch_auth{state=...}``: 1 for the connection's state, 0 for the others."""
    return [
        "# HELP wetbot_rewards_twitch_auth The broadcaster's Twitch authorisation, by state (1 = current).",
        "# TYPE wetbot_rewards_twitch_auth gauge",
        *(f'wetbot_rewards_twitch_auth{{state="{s.value}"}} {int(s is vault.state)}' for s in AuthState),
    ]
