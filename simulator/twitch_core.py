"""The machinery of :class:`simulator.twitch.TwitchSimulator`: lifecycle, routing, faults, records and the
in-process control methods. What is documented and what is chosen is in the docstring of ``simulator.twitch``;
the ``/_sim`` endpoints are added there (``simulator.twitch_control``), so that module can call these
methods without an import circle.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Final, Self

from simulator._http import Reply, Request, SimServer
from simulator.twitch_eventsub import ACTIVE, EventSubState, SessionDirectory, Subscription
from simulator.twitch_helix import BadRequest, Caller, HelixState, RateLimiter, StatusUpdate, bucket_key, helix_error
from simulator.twitch_oauth import AUTHORIZE_MODES, AuthorizeMode, OAuthConfig, OAuthState, TwitchUser, oauth_error

DEFAULT_CLIENT_ID: Final = "sim-client-id"
DEFAULT_CLIENT_SECRET: Final = "sim-client-secret-0123456789"  # noqa: S105 (a simulator's well-known secret)
#: The client id of "another app" (rewards it creates cannot be managed by ours).
OTHER_CLIENT_ID: Final = "other-app-client-id"
OTHER_CLIENT_SECRET: Final = "other-app-client-secret-987654"  # noqa: S105
#: The broadcaster and viewer of the sample payloads in tests/producers/twitch/data.
DEFAULT_BROADCASTER: Final = TwitchUser("1337", "cool_user", "Cool_User")
DEFAULT_VIEWERS: Final = (
    TwitchUser("9001", "cooler_user", "Cooler_User"),
    TwitchUser("4242", "viewer_two", "Viewer_Two"),
)

REDEMPTION_ADD: Final = "channel.channel_points_custom_reward_redemption.add"
#: Fault kinds accepted by :meth:`TwitchSimulator.inject` (see the module docstring).
FAULT_KINDS: Final = frozenset({"status", "status_after", "drop_before", "drop_after", "slow_before", "slow_after"})
#: ``RequestRecord.status`` when no answer was sent.
NO_RESPONSE: Final = 0


def _own_channel(caller: Caller, broadcaster_id: str) -> Reply | None:
    """``broadcaster_id`` is required and must be the token's user (docs/sources-sync.md §1.1)."""
    if not broadcaster_id:
        return helix_error(400, 'Missing required parameter "broadcaster_id"')
    if broadcaster_id != caller.user_id:
        # ASSUMPTION: 401, as Twitch's reference lists this case under 401 Unauthorized.
        return helix_error(401, "The ID in broadcaster_id must match the user ID found in the request's OAuth token")
    return None


def _check_rate(limit: int, window_s: float) -> None:
    if limit < 1 or not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError("the rate limit needs at least 1 point per a finite window > 0")


