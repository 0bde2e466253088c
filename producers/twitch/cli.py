"""Twitch commands: ``twitch connect``, ``twitch disconnect``, ``twitch run``, ``twitch send-test <event>`` and
``twitch subscribe``.

``twitch connect`` runs Twitch's Device Code Grant Flow for the scopes the rules need
(``producers.twitch.oauth.scopes_for``): it prints them, then the URL and code the broadcaster enters,
waits for the approval, learns the broadcaster's id and login from the token, and stores the tokens
encrypted (``producers.twitch.tokens``). It needs nothing but the environment. ``twitch disconnect`` revokes
them at Twitch and forgets them.

``twitch run`` is the Twitch process (Procfile ``eventsub``, ``producers.twitch.runner``).

``twitch send-test`` signs a sample event with ``TWITCH_WEBHOOK_SECRET`` and
posts it to a running instance, printing what it answered. ``twitch subscribe``
runs one webhook subscription sweep (``producers.twitch.subscription_sweep``, what
``twitch run`` does by itself every few minutes): it creates the EventSub
subscriptions the rules need, recreates failed or revoked ones and removes our
stale ones, so running it twice changes nothing the second time. Neither ever
prints a secret.
"""

from __future__ import annotations

import argparse
import os
import sys

import requests

from config.domain import PLATFORM_ID_RULE, is_platform_user_id
from config.errors import CliError
from config.rewards import ChannelPointsRedemptionRule, TwitchSection, load_rewards
from config.settings import Settings
from producers.answer_output import format_answer
from producers.printable import terminal_safe
from producers.twitch.helix import HelixClient, HelixError
from producers.twitch.samples import (
    SAMPLE_REWARD_ID,
    SAMPLE_REWARD_TITLE,
    SAMPLE_TYPES,
    sample_event,
    sample_payload,
    signed_request,
)
from producers.twitch.subscription_sweep import SubscriptionSweep, webhook_callback
from producers.twitch.subscriptions import WantedSubscription, wanted_subscriptions

__all__ = ["WantedSubscription", "register", "wanted_subscriptions"]

