"""EventSub over WebSocket (``TWITCH_TRANSPORT=websocket``): no public HTTPS endpoint needed.

How a session goes (docs/sources-sync.md §3):

* The first message on a fresh socket is ``session_welcome`` with the session id and
  ``keepalive_timeout_seconds``. Within that timeout the subscriptions the rules need are created on the
  session with the broadcaster's token, else Twitch closes the socket with 4003 "connection unused". A
  409 means Twitch holds one with that type and condition already: it is listed and, when it belongs to a
  session that is gone (an orphan), deleted and created again.
* No message for the keepalive timeout (plus a margin) means the socket is dead: a fresh connection
  follows, the subscriptions must be created again, and the silence is a gap.
* ``session_reconnect``: the reconnect URL is opened while the old socket is kept until the new welcome;
  the subscriptions move over by themselves (none is created again) and nothing is missed.
* ``revocation``: kept like the webhook keeps it (``webhook.handle_message`` records it); the subscription
  is created again at the next sweep, and the time without it is a gap.

After each subscribe round, sweep and revocation the subscriptions' status is written for the console
(``producers.twitch.subscription_status``), as the webhook transport's sweep does.
* Close codes 4000-4007 each give one log line and a fresh connection after a backoff.

Every notification goes through ``webhook.handle_message`` and ``record_event``, the path the webhook takes
after its signature check: the same dedupe by message id (Twitch resends a message with the same id), rules,
grants and inbox. A gap is reported to the ``GapSink`` (the runner), which schedules catch-up and records
for which period cheers, subs and follows may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import dramatiq.errors
from redis.exceptions import RedisError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from config.errors import WetbotRewardsError
from producers.inbox import EventOutcome
from producers.settle import record_event
from producers.state import AppState
from producers.twitch.broadcaster_api import BroadcasterHelix
from producers.twitch.helix import HelixError, Subscription, SubscriptionExists
from producers.twitch.oauth import TwitchAuthError
from producers.twitch.subscription_status import SubscriptionEntry, SubscriptionStatusBook
from producers.twitch.subscriptions import WantedSubscription
from producers.twitch.webhook import handle_message

__all__ = [
    "CLOSE_CODES",
    "Deliver",
    "EventSubClient",
    "GapSink",
    "Welcome",
    "deliver_to",
]

logger = logging.getLogger("wetbot_rewards.twitch.eventsub")

#: Seconds to wait for the welcome after the socket opened.
WELCOME_TIMEOUT_S: Final = 10.0
#: Seconds between fresh connections after failures: 1, 2, 5, 10, 30, then 30 again.
BACKOFF_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
#: Seconds between sweeps comparing the session's subscriptions with the rules' (revoked ones come back).
SWEEP_S: Final = 60.0
#: Seconds the old socket may take to close after the new one's welcome.
OLD_SOCKET_CLOSE_S: Final = 2.0
#: How often the read loop looks at the stop event and the keepalive deadline.
_TICK_S: Final = 0.25
#: Tries to store one notification before it is given up (and the loss is a gap).
_STORE_TRIES: Final = 3

#: Twitch's close codes (docs/sources-sync.md §3.1) and what each means for us.
CLOSE_CODES: Final[Mapping[int, str]] = {
    4000: "Twitch had an internal server error",
    4001: "we sent Twitch a message (only pongs are allowed): a bug on our side",
    4002: "we failed Twitch's ping-pong",
    4003: "connection unused: no subscription was created within the keepalive timeout (we subscribed too "
    "slowly, or every create failed)",
    4004: "the reconnect grace time expired: the reconnect URL was not opened in time",
    4005: "network timeout",
    4006: "network error",
    4007: "invalid reconnect: the reconnect URL was refused",
}


class GapSink(Protocol):
    """Who is told of gaps in delivery and of the last message seen (the runner)."""

    def gap(self, reason: str, since: float | None = None) -> None:
        """Events may have been missed from ``since`` (epoch seconds; None: unknown) until now."""

    def seen(self, at: float) -> None:
        """A message arrived at ``at`` (epoch seconds): delivery worked until then."""


#: Feeds one message into the service: (message id, message type, payload, headers, body) -> outcome.
Deliver = Callable[[str, str, dict[str, Any], Mapping[str, str], bytes], Awaitable[EventOutcome]]


def deliver_to(state: AppState) -> Deliver:
    """The webhook's path after its signature check, for messages that came over the WebSocket."""

    async def deliver(
        message_id: str, message_type: str, payload: dict[str, Any], headers: Mapping[str, str], body: bytes
    ) -> EventOutcome:
        outcome = await handle_message(state, message_id, message_type, payload)
        await record_event(state, "twitch", message_type, message_id, headers, body, outcome)
        return outcome

    return deliver