def token_fingerprint(token: str) -> str:
    """A short sha256 of a token, recorded instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RequestRecord:
    """One ``/oauth2``, ``/activate`` or ``/helix`` request: ``token`` is the fingerprint of the bearer or
    OAuth token sent (None without one), ``client_id`` the ``Client-Id`` header or form field."""

    at: float
    method: str
    path: str
    status: int
    fault: str | None
    token: str | None
    client_id: str | None


@dataclass
class _Fault:
    kind: str
    remaining: int
    path: str | None
    method: str | None
    delay_s: float
    status: int
    message: str


class TwitchCore:
    """An in-process Twitch (OAuth + Helix); see the module docstring for what is fact and what is choice.

    Parameters:
      broadcaster, viewers: the accounts that exist (the broadcaster approves device codes by default).
      client_id, client_secret: our app; ``client_secret=None`` makes it a public client (device flow
        without a secret; no client credentials). "Another app" (:data:`OTHER_CLIENT_ID`) always exists.
      access_token_lifetime_s, device_code_lifetime_s, device_poll_interval_s: as Twitch answers them
        (``expires_in``, ``interval``).
      auto_approve_after_s: approve each device code as the broadcaster once it is that old (demo mode).
      authorize: what ``GET /oauth2/authorize`` does: ``ask`` (a consent page with Authorize / Cancel),
        ``approve`` or ``deny`` (the broadcaster's answer at once, redirected to the redirect URI).
      redirect_uris: the redirect URIs registered for the apps (None: any http(s) URI counts as registered).
      rate_limit, rate_window_s: each Helix token bucket holds ``rate_limit`` points, refilled over
        ``rate_window_s`` (Twitch: 800 a minute).
      sessions: the EventSub WebSocket server, asked about websocket-transport subscriptions (without it
        no websocket session exists).
      host, port: where to listen; port 0 picks a free port (kept across :meth:`stop`/:meth:`start`).
      control: serve ``/_sim/...``.
      on_request: called (outside the lock) with each :class:`RequestRecord`.

    State survives :meth:`stop` and a later :meth:`start`; :meth:`reset` returns to the constructor's.
    """

    def __init__(
        self,
        *,
        broadcaster: TwitchUser = DEFAULT_BROADCASTER,
        viewers: Iterable[TwitchUser] = DEFAULT_VIEWERS,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = DEFAULT_CLIENT_SECRET,
        access_token_lifetime_s: float = 14_400.0,
        device_code_lifetime_s: float = 1_800.0,
        device_poll_interval_s: float = 5.0,
        auto_approve_after_s: float | None = None,
        authorize: str = "ask",
        redirect_uris: Iterable[str] | None = None,
        rate_limit: int = 800,
        rate_window_s: float = 60.0,
        sessions: SessionDirectory | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        control: bool = True,
        on_request: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.broadcaster = broadcaster
        self.sessions = sessions
        if sessions is not None and sessions.on_session_end is None:
            sessions.on_session_end = self._session_ended  # a session that died takes its subscriptions down
        self.control = control
        self._viewers = tuple(viewers)
        self._oauth_defaults = OAuthConfig(
            clients={client_id: client_secret, OTHER_CLIENT_ID: OTHER_CLIENT_SECRET},
            access_token_lifetime_s=access_token_lifetime_s,
            device_code_lifetime_s=device_code_lifetime_s,
            device_poll_interval_s=device_poll_interval_s,
            auto_approve_after_s=auto_approve_after_s,
            authorize=_authorize_mode(authorize),
            redirect_uris=None if redirect_uris is None else tuple(redirect_uris),
        )
        _check_rate(rate_limit, rate_window_s)
        self._rate = (rate_limit, rate_window_s)
        self._host, self._port = host, port
        self._on_request = on_request
        self._lock = threading.RLock()
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        self._init_state()

    def _init_state(self) -> None:
        defaults = self._oauth_defaults
        config = OAuthConfig(
            clients=dict(defaults.clients),
            access_token_lifetime_s=defaults.access_token_lifetime_s,
            device_code_lifetime_s=defaults.device_code_lifetime_s,
            device_poll_interval_s=defaults.device_poll_interval_s,
            auto_approve_after_s=defaults.auto_approve_after_s,
            authorize=defaults.authorize,
            redirect_uris=defaults.redirect_uris,
        )
        users = {user.id: user for user in (self.broadcaster, *self._viewers)}
        self.oauth = OAuthState(config, self.broadcaster, users, self._root_or_empty())
        self.helix = HelixState(users)
        self.eventsub = EventSubState(self.oauth.granted, self.sessions)
        self.limiter = RateLimiter(*self._rate)
        self._faults: list[_Fault] = []
        self._requests: list[RequestRecord] = []
        self._clock_offset = 0.0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("simulator already running")
        server = SimServer((self._host, self._port), self)
        self._port = server.server_address[1]
        self.oauth.root_url = self.root_url
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.name = f"twitch-sim-{self._port}"
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving: wake held requests, close the listener and every open connection."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stop_serving()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    def _root_or_empty(self) -> str:
        return f"http://{self._host}:{self._port}" if self._port else ""

    @property
    def root_url(self) -> str:
        """``http://host:port`` (valid after :meth:`start`)."""
        if self._port == 0:
            raise RuntimeError("simulator not started")
        return self._root_or_empty()

    @property
    def auth_url(self) -> str:
        """The OAuth base (``TWITCH_AUTH_URL``): ``/device``, ``/token``, ``/validate``, ``/revoke`` under it."""
        return self.root_url + "/oauth2"

    @property
    def api_url(self) -> str:
        """The Helix base (``TWITCH_API_URL``)."""
        return self.root_url + "/helix"

    @property
    def ws_url(self) -> str:
        """The EventSub WebSocket URL (``TWITCH_EVENTSUB_WS_URL``) of the ``sessions`` server."""
        if self.sessions is None:
            raise RuntimeError("this simulator has no EventSub WebSocket server (pass sessions=...)")
        return self.sessions.url

    def now(self) -> float:
        """The simulator's clock (monotonic, plus :meth:`advance_clock`)."""
        return time.monotonic() + self._clock_offset

    # ---------------------------------------------------------------- control

    def inject(
        self,
        kind: str,
        *,
        path: str | None = None,
        method: str | None = None,
        count: int = 1,
        status: int = 503,
        message: str = "Service Unavailable",
        delay_s: float = 5.0,
    ) -> None:
        """Queue a fault for the next ``count`` requests whose path starts with ``path`` (None: any ``/oauth2``
        or ``/helix`` request) and whose method is ``method`` (None: any)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if count < 1 or not 100 <= status <= 599 or not (delay_s >= 0 and math.isfinite(delay_s)):
            raise ValueError("count must be >= 1, status in 100..599, delay_s a finite number >= 0")
        with self._lock:
            self._faults.append(_Fault(kind, count, path, method.upper() if method else None, delay_s, status, message))

    def approve(self, user_code: str | None = None, login: str | None = None) -> str:
        """Approve a pending device code (the only one when ``user_code`` is None) as ``login`` (default: the
        broadcaster); returns its user code. Raises ValueError when none or several match."""
        with self._lock:
            return self.oauth.approve(user_code, login, self.now())

    def deny(self, user_code: str | None = None) -> str:
        """Deny a pending device code, as :meth:`approve` picks it; returns its user code."""
        with self._lock:
            return self.oauth.approve(user_code, None, self.now(), deny=True)

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [device.user_code for device in self.oauth.pending(self.now())]

    def issue_user_token(self, login: str | None = None, scopes: Iterable[str] = ()) -> dict[str, object]:
        """A grant as if ``login`` (default: the broadcaster) had approved our app for ``scopes``, without
        the device flow; returns the token answer (``access_token``, ``refresh_token``, ...)."""
        with self._lock:
            user = self.broadcaster if login is None else self.oauth.user_by_login(login)
            return self.oauth.issue(self.client_id, user.id, scopes, self.now())

    def issue_app_token(self, client_id: str | None = None) -> str:
        """An app access token for ``client_id`` (default: our app), as client credentials would give."""
        with self._lock:
            return str(self.oauth.issue(client_id or self.client_id, None, (), self.now())["access_token"])

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired (refresh tokens keep working)."""
        with self._lock:
            self.oauth.expire_access_tokens(self.now())

    def revoke_all(self) -> None:
        """The user disconnected the app / changed the password: every token and refresh token is dead, and
        the subscriptions that needed the user's authorization become ``authorization_revoked``."""
        with self._lock:
            self.oauth.revoke_all()
            revoked = [s for user_id in self.oauth.users for s in self.eventsub.revoke_user(user_id, self.now())]
        self._send_revocations([s for s in revoked if s.method == "websocket"])

    def _send_revocations(self, subscriptions: Iterable[Subscription]) -> None:
        """Tell the WebSocket server, which sends each a ``revocation`` message."""
        for subscription in subscriptions:
            if self.sessions is not None:
                with contextlib.suppress(LookupError):  # no longer on a live session
                    self.sessions.revoke(subscription.id, subscription.status)

    def set_rate_limit(self, limit: int, window_s: float = 60.0) -> None:
        """Change the Helix buckets' size and refill window (points already taken stay taken)."""
        _check_rate(limit, window_s)
        with self._lock:
            self.limiter.limit, self.limiter.window_s = limit, window_s
            for bucket in self.limiter.buckets.values():
                bucket.points = min(bucket.points, float(limit))

    # ---------------------------------------------------------------- control: the channel

    def create_reward(
        self, title: str, cost: int, fields: Mapping[str, object] | None = None, *, client_id: str | None = None
    ) -> dict[str, object]:
        """Create a reward on the broadcaster's channel as ``client_id`` (default: our app) would through
        Helix (same checks; ValueError for what Helix answers 400); returns it as Helix lists it."""
        body: dict[str, object] = {**(fields or {}), "title": title, "cost": cost}
        with self._lock:
            try:
                reward = self.helix.create_reward(self.broadcaster, client_id or self.client_id, body)
            except BadRequest as exc:
                raise ValueError(str(exc)) from None
            return reward.to_json()

    def create_reward_as_other_app(
        self, title: str, cost: int, fields: Mapping[str, object] | None = None
    ) -> dict[str, object]:
        """A reward made by another app (or by the streamer on the dashboard): ours cannot manage it."""
        return self.create_reward(title, cost, fields, client_id=OTHER_CLIENT_ID)

    def delete_reward(self, reward_id: str) -> None:
        """The streamer deletes a reward on Twitch (whoever created it); its redemptions leave every listing."""
        with self._lock:
            self.helix.live_reward(reward_id).deleted = True

    def rename_reward(self, reward_id: str, title: str) -> None:
        """The streamer renames a reward on Twitch (ValueError when the title is taken)."""
        with self._lock:
            self.helix.rename_reward(reward_id, title)

    def redeem(self, reward_id: str, login: str, user_input: str = "") -> dict[str, object]:
        """A viewer redeems a reward: an UNFULFILLED redemption (FULFILLED at once when the reward skips the
        request queue). Returns it as EventSub's ``channel.channel_points_custom_reward_redemption.add``
        event, ready to be wrapped in a notification; with a ``sessions`` server it is also sent to each enabled
        websocket subscription it matches (EventSub delivers it there)."""
        with self._lock:
            user = self.oauth.user_by_login(login)
            event = self.helix.redeem(reward_id, user, user_input, self._wall()).event()
            targets = self.eventsub.delivering(REDEMPTION_ADD, event)
        for subscription in targets:
            if self.sessions is not None:
                with contextlib.suppress(LookupError):  # the session ended meanwhile
                    self.sessions.notify(subscription.id, event)
        return event

    def rewards(self) -> list[dict[str, object]]:
        """Every live reward as Helix lists it, with ``client_id`` (who may manage it) added."""
        with self._lock:
            live = [r for r in self.helix.rewards.values() if not r.deleted]
            return [{**r.to_json(), "client_id": r.client_id} for r in live]

    def redemptions(self) -> list[dict[str, object]]:
        """Every redemption (of deleted rewards too) as Helix lists it."""
        with self._lock:
            return [r.to_json() for r in self.helix.redemptions]

    def refunds(self) -> list[str]:
        """Ids of the redemptions CANCELED through Helix (the viewer got the points back), in order."""
        with self._lock:
            return [u.redemption_id for u in self.helix.updates if u.status == "CANCELED"]

    def status_updates(self) -> list[StatusUpdate]:
        """Every redemption status change made through Helix, in order."""
        with self._lock:
            return list(self.helix.updates)

    # ---------------------------------------------------------------- control: EventSub

    def subscriptions(self) -> list[dict[str, object]]:
        """Every EventSub subscription (any client, any transport) as Helix lists it."""
        with self._lock:
            return [s.to_json() for s in self.eventsub.subscriptions]

    def _session_ended(self, session_id: str, status: str) -> None:
        self.end_session(session_id, status)

    def set_subscription_page_size(self, size: int) -> None:
        """How many subscriptions one page of the list holds (Helix ignores ``first`` there; 100 here)."""
        if size < 1:
            raise ValueError("size must be >= 1")
        with self._lock:
            self.eventsub.page_size = size

    def set_subscription_status(self, subscription_id: str, status: str) -> None:
        """E.g. ``enabled`` once a webhook challenge was answered, or ``notification_failures_exceeded``. A
        websocket subscription given a revocation reason (not ``websocket_*``) gets a ``revocation`` message."""
        with self._lock:
            subscription = self.eventsub.set_status(subscription_id, status, self.now())
        revoked = subscription.method == "websocket" and status not in ACTIVE and not status.startswith("websocket_")
        if revoked:
            self._send_revocations([subscription])

    def end_session(self, session_id: str, status: str = "websocket_disconnected") -> list[dict[str, object]]:
        """The WebSocket session ended: its subscriptions take ``status``; returns them (for the WS server)."""
        with self._lock:
            ended = self.eventsub.end_session(session_id, status, self.now())
        for subscription in ended:
            if self.sessions is not None:
                self.sessions.detach(subscription.id)  # no-op when the server ended the session itself
        return [s.to_json() for s in ended]

    def set_access_token_lifetime(self, seconds: float) -> None:
        """``expires_in`` of access tokens issued from now on."""
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError("seconds must be a finite number > 0")
        with self._lock:
            self.oauth.config.access_token_lifetime_s = seconds

    def set_authorize(self, mode: str) -> None:
        """What ``/oauth2/authorize`` does from now on: ``ask``, ``approve`` or ``deny`` (see the parameters)."""
        with self._lock:
            self.oauth.config.authorize = _authorize_mode(mode)

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator's clock forward (expires device codes and tokens without waiting)."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError("seconds must be a finite number >= 0")
        with self._lock:
            self._clock_offset += seconds

    def reset(self) -> None:
        """Forget every token, device code, fault and record; restore the constructor's configuration."""
        with self._lock:
            self._init_state()
            if self._port:
                self.oauth.root_url = self.root_url

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    # ---------------------------------------------------------------- request handling

    def handle(self, request: Request, stopping: threading.Event) -> Reply:
        """Route one request (called by the server's handler threads)."""
        if request.path == "/_sim" or request.path.startswith("/_sim/"):
            return self._control(request) if self.control else oauth_error(404, "Not Found")
        fault = self._pop_fault(request) if request.path.startswith(("/oauth2", "/helix")) else None
        kind = fault.kind if fault else None
        reply: Reply
        held = fault is not None and kind == "slow_before" and stopping.wait(fault.delay_s)
        if held or kind == "drop_before":
            reply = Reply(NO_RESPONSE, drop=True)
        elif fault is not None and kind == "status":
            reply = self._fault_reply(request, fault)
        else:
            reply = self._route(request)
            if fault is not None and kind == "status_after":
                reply = self._fault_reply(request, fault)
            elif kind == "drop_after" or (fault is not None and kind == "slow_after" and stopping.wait(fault.delay_s)):
                reply = Reply(NO_RESPONSE, drop=True)
        self._record(request, NO_RESPONSE if reply.drop else reply.status, kind)
        return reply

    def _control(self, request: Request) -> Reply:
        """The ``/_sim`` endpoints (served by the subclass :class:`simulator.twitch.TwitchSimulator`)."""
        return oauth_error(404, "Not Found")

    def _route(self, request: Request) -> Reply:
        with self._lock:
            if request.path.startswith("/oauth2/"):
                return self.oauth.handle(request, self.now())
            if request.path == "/activate":
                return self.oauth.activate_page(request, self.now())
            if request.path.startswith("/helix/"):
                return self._helix(request)
        return helix_error(404, "Not Found")

    def _helix(self, request: Request) -> Reply:
        """Authenticate, take a rate-limit point, route; every answer carries the bucket's headers."""
        now, wall = self.now(), time.time()
        caller, refused = self._caller(request)
        key = bucket_key(request, caller)
        if refused is None and not self.limiter.take(key, now):
            refused = helix_error(429, "Too Many Requests")
        if refused is not None or caller is None:
            reply = refused or helix_error(401, "Invalid OAuth token")
        elif request.path.rstrip("/") == "/helix/eventsub/subscriptions":
            reply = self.eventsub.handle(request, caller, now, self._wall())
        else:
            reply = self.helix.handle(request, caller, lambda broadcaster_id: _own_channel(caller, broadcaster_id))
        reply.headers.update(self.limiter.headers(key, now, wall))
        return reply

    def _caller(self, request: Request) -> tuple[Caller | None, Reply | None]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, helix_error(401, "OAuth token is missing")
        client_id = request.headers.get("client-id")
        if not client_id:
            return None, helix_error(401, "Client-Id header required")
        info = self.oauth.token_info(token.strip(), self.now())
        if info is None:
            return None, helix_error(401, "Invalid OAuth token")
        if info.client_id != client_id:
            return None, helix_error(401, "Client ID and OAuth token do not match")
        return Caller(info.client_id, info.user_id, frozenset(info.scopes)), None

    def _fault_reply(self, request: Request, fault: _Fault) -> Reply:
        if not request.path.startswith("/helix"):
            return oauth_error(fault.status, fault.message)
        reply = helix_error(fault.status, fault.message)
        with self._lock:  # a faulted answer shows the bucket as it is, without taking a point
            caller, _ = self._caller(request)
            reply.headers.update(self.limiter.headers(bucket_key(request, caller), self.now(), time.time()))
        return reply

    def _wall(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._clock_offset)

    def _pop_fault(self, request: Request) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.path is not None and not request.path.startswith(fault.path):
                    continue
                if fault.method not in (None, request.method):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[index]
                return fault
        return None

    def _record(self, request: Request, status: int, fault: str | None) -> None:
        _, _, token = request.headers.get("authorization", "").partition(" ")
        client_id = request.headers.get("client-id")
        if client_id is None and request.path.startswith("/oauth2/"):
            client_id = request.form().get("client_id")
        record = RequestRecord(
            time.time(),
            request.method,
            request.path,
            status,
            fault,
            token_fingerprint(token.strip()) if token.strip() else None,
            client_id,
        )
        with self._lock:
            self._requests.append(record)
        if self._on_request is not None:
            self._on_request(record)


def _authorize_mode(mode: str) -> AuthorizeMode:
    for known in AUTHORIZE_MODES:
        if mode == known:
            return known
    raise ValueError(f"authorize must be one of {', '.join(AUTHORIZE_MODES)}, not {mode!r}")
