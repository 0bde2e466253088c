"""A local simulator of Twitch's OAuth server and Helix API, for tests, benchmarks and demo mode.

A real HTTP server on loopback (stdlib ``ThreadingHTTPServer``, daemon threads, see ``simulator._http``),
started in-process (:class:`TwitchSimulator`). OAuth lives under ``/oauth2`` (``auth_url``), Helix under
``/helix`` (``api_url``), the device-activation page at ``/activate`` and the control endpoints under
``/_sim``. The EventSub WebSocket server is a separate object (``simulator.eventsub_ws``); this simulator
only asks it, through :class:`SessionDirectory`, whether a session id exists.

Facts vs. choices
=================
**Documented facts** (``docs/sources-sync.md`` §1, §3, §4; ``docs/twitch.md`` §1):

* Device Code Grant Flow: ``POST /oauth2/device`` (``client_id``, ``scopes`` space-separated) answers
  ``device_code``, ``user_code``, ``verification_uri``, ``expires_in``, ``interval``; ``POST /oauth2/token``
  with ``grant_type=urn:ietf:params:oauth:grant-type:device_code`` answers 400 with ``message``
  ``authorization_pending`` until the user approves, then ``access_token``, ``refresh_token``,
  ``expires_in``, ``scope`` (a list) and ``token_type`` ``bearer``. Public clients need no secret;
  confidential ones send ``client_secret`` when refreshing (§4).
* ``grant_type=refresh_token`` answers a new access token and a new refresh token; the used refresh token
  stops working (rotation, §4) and answers 400 ``Invalid refresh token``.
* ``grant_type=client_credentials`` answers an app access token (no refresh token; app tokens are renewed by
  asking again, §4); a wrong secret answers 403 ``invalid client secret``.
* ``GET /oauth2/validate`` with ``Authorization: OAuth <token>`` answers ``client_id``, ``login``,
  ``scopes``, ``user_id``, ``expires_in``, or 401 for a dead token (§4). ``POST /oauth2/revoke``
  (``client_id``, ``token``) revokes.
* OAuth errors have the shape ``{"status": n, "message": "..."}``.

**Simulator choices** (ASSUMPTIONS):

* ``slow_down`` (RFC 8628) is answered when a device code is polled again less than ``interval`` seconds after
  its previous poll (the first poll is never too fast); the required spacing is not raised afterwards.
  ``expired_token`` once the device code's ``expires_in`` has passed, ``access_denied`` once the user
  denied, ``invalid device code`` for an unknown, used or other client's code. Check order: client ->
  code known -> expired -> too fast -> denied -> pending -> tokens.
* ``verification_uri`` points at this simulator's ``/activate`` page (Authorize / Deny buttons, acting as
  the broadcaster); the ``user_code`` is 8 upper-case letters.
* ``auto_approve_after_s`` approves a device code as the broadcaster once it is that old (demo mode).
* Refreshing keeps the grant's older access tokens valid until they expire. Revoking either an access or a
  refresh token ends the whole grant (its access tokens and its refresh token).
* Validating an app token answers ``client_id``, ``scopes`` ``[]`` and ``expires_in`` (no ``login`` or
  ``user_id``). Unknown client ids answer 400 ``invalid client`` (404 ``client does not exist`` on revoke).
* Tokens are random hex strings (30 characters for access, 50 for refresh), and never recorded: request
  records carry :func:`token_fingerprint` instead.

Faults (test hooks, not Twitch behaviour) are queued with :meth:`TwitchSimulator.inject` and consumed by the
first matching ``/oauth2`` or ``/helix`` request: ``status`` (answer ``status``, change nothing),
``status_after`` (handle, then answer ``status`` instead), ``drop_before`` / ``drop_after`` (close the
connection without an answer, before or after handling), ``slow_before`` / ``slow_after`` (wait ``delay_s``).

Control endpoints (``control=True``), never faulted: ``GET /_sim/health``, ``GET /_sim/requests``,
``GET /_sim/device/pending``, ``POST /_sim/reset``, ``POST /_sim/faults`` (the :meth:`inject` keyword
arguments plus ``kind``), ``POST /_sim/device/approve`` / ``/_sim/device/deny`` (``{"user_code": ...,
"login": ...}``, both optional), ``POST /_sim/tokens/expire``, ``POST /_sim/tokens/revoke_all``,
``POST /_sim/tokens/lifetime`` (``{"seconds": s}``) and ``POST /_sim/clock/advance`` (``{"seconds": s}``).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Final, Protocol

from simulator._http import Reply, Request, SimServer
from simulator.twitch_oauth import OAuthConfig, OAuthState, TwitchUser, oauth_error

__all__ = [
    "DEFAULT_BROADCASTER",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_VIEWERS",
    "OTHER_CLIENT_ID",
    "RequestRecord",
    "SessionDirectory",
    "TwitchSimulator",
    "TwitchUser",
    "token_fingerprint",
]

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

#: Fault kinds accepted by :meth:`TwitchSimulator.inject` (see the module docstring).
FAULT_KINDS: Final = frozenset({"status", "status_after", "drop_before", "drop_after", "slow_before", "slow_after"})
#: ``RequestRecord.status`` when no answer was sent.
NO_RESPONSE: Final = 0


class SessionDirectory(Protocol):
    """What the simulator asks the EventSub WebSocket server (``simulator.eventsub_ws``)."""

    def has_session(self, session_id: str) -> bool: ...


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


class TwitchSimulator:
    """An in-process Twitch (OAuth + Helix); see the module docstring for what is fact and what is choice.

    Parameters:
      broadcaster, viewers: the accounts that exist (the broadcaster approves device codes by default).
      client_id, client_secret: our app; ``client_secret=None`` makes it a public client (device flow
        without a secret; no client credentials). "Another app" (:data:`OTHER_CLIENT_ID`) always exists.
      access_token_lifetime_s, device_code_lifetime_s, device_poll_interval_s: as Twitch answers them
        (``expires_in``, ``interval``).
      auto_approve_after_s: approve each device code as the broadcaster once it is that old (demo mode).
      sessions: the EventSub WebSocket server, asked about websocket-transport subscriptions.
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
        self.control = control
        self._viewers = tuple(viewers)
        self._oauth_defaults = OAuthConfig(
            clients={client_id: client_secret, OTHER_CLIENT_ID: OTHER_CLIENT_SECRET},
            access_token_lifetime_s=access_token_lifetime_s,
            device_code_lifetime_s=device_code_lifetime_s,
            device_poll_interval_s=device_poll_interval_s,
            auto_approve_after_s=auto_approve_after_s,
        )
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
        )
        users = {user.id: user for user in (self.broadcaster, *self._viewers)}
        self.oauth = OAuthState(config, self.broadcaster, users, self._root_or_empty())
        self._faults: list[_Fault] = []
        self._requests: list[RequestRecord] = []
        self._clock_offset = 0.0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> TwitchSimulator:
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

    def __enter__(self) -> TwitchSimulator:
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

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired (refresh tokens keep working)."""
        with self._lock:
            self.oauth.expire_access_tokens(self.now())

    def revoke_all(self) -> None:
        """The user disconnected the app / changed the password: every token and refresh token is dead."""
        with self._lock:
            self.oauth.revoke_all()

    def set_access_token_lifetime(self, seconds: float) -> None:
        """``expires_in`` of access tokens issued from now on."""
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError("seconds must be a finite number > 0")
        with self._lock:
            self.oauth.config.access_token_lifetime_s = seconds

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
            if self.control:
                return self._control(request)
            return oauth_error(404, "Not Found")
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

    def _route(self, request: Request) -> Reply:
        with self._lock:
            if request.path.startswith("/oauth2/"):
                return self.oauth.handle(request, self.now())
            if request.path == "/activate":
                return self.oauth.activate_page(request, self.now())
        return Reply(404, {"error": "Not Found", "status": 404, "message": "Not Found"})

    def _fault_reply(self, request: Request, fault: _Fault) -> Reply:
        if request.path.startswith("/helix"):
            return Reply(fault.status, {"error": "Injected", "status": fault.status, "message": fault.message})
        return oauth_error(fault.status, fault.message)

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

    # ---------------------------------------------------------------- /_sim

    def _control(self, request: Request) -> Reply:
        endpoint = request.path.removeprefix("/_sim").strip("/")
        gets = {"health", "requests", "device/pending"}
        posts = {
            "reset",
            "faults",
            "device/approve",
            "device/deny",
            "tokens/expire",
            "tokens/revoke_all",
            "tokens/lifetime",
            "clock/advance",
        }
        if endpoint not in gets | posts:
            return Reply(404, {"error": f"unknown control endpoint {request.path}"})
        if request.method != ("GET" if endpoint in gets else "POST"):
            return Reply(405, {"error": "method not allowed"})
        try:
            args = request.json_body() if request.body else {}
            if not isinstance(args, dict):
                raise TypeError("body must be a JSON object")
            return self._control_call(endpoint, {str(k): v for k, v in args.items()})
        except (ValueError, TypeError, KeyError) as exc:
            return Reply(400, {"error": f"{type(exc).__name__}: {exc}"})

    def _control_call(self, endpoint: str, args: dict[str, object]) -> Reply:
        if endpoint == "health":
            return Reply(200, {"ok": True, "auth_url": self.auth_url, "api_url": self.api_url})
        if endpoint == "requests":
            return Reply(200, {"requests": [asdict(record) for record in self.requests()]})
        if endpoint == "device/pending":
            return Reply(200, {"user_codes": self.pending_user_codes()})
        if endpoint in ("device/approve", "device/deny"):
            code = _optional_str(args.get("user_code"))
            login = _optional_str(args.get("login"))
            approved = self.deny(code) if endpoint == "device/deny" else self.approve(code, login)
            return Reply(200, {"ok": True, "user_code": approved})
        if endpoint == "faults":
            self._inject_from(args)
        elif endpoint == "reset":
            self.reset()
        elif endpoint == "tokens/expire":
            self.expire_access_tokens()
        elif endpoint == "tokens/revoke_all":
            self.revoke_all()
        elif endpoint == "tokens/lifetime":
            self.set_access_token_lifetime(_float(args["seconds"]))
        else:  # clock/advance
            self.advance_clock(_float(args["seconds"]))
        return Reply(200, {"ok": True})

    def _inject_from(self, args: dict[str, object]) -> None:
        self.inject(
            str(args["kind"]),
            path=_optional_str(args.get("path")),
            method=_optional_str(args.get("method")),
            count=int(_float(args.get("count", 1))),
            status=int(_float(args.get("status", 503))),
            message=str(args.get("message", "Service Unavailable")),
            delay_s=_float(args.get("delay_s", 5.0)),
        )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)