@dataclass(frozen=True)
class Welcome:
    """What ``session_welcome`` says."""

    session_id: str
    keepalive_s: float


@dataclass(frozen=True)
class _Message:
    metadata: dict[str, Any]
    payload: dict[str, Any]
    text: str

    @property
    def type(self) -> str:
        return str(self.metadata.get("message_type", ""))

    @property
    def id(self) -> str:
        return str(self.metadata.get("message_id", ""))


class _Dropped(WetbotRewardsError):
    """The session is over; a fresh connection follows."""

    def __init__(self, reason: str, *, quick: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        #: Reconnect at once (a dead keepalive), not after a backoff.
        self.quick = quick


def _parse(text: str | bytes) -> _Message:
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    try:
        data = json.loads(raw)
    except ValueError:
        raise _Dropped("Twitch sent a message that is not JSON") from None
    metadata = data.get("metadata") if isinstance(data, dict) else None
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(metadata, dict) or not isinstance(payload, dict):
        raise _Dropped("Twitch sent a message without metadata and payload")
    return _Message(metadata, payload, raw)


def _welcome(message: _Message) -> Welcome:
    session = message.payload.get("session")
    if message.type != "session_welcome" or not isinstance(session, dict):
        raise _Dropped(f"expected session_welcome, got {message.type or 'nothing'}")
    session_id, keepalive = session.get("id"), session.get("keepalive_timeout_seconds")
    if not isinstance(session_id, str) or not session_id or not isinstance(keepalive, int | float) or keepalive <= 0:
        raise _Dropped("the welcome has no session id or keepalive timeout")
    return Welcome(session_id, float(keepalive))


def keepalive_margin(keepalive_s: float) -> float:
    """Extra seconds of silence allowed past the keepalive timeout before the socket counts as dead."""
    return min(max(keepalive_s, 1.0), 10.0)


def _same(subscription: Subscription, wanted: WantedSubscription) -> bool:
    return (subscription.type, subscription.version, subscription.condition) == (
        wanted.type,
        wanted.version,
        wanted.condition,
    )


class EventSubClient:
    """One EventSub WebSocket connection at a time, kept up until ``stop`` is set.

    Parameters:
      url: ``TWITCH_EVENTSUB_WS_URL``.
      helix: Helix as the broadcaster (creates, lists and deletes the session's subscriptions).
      wanted: the subscriptions the rules need now (called after each welcome and at each sweep).
      deliver: where messages go (``deliver_to(state)``).
      gaps: told of gaps and of messages seen.
      sweep_s: seconds between comparisons of the session's subscriptions with the rules'.
      status: where the subscriptions' status is written after each subscribe round and revocation (None:
        nowhere).
    """

    def __init__(
        self,
        *,
        url: str,
        helix: BroadcasterHelix,
        wanted: Callable[[], Sequence[WantedSubscription]],
        deliver: Deliver,
        gaps: GapSink,
        sweep_s: float = SWEEP_S,
        status: SubscriptionStatusBook | None = None,
    ) -> None:
        self._url = url
        self._helix = helix
        self._wanted = wanted
        self._deliver = deliver
        self._gaps = gaps
        self._sweep_s = sweep_s
        self._status = status
        #: Why delivery stopped and since when (epoch seconds): reported once the socket is back.
        self._down: tuple[str, float | None] | None = None
        #: Subscription type -> when its revocation arrived (epoch seconds), until it is created again.
        self._revoked: dict[str, float] = {}
        #: Seconds the last ``session_reconnect`` handoff took (new socket opened to old one closed).
        self.last_handoff_s: float | None = None
        #: The current session's id ("" between sessions).
        self.session_id = ""
        #: Subscriptions created on sessions so far (handoffs create none).
        self.created = 0
        #: When the last message arrived (epoch seconds; None: none yet).
        self._last_seen_at: float | None = None
        #: The current session got every subscription it needs.
        self._worked = False
        #: The current session's socket (a handoff replaces it).
        self._socket: ClientConnection | None = None

    def down_since(self, reason: str, since: float | None) -> None:
        """Delivery was down before this client started (a restart): report it once the socket is up."""
        self._down = (reason, since)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, subscribe, read; after any drop connect again (backoff on failures) until ``stop``."""
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._session(stop)
                return  # stop was set
            except _Dropped as drop:
                if self._down is None:
                    self._down = (drop.reason, self._last_seen_at)
                if drop.quick or self._worked or time.monotonic() - started > 2 * BACKOFF_S[-1]:
                    failures = 0
                delay = 0.0 if drop.quick else BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 0 if drop.quick else 1
                logger.warning("EventSub WebSocket: %s; connecting again in %.0f s", drop.reason, delay)
            finally:
                self.session_id = ""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    # -- one session -------------------------------------------------------------------------------
    async def _session(self, stop: asyncio.Event) -> None:
        self._worked = False
        ws = self._socket = await self._open(self._url)
        try:
            welcome = _welcome(await self._first(ws))
            self.session_id = welcome.session_id
            self._saw()
            logger.info(
                "EventSub WebSocket session %s open (keepalive %.4g s)", welcome.session_id, welcome.keepalive_s
            )
            failed = await asyncio.to_thread(self._subscribe, welcome.session_id, None)
            await asyncio.to_thread(self._record_status, welcome.session_id, None)
            # A session that got every subscription worked: a drop after it starts the backoff over.
            self._worked = not failed
            if self._down is not None:
                reason, since = self._down
                self._down = None
                self._gaps.gap(f"EventSub WebSocket down: {reason}", since)
            await self._read(ws, welcome, stop)
        finally:
            current, self._socket = self._socket, None
            with contextlib.suppress(ConnectionClosed, OSError):
                if current is not None:
                    await current.close()

    async def _open(self, url: str) -> ClientConnection:
        try:
            # Twitch sends keepalive messages; the library's own pings are not needed (ping_interval=None).
            return await connect(url, open_timeout=WELCOME_TIMEOUT_S, ping_interval=None, close_timeout=2.0)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise _Dropped(f"cannot connect to {url} ({type(exc).__name__})") from None

    async def _first(self, ws: ClientConnection) -> _Message:
        try:
            return _parse(await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT_S))
        except TimeoutError:
            raise _Dropped(f"no welcome within {WELCOME_TIMEOUT_S:.0f} s") from None
        except ConnectionClosed as exc:
            raise _Dropped(_closed(exc)) from None

    async def _read(self, ws: ClientConnection, welcome: Welcome, stop: asyncio.Event) -> None:
        """Messages until the socket dies; a ``session_reconnect`` swaps the socket in place."""
        keepalive_s = welcome.keepalive_s
        last = time.monotonic()
        next_sweep = last + self._sweep_s
        silent_limit = keepalive_s + keepalive_margin(keepalive_s)
        while not stop.is_set():
            if time.monotonic() >= next_sweep:
                await asyncio.to_thread(self._sweep, welcome.session_id)
                next_sweep = time.monotonic() + self._sweep_s
            try:
                text = await asyncio.wait_for(ws.recv(), _TICK_S)
            except TimeoutError:
                # Only when nothing is waiting: a slow sweep leaves the messages that came meanwhile to be read.
                silent = time.monotonic() - last
                if silent > silent_limit:
                    why = f"no message for {silent:.1f} s (keepalive timeout {keepalive_s:.4g} s)"
                    raise _Dropped(why, quick=True) from None
                continue
            except ConnectionClosed as exc:
                raise _Dropped(_closed(exc)) from None
            last = time.monotonic()
            self._saw()
            message = _parse(text)
            if message.type == "session_reconnect":
                ws = self._socket = await self._handoff(ws, message)
                last = time.monotonic()
            else:
                await self._handle(message)

    async def _handoff(self, old: ClientConnection, message: _Message) -> ClientConnection:
        """Open the reconnect URL, keep reading the old socket until the new welcome, then close the old one."""
        session = message.payload.get("session")
        url = session.get("reconnect_url") if isinstance(session, dict) else None
        if not isinstance(url, str) or not url:
            raise _Dropped("session_reconnect without a reconnect_url")
        started = time.monotonic()
        new = await self._open(url)
        welcome_task = asyncio.ensure_future(new.recv())
        try:
            while not welcome_task.done():
                old_task = asyncio.ensure_future(old.recv())
                done, _ = await asyncio.wait(
                    {welcome_task, old_task}, timeout=WELCOME_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    raise _Dropped(f"no welcome on the reconnect URL within {WELCOME_TIMEOUT_S:.0f} s")
                if old_task not in done:
                    old_task.cancel()  # recv() may be cancelled without losing a message
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await old_task
                elif old_task.exception() is None:
                    await self._handle(_parse(old_task.result()))
                else:  # the old socket closed first: only the new one is left to wait for
                    await asyncio.wait_for(asyncio.shield(welcome_task), WELCOME_TIMEOUT_S)
            welcome = _welcome(_parse(welcome_task.result()))
        except ConnectionClosed as exc:
            await new.close()
            raise _Dropped(f"the reconnect socket closed: {_closed(exc)}") from None
        except (_Dropped, TimeoutError):
            welcome_task.cancel()
            await new.close()
            raise
        await self._drain(old)
        self.session_id = welcome.session_id
        self.last_handoff_s = time.monotonic() - started
        logger.info(
            "EventSub WebSocket session %s moved to a new socket in %.3f s", welcome.session_id, self.last_handoff_s
        )
        return new

    async def _drain(self, old: ClientConnection) -> None:
        """What the old socket still carries until Twitch closes it (or we do, after a short wait)."""
        deadline = time.monotonic() + OLD_SOCKET_CLOSE_S
        with contextlib.suppress(ConnectionClosed):
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await self._handle(_parse(await asyncio.wait_for(old.recv(), left)))
                except TimeoutError:
                    break
        with contextlib.suppress(ConnectionClosed, OSError):
            await old.close()

    async def _handle(self, message: _Message) -> None:
        kind = message.type
        if kind in ("session_keepalive", "session_welcome"):
            return
        if kind not in ("notification", "revocation"):
            logger.info("EventSub WebSocket message of unknown type ignored")
            return
        if kind == "revocation":
            subscription = message.payload.get("subscription")
            shown = subscription.get("type") if isinstance(subscription, dict) else None
            self._revoked.setdefault(str(shown), time.time())
            if self._status is not None and isinstance(subscription, dict):
                await asyncio.to_thread(self._record_revocation, Subscription.from_json(subscription))
        await self._store(message)

    def _record_revocation(self, subscription: Subscription) -> None:
        assert self._status is not None
        try:
            self._status.set_status(subscription)
        except RedisError as exc:
            logger.warning("EventSub subscription status not recorded (%s)", type(exc).__name__)

    async def _store(self, message: _Message) -> None:
        """Into the webhook's path; storage trouble is tried again a few times, then reported as a gap."""
        headers = {
            "twitch-eventsub-transport": "websocket",
            "twitch-eventsub-message-id": message.id,
            "twitch-eventsub-message-type": message.type,
            "twitch-eventsub-message-timestamp": str(message.metadata.get("message_timestamp", "")),
            "twitch-eventsub-subscription-type": str(message.metadata.get("subscription_type", "")),
            "twitch-eventsub-subscription-version": str(message.metadata.get("subscription_version", "")),
        }
        body = json.dumps(message.payload, separators=(",", ":")).encode()
        for attempt in range(1, _STORE_TRIES + 1):
            try:
                await self._deliver(message.id, message.type, message.payload, headers, body)
                return
            except (RedisError, dramatiq.errors.BrokerError) as exc:
                logger.warning("EventSub message %s not stored (try %d): %s", message.id, attempt, type(exc).__name__)
                await asyncio.sleep(0.5 * attempt)
        self._gaps.gap(f"a {message.type} could not be stored (Redis unavailable)", time.time())

    # -- subscriptions (in a thread: Helix calls block) ----------------------------------------------
    def _subscribe(self, session_id: str, listed: list[Subscription] | None) -> int:
        """Create each wanted subscription the session lacks; returns how many could not be created.

        With ``listed`` None (right after the welcome) every one is created without listing first: the
        session is new, and the keepalive timeout is short. A 409 lists once and compares.
        """
        created = failed = 0
        try:
            needed = self._wanted()
        except (HelixError, TwitchAuthError) as exc:  # the broadcaster's id comes from the stored tokens
            logger.warning("EventSub subscriptions not created: %s", exc)
            return 1
        for wanted in needed:
            if listed is not None and any(
                _same(sub, wanted) and sub.active and sub.session_id == session_id for sub in listed
            ):
                continue
            try:
                created += self._create(wanted, session_id, listed)
            except (HelixError, TwitchAuthError) as exc:
                logger.warning("EventSub subscription %s not created: %s", wanted.describe(), exc)
                failed += 1
        self.created += created
        return failed

    def _create(self, wanted: WantedSubscription, session_id: str, listed: list[Subscription] | None) -> int:
        try:
            self._helix.create_websocket_subscription(wanted.type, wanted.version, wanted.condition, session_id)
            return 1
        except SubscriptionExists:
            pass
        # Twitch holds one with that type and condition: ours on this session, or an orphan of a dead one.
        current = self._helix.list_websocket_subscriptions() if listed is None else listed
        same = [sub for sub in current if _same(sub, wanted)]
        if any(sub.active and sub.session_id == session_id for sub in same):
            return 0
        for orphan in same:
            logger.info("EventSub subscription %s of a dead session %s deleted", wanted.describe(), orphan.session_id)
            self._helix.delete_subscription(orphan.id)
        self._helix.create_websocket_subscription(wanted.type, wanted.version, wanted.condition, session_id)
        return 1

    def _sweep(self, session_id: str) -> None:
        """Compare the session's subscriptions with the rules'; create what is missing (a revoked one)."""
        try:
            listed = self._helix.list_websocket_subscriptions()
        except (HelixError, TwitchAuthError) as exc:
            logger.warning("EventSub subscriptions not listed: %s", exc)
            return
        self._subscribe(session_id, listed)
        try:
            now_listed = self._helix.list_websocket_subscriptions() if self._revoked or self._status else listed
        except (HelixError, TwitchAuthError):
            return
        self._record_status(session_id, now_listed)
        for kind, since in list(self._revoked.items()):
            if any(sub.type == kind and sub.active and sub.session_id == session_id for sub in now_listed):
                del self._revoked[kind]
                self._gaps.gap(f"the {kind} subscription was revoked and is created again", since)

    def _record_status(self, session_id: str, listed: list[Subscription] | None) -> None:
        """The status snapshot (``producers.twitch.subscription_status``): listed now when ``listed`` is None."""
        if self._status is None:
            return
        try:
            current = self._helix.list_websocket_subscriptions() if listed is None else listed
            now = time.time()
            entries = (SubscriptionEntry.of(s, now, ours=s.session_id == session_id) for s in current)
            self._status.write("websocket", entries, at=now)
        except (HelixError, TwitchAuthError) as exc:
            with contextlib.suppress(RedisError):
                self._status.failed("websocket", f"the subscriptions could not be listed: {exc}")
        except RedisError as exc:
            logger.warning("EventSub subscription status not recorded (%s)", type(exc).__name__)

    def _saw(self) -> None:
        self._last_seen_at = time.time()
        self._gaps.seen(self._last_seen_at)


def _closed(exc: ConnectionClosed) -> str:
    """One line for a closed socket: Twitch's code and what it means."""
    frame = exc.rcvd
    if frame is None:
        return "the connection dropped without a close frame"
    meaning = CLOSE_CODES.get(frame.code)
    if meaning is None:
        return f"Twitch closed the socket ({frame.code} {frame.reason or ''})".rstrip()
    return f"Twitch closed the socket with {frame.code}: {meaning}"