#: Seconds to wait for the running instance to answer a test event.
SEND_TIMEOUT_S = 10.0
MESSAGE_TYPES = ("notification", "webhook_callback_verification", "revocation")


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``connect``, ``disconnect``, ``run``, ``send-test`` and ``subscribe`` to the ``twitch`` noun."""
    twitch = parser.add_subparsers(title="twitch commands", metavar="COMMAND")
    connect = twitch.add_parser(
        "connect",
        help="connect the channel: authorise this app on Twitch (device code) and store its tokens",
        description="Asks Twitch for a code the broadcaster enters at twitch.tv/activate, waits for the "
        "approval and stores the tokens, encrypted with TOKEN_ENCRYPTION_KEY. Needs TWITCH_CLIENT_ID "
        "(and TWITCH_CLIENT_SECRET for a confidential app), TOKEN_ENCRYPTION_KEY and REDIS_URL.",
    )
    connect.set_defaults(run=_connect)
    disconnect = twitch.add_parser(
        "disconnect",
        help="disconnect the channel: revoke its tokens at Twitch and forget them (safe to run twice)",
        description="Revokes the stored tokens at Twitch and deletes them. Run with nothing connected, it says "
        "so and exits 0. Needs TWITCH_CLIENT_ID, TOKEN_ENCRYPTION_KEY and REDIS_URL.",
    )
    disconnect.set_defaults(run=_disconnect)
    run = twitch.add_parser(
        "run",
        help="the Twitch process: redemptions told, tokens validated, EventSub over WebSocket (one at a time)",
        description="Runs until SIGTERM: validates the tokens hourly, tells Twitch each redemption's fate, "
        "with TWITCH_TRANSPORT=webhook keeps the EventSub subscriptions following the rules (every 3 min) and, "
        "with TWITCH_TRANSPORT=websocket, keeps the EventSub WebSocket session (no public HTTPS needed). "
        "Several may run: one works, the others take over when it stops. Idles while no channel is connected.",
    )
    run.set_defaults(run=_run)
    test = twitch.add_parser("send-test", help="sign a sample Twitch EventSub event and post it")
    test.add_argument(
        "event",
        choices=sorted(SAMPLE_TYPES),
        metavar="EVENT",
        help=f"EventSub subscription type: {', '.join(SAMPLE_TYPES)}",
    )
    test.add_argument("--url", help="base URL of the running instance (default http://127.0.0.1:$PORT, PORT 8000)")
    test.add_argument("--user-id", help="Twitch user id the event is from (default 1234, as in Twitch's samples)")
    test.add_argument("--reward-id", help="custom reward id of a redemption (default: the rewards file's first one)")
    test.add_argument("--user-input", default="pogchamp", help="the viewer's text of a redemption")
    test.add_argument("--message-type", choices=MESSAGE_TYPES, default="notification")
    test.set_defaults(run=_send_test)

    subscribe = twitch.add_parser(
        "subscribe",
        help="one subscription sweep now: create what the rules need, recreate failed ones, remove our stale ones",
        description="What the Twitch process (twitch run) does by itself every few minutes with "
        "TWITCH_TRANSPORT=webhook; running it by hand is optional.",
    )
    subscribe.add_argument(
        "--callback", help="public https URL of POST /webhooks/twitch (default: PUBLIC_URL + /webhooks/twitch)"
    )
    subscribe.add_argument(
        "--broadcaster-id", help="the channel's Twitch user id (default: the connected channel's, twitch connect)"
    )
    subscribe.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    subscribe.set_defaults(run=_subscribe)


# -- twitch run ---------------------------------------------------------------------------------


def _run(settings: Settings, args: argparse.Namespace) -> int:
    """The Twitch process (Procfile ``eventsub``); loaded here: websockets and the vault only it needs."""
    del args
    from producers.twitch.runner import run_from_settings

    return run_from_settings(settings)


# -- twitch connect ---------------------------------------------------------------------------


def _connect(settings: Settings, args: argparse.Namespace) -> int:
    """The device flow, start to stored tokens; every way it can end early is one ``CliError`` line."""
    del args
    # Loaded here: ``cryptography`` and the vault are needed by no other twitch command.
    from producers.twitch.oauth import TwitchAuthError, scopes_for
    from producers.twitch.tokens import TokenVault, TokenVaultError
    from worker.connections import connect_redis

    if settings.twitch_client_id is None:
        raise CliError("TWITCH_CLIENT_ID is not set: it is the client id of your app at dev.twitch.tv/console")
    if settings.token_encryption_key is None:
        raise CliError(
            "TOKEN_ENCRYPTION_KEY is not set: the tokens cannot be stored without it "
            "(set it to at least 32 random characters, e.g. openssl rand -base64 32)"
        )
    scopes = scopes_for(load_rewards(settings.rewards_file, missing_ok=True).twitch)
    redis = connect_redis(settings)
    vault = TokenVault.from_settings(settings, redis)
    oauth = vault.oauth
    try:
        redis.ping()  # before the broadcaster approves anything: storing is the last step
        before = vault.state()
        print(f"scopes asked for: {' '.join(scopes) if scopes else 'none (no rule in the rules file needs one)'}")
        code = oauth.start_device_flow(scopes)
        print(
            f"open {terminal_safe(code.verification_uri)} and enter the code {terminal_safe(code.user_code)} "
            f"(it expires in {_duration(code.expires_in_s)})",
            flush=True,
        )
        print("waiting for the approval...", flush=True)
        pair = oauth.poll_device_token(code, scopes)
        stored, before = vault.connect(pair)
    except (TwitchAuthError, TokenVaultError) as exc:
        raise CliError(f"{exc}; run wetbot-rewards twitch connect again" if _retry_helps(exc) else str(exc)) from None
    finally:
        oauth.close()
        redis.close()
    if before.user_id and before.user_id != stored.user_id:
        print(f"replaced the connection of {terminal_safe(before.login)} ({terminal_safe(before.user_id)})")
    print(f"connected as {terminal_safe(stored.login)} ({terminal_safe(stored.user_id)})")
    return 0


# -- twitch disconnect ----------------------------------------------------------------------------


def _disconnect(settings: Settings, args: argparse.Namespace) -> int:
    """Revoke the stored tokens at Twitch and forget them; nothing connected is not an error (exit 0)."""
    del args
    from producers.twitch.oauth import TwitchAuthError
    from producers.twitch.tokens import TokenVault, TokenVaultError
    from worker.connections import connect_redis

    if settings.twitch_client_id is None:
        raise CliError("TWITCH_CLIENT_ID is not set: it is the client id of your app at dev.twitch.tv/console")
    redis = connect_redis(settings)
    vault = TokenVault.from_settings(settings, redis)
    try:
        gone = vault.disconnect()
    except (TwitchAuthError, TokenVaultError) as exc:
        raise CliError(f"{exc}; nothing was removed") from None
    finally:
        vault.oauth.close()
        redis.close()
    if gone is None:
        print("no Twitch channel was connected: nothing to do")
    elif gone.revoked:
        print(f"disconnected {terminal_safe(gone.login)} ({terminal_safe(gone.user_id)}): tokens revoked at Twitch")
    else:
        print(
            f"forgot the tokens of {terminal_safe(gone.login)} ({terminal_safe(gone.user_id)}); they could not be "
            "read with this TOKEN_ENCRYPTION_KEY, so Twitch was not asked to revoke them: remove the app at "
            "twitch.tv/settings/connections"
        )
    return 0


def _retry_helps(exc: Exception) -> bool:
    """Whether connecting again can end better (an expired or declined code, Twitch out of reach)."""
    from producers.twitch.oauth import AccessDenied, DeviceCodeExpired, OAuthUnavailable

    return isinstance(exc, AccessDenied | DeviceCodeExpired | OAuthUnavailable)


def _duration(seconds: float) -> str:
    """``1800`` → ``30 min``, ``45`` → ``45 s``."""
    return f"{round(seconds / 60)} min" if seconds >= 120 else f"{round(seconds)} s"


# -- twitch send-test -------------------------------------------------------------------------


def _send_test(settings: Settings, args: argparse.Namespace) -> int:
    if settings.twitch_webhook_secret is None:
        raise CliError("TWITCH_WEBHOOK_SECRET is not set: the test event cannot be signed")
    if args.user_id is not None and not is_platform_user_id(args.user_id):
        raise CliError(f"--user-id: expected a Twitch user id, {PLATFORM_ID_RULE}")
    rewards = load_rewards(settings.rewards_file, missing_ok=True)
    reward_id, reward_title = _sample_reward(rewards.twitch, args.reward_id)
    event = sample_event(
        args.event, user_id=args.user_id, reward_id=reward_id, reward_title=reward_title, user_input=args.user_input
    )
    payload = sample_payload(args.event, event, message_type=args.message_type)
    body, headers = signed_request(
        settings.twitch_webhook_secret.get_secret_value(), payload, message_type=args.message_type
    )
    base = (args.url or f"http://127.0.0.1:{os.environ.get('PORT') or '8000'}").rstrip("/")
    url = f"{base}/webhooks/twitch"
    try:
        response = requests.post(url, data=body, headers=headers, timeout=SEND_TIMEOUT_S)
    except requests.RequestException as exc:
        raise CliError(f"cannot reach {url} ({type(exc).__name__}); is the service running?") from None
    print(f"sent {args.message_type} {args.event} (message id {headers['twitch-eventsub-message-id']}) to {url}")
    print(format_answer(response.status_code, response.reason or "", response.content))
    return 0 if response.ok else 1


def _sample_reward(section: TwitchSection, reward_id: str | None) -> tuple[str, str]:
    """The reward (id, title) a test redemption names: ``--reward-id``, else the first redemption rule's
    reward (its id, or its title on the sample id), else the sample's."""
    if reward_id is not None:
        return reward_id, SAMPLE_REWARD_TITLE
    for rule in section.rules:
        if isinstance(rule, ChannelPointsRedemptionRule):
            return rule.reward_id or SAMPLE_REWARD_ID, rule.reward or SAMPLE_REWARD_TITLE
    return SAMPLE_REWARD_ID, SAMPLE_REWARD_TITLE


# -- twitch subscribe ---------------------------------------------------------------------------


def _subscribe(settings: Settings, args: argparse.Namespace) -> int:
    client_id, client_secret = settings.twitch_client_id, settings.twitch_client_secret
    webhook_secret = settings.twitch_webhook_secret
    if client_id is None or client_secret is None or webhook_secret is None:
        named = {
            "TWITCH_CLIENT_ID": client_id,
            "TWITCH_CLIENT_SECRET": client_secret,
            "TWITCH_WEBHOOK_SECRET": webhook_secret,
        }
        missing = ", ".join(name for name, value in named.items() if value is None)
        raise CliError(f"{missing} must be set to create EventSub subscriptions")
    callback = args.callback or webhook_callback(settings.public_url)
    if callback is None:
        raise CliError("--callback is needed (or PUBLIC_URL set to the service's https:// address)")
    if not callback.startswith("https://"):
        raise CliError("--callback: Twitch only calls https:// URLs (port 443)")
    broadcaster_id = args.broadcaster_id or _connected_broadcaster(settings)
    if not is_platform_user_id(broadcaster_id):
        raise CliError(f"--broadcaster-id: expected the channel's Twitch user id, {PLATFORM_ID_RULE}")
    wanted = wanted_subscriptions(load_rewards(settings.rewards_file).twitch, broadcaster_id)
    if not wanted:
        print("the rewards file has no Twitch rules: nothing to subscribe to")
        return 0
    helix = HelixClient(
        api_url=settings.twitch_api_url,
        auth_url=settings.twitch_auth_url,
        client_id=client_id,
        client_secret=client_secret.get_secret_value(),
    )
    try:
        report = SubscriptionSweep(helix, callback, webhook_secret.get_secret_value()).run(wanted, dry_run=args.dry_run)
    except HelixError as exc:
        raise CliError(str(exc)) from None
    finally:
        helix.close()
    for line, problem in report.lines:
        print(line, file=sys.stderr if problem else sys.stdout)
    print(report.summary())
    return 1 if report.failed else 0


def _connected_broadcaster(settings: Settings) -> str:
    """The connected channel's id, from the stored tokens (``twitch connect``)."""
    from producers.twitch.tokens import TokenVault
    from worker.connections import connect_redis

    if settings.twitch_client_id is None:
        raise CliError("--broadcaster-id is needed (or a channel connected with wetbot-rewards twitch connect)")
    redis = connect_redis(settings)
    vault = TokenVault.from_settings(settings, redis)
    try:
        user_id = vault.state().user_id
    finally:
        vault.oauth.close()
        redis.close()
    if not user_id:
        raise CliError("--broadcaster-id is needed: no channel is connected (run wetbot-rewards twitch connect)")
    return user_id
