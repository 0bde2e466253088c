"""A local simulator of the WetBot public API, for tests, benchmarks and ``make run`` demo mode.

A real HTTP server on loopback (stdlib ``ThreadingHTTPServer``, daemon threads), started in-process
(:class:`WetbotSimulator`) or as a process (``python -m simulator``).

Facts vs. choices
=================
The WetBot server code is not public: no repository holds its route handlers, key check or rate limiter.
This module keeps the two apart:

**Documented facts** (WetBot docs, the bot's data model, the WetbotKassa client):

* Base URL ends in ``/api``; ``POST /guilds/{g}/users/{u}/inventory`` with
  ``{"items": [{"itemID": str, "amount": number}]}``, amount in [-1e9, 1e9];
  ``GET /guilds/{g}/users/{u}``; ``PATCH /guilds/{g}/users/{u}`` with ``{currency, xp, rp}``
  (currency +-1e9, xp +-100000, rp +-100). All three return the user's Profile.
* ``Authorization: <bare key>`` (no "Bearer"); one key per guild; ``Content-Type: application/json``.
* "No more than 10 requests per minute".
* Envelopes ``{"code": 2xx, "response": ...}`` and ``{"code": 4xx, "message": "..."}``.
* Profile fields ``userID, guildID, currency, xp, rp, inventory: [{itemID, amount, fav}]``.
* The bot's model (not the HTTP server's): amounts add with decimal arithmetic (fractions exist),
  totals may go negative, zero entries are kept, and a missing profile is auto-created.

**Simulator choices** (ASSUMPTIONS; each is labelled ``ASSUMPTION`` where it is implemented):

* HTTP status == envelope ``code``; success is 200 with ``response`` = the whole profile after the change.
* Rate limit: per raw ``Authorization`` value, STRICT sliding window ("at most ``limit`` in any
  ``window_s`` seconds"), checked first; every request that reaches the server counts, failed ones
  too, and 429-answered ones too unless ``count_rejected=False``. 429 body
  ``{"code":429,"message":"Too many requests"}``; no ``Retry-After`` unless ``retry_after=True``.
  Requests without an ``Authorization`` header are not rate limited.
* Order of checks: rate limit -> 401 (missing/unknown/revoked key, ``"Invalid API key"``) ->
  route (404 unknown path / 405 wrong method) -> 403 (key not for this guild) -> injected faults ->
  400 (Content-Type not ``application/json`` on POST/PATCH) -> 400 validation -> 404 unknown item.
* Validation (400): body not JSON / not an object; ``items`` missing or not a non-empty array; more
  than 100 items; an item not an object; ``itemID`` not a non-empty string; ``amount`` not a finite
  number (JSON ``NaN``/``Infinity`` included, booleans excluded) or outside [-1e9, 1e9].
  PATCH: at least one of currency/xp/rp, each a finite number within its range; other fields ignored.
* Unknown item, only when a catalogue is configured for that guild: 404 ``"Item not found: <id>"``
  (the bot itself says "Предмет не найден").
* A multi-item request is applied atomically (all or nothing); duplicate itemIDs in one request add up.
* Any guild/user path segment is accepted (no snowflake check, no membership check); the profile is
  created on the first successful request (GET included), as the bot's ``fetchProfile`` does.
* One trailing slash is tolerated on paths (Express' default non-strict routing).
* Wormhole and achievement endpoints are not simulated (404).

Faults (test hooks, not WetBot behaviour) are queued with :meth:`WetbotSimulator.inject` and consumed
by the first matching request after the rate-limit, auth, route and guild checks (so a faulted request
counts against the window). Kinds: ``500_before``, ``drop_before``, ``500_after``, ``slow_after``,
``stall_before``, ``status``, ``html_200``, ``html_200_after``; see :data:`FAULT_KINDS`.

Control endpoints (when ``control=True``), outside ``/api``, never rate limited nor logged:
``GET /_sim/health``, ``GET /_sim/applied``, ``GET /_sim/requests``, ``GET /_sim/inventory/{g}/{u}``,
``GET /_sim/max_in_window?window_s=&statuses=200,429&key=``, ``POST /_sim/faults`` (the
:meth:`~WetbotSimulator.inject` keyword arguments plus ``kind``), ``POST /_sim/reset``,
``POST /_sim/keys/revoke`` / ``POST /_sim/keys/restore`` (``{"key": ...}``) and
``POST /_sim/limit`` (``{"limit": n, "window_s": s}``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import re
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from types import FrameType, TracebackType
from typing import Any, Final, Literal, TypeGuard, cast, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from simulator._http import TrackingHandler, TrackingServer

DEFAULT_KEY: Final = "demo-key"
DEFAULT_GUILD: Final = "111111111111111111"
#: Documented bound on an inventory ``amount`` (both signs).
MAX_AMOUNT: Final = 1_000_000_000
#: ASSUMPTION: most items accepted in one request (undocumented).
MAX_ITEMS: Final = 100
#: Documented bounds of the PATCH fields (both signs).
PROFILE_FIELD_LIMITS: Final[Mapping[str, int]] = {"currency": 1_000_000_000, "xp": 100_000, "rp": 100}
#: Largest request body read (simulator choice; answered with 413 beyond it).
MAX_BODY_BYTES: Final = 1 << 20

#: Fault kinds accepted by :meth:`WetbotSimulator.inject`:
#:
#: * ``500_before``: answer 500 without applying.
#: * ``drop_before``: close the connection without any response, without applying.
#: * ``500_after``: handle the request normally (apply it if valid), then answer 500 instead.
#: * ``slow_after``: handle the request normally, then wait ``delay_s`` before answering (if the simulator
#:   is stopped meanwhile, the connection is closed unanswered).
#: * ``stall_before``: wait ``delay_s`` (less if the client goes away), then handle the request only
#:   if the client is still connected; otherwise apply nothing and send nothing.
#: * ``status``: answer ``{"code": status, "message": message}`` with that HTTP status, without applying.
#: * ``html_200``: a proxy in front of WetBot answers an HTML page with status 200; nothing is applied.
#: * ``html_200_after``: the request is handled normally (applied if valid), then a proxy answers an HTML
#:   page with status 200 instead of WetBot's envelope.
FAULT_KINDS: Final = frozenset(
    {"500_before", "drop_before", "500_after", "slow_after", "stall_before", "status", "html_200", "html_200_after"}
)
#: The page the ``html_200`` faults answer (what a captive portal or a misconfigured proxy sends).
HTML_PAGE: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head>"
    b"<body><h1>Service temporarily unavailable</h1><p>Please try again later.</p></body></html>\n"
)

#: ``RequestRecord.status`` when no response was sent (connection dropped, or the client left during a stall).
NO_RESPONSE: Final = 0

#: Shapes :meth:`WetbotSimulator.set_profile_shape` can answer profiles in: the documented one, and drifts
#: a strict reader must not take for "no entry" (an inventory renamed, an entry key renamed, amounts as
#: strings, no inventory at all, a list instead of the profile object).
ProfileShape = Literal["documented", "items", "itemId", "amount_string", "no_inventory", "not_object"]
PROFILE_SHAPES: Final[frozenset[ProfileShape]] = frozenset(get_args(ProfileShape))

_JSON_TYPE = re.compile(r"^\s*application/json\s*(;.*)?$", re.IGNORECASE)


def key_fingerprint(api_key: str) -> str:
    """The short sha256 fingerprint stored instead of a key (same scheme as ``worker.client.key_fingerprint``)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class AppliedChange:
    """One change the simulator applied to a profile.

    ``kind`` is ``"inventory"`` for ``POST .../inventory`` (``items`` = the request's (itemID, amount)
    pairs, in request order, duplicates kept) or ``"profile"`` for ``PATCH`` (``items`` = the
    (field, delta) pairs among currency/xp/rp).
    """

    at: float
    guild_id: str
    user_id: str
    items: tuple[tuple[str, float], ...]
    kind: str = "inventory"


@dataclass(frozen=True)
class RequestRecord:
    """One request that reached the ``/api`` side of the simulator.

    ``at`` is ``time.time()`` at arrival and ``mono`` the ``time.monotonic()`` the rate limiter used;
    ``key`` is :func:`key_fingerprint` of the ``Authorization`` value (None without one), never the key.
    ``status`` is the status answered, or :data:`NO_RESPONSE` (0) when nothing was sent. The record is
    appended just before the answer is written, so a client holding a response always finds its record
    (the status is what the server answered even if the client had already gone). ``fault`` names the
    injected fault the request consumed, if any. ``shape`` is the shape of the profile the answer carried
    (see :meth:`WetbotSimulator.set_profile_shape`), None when it carried none (an error, an HTML page, no
    answer).
    """

    at: float
    key: str | None
    method: str
    path: str
    status: int
    fault: str | None = None
    mono: float = 0.0
    shape: ProfileShape | None = None


@dataclass
class _Fault:
    kind: str
    remaining: int
    user_id: str | None
    method: str | None
    delay_s: float
    status: int
    message: str


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    #: A non-JSON body (``html_200`` faults) sent as ``text/html`` instead of ``payload``.
    html: bytes | None = None
    #: The shape of the profile ``payload`` carries (None: it carries none).
    shape: ProfileShape | None = None


@dataclass(frozen=True)
class _Route:
    guild: str
    user: str
    kind: Literal["profile", "inventory"]


@dataclass
class _Pre:
    """The outcome of the checks made before any fault or body handling."""

    mono: float
    at: float
    key_fp: str | None
    method: str
    path: str
    reply: _Reply | None = None
    route: _Route | None = None
    fault: _Fault | None = None


@dataclass
class _Profile:
    currency: Decimal = Decimal(0)
    xp: Decimal = Decimal(0)
    rp: Decimal = Decimal(0)
    inventory: dict[str, Decimal] = field(default_factory=dict)

    def to_json(self, guild_id: str, user_id: str) -> dict[str, Any]:
        return {
            "userID": user_id,
            "guildID": guild_id,
            "currency": _json_number(self.currency),
            "xp": _json_number(self.xp),
            "rp": _json_number(self.rp),
            "inventory": [
                {"itemID": item_id, "amount": _json_number(amount), "fav": False}
                for item_id, amount in self.inventory.items()
            ],
        }


def _json_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _decimal(value: int | float) -> Decimal:
    # repr() gives the shortest decimal that round-trips, so 0.1 + 0.2 sums to 0.3 as Decimal.js would.
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _finite_number(value: object, bound: int) -> int | float | None:
    """The value if it is a JSON number (not a bool), finite and within [-bound, bound]; else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if -bound <= value <= bound else None


def _error(status: int, message: str) -> _Reply:
    return _Reply(status, {"code": status, "message": message})


def _ok(profile: dict[str, Any], shape: ProfileShape) -> _Reply:
    """The success envelope around ``profile`` written out in ``shape``."""
    return _Reply(200, {"code": 200, "response": _reshape(profile, shape)}, shape=shape)


def _route(path: str) -> tuple[_Route | None, tuple[str, ...]]:
    """Match an ``/api`` path; returns the route and the methods it allows, or (None, ())."""
    if not path.startswith("/api/"):
        return None, ()
    parts = path[len("/api/") :].split("/")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # ASSUMPTION: one trailing slash tolerated
    if len(parts) not in (4, 5) or parts[0] != "guilds" or parts[2] != "users" or not parts[1] or not parts[3]:
        return None, ()
    guild, user = unquote(parts[1]), unquote(parts[3])
    if len(parts) == 4:
        return _Route(guild, user, "profile"), ("GET", "PATCH")
    if parts[4] == "inventory":
        return _Route(guild, user, "inventory"), ("POST",)
    return None, ()


class WetbotSimulator:
    """An in-process WetBot API server; see the module docstring for what is fact and what is choice.

    Parameters:
      keys: API key -> the guild id it may access. Default ``{"demo-key": "111111111111111111"}``.
      items: guild id -> the item ids that exist there. A guild absent from the mapping (or
        ``items=None``) accepts any item id.
      limit, window_s: at most ``limit`` requests per key in any ``window_s`` seconds.
      count_rejected: whether 429-answered requests occupy the window too (default True). Requests
        answered with any other error always count: they passed the limiter.
      retry_after: send ``Retry-After`` (integer seconds until a slot frees, rounded up) with 429s.
      host, port: where to listen; port 0 picks a free port (kept across :meth:`stop`/:meth:`start`).
      control: serve the ``/_sim/...`` control endpoints.
      on_request: called (outside the lock, in the handler thread) with each :class:`RequestRecord`.

    State survives :meth:`stop` and a later :meth:`start` (like a server restart with its database);
    :meth:`reset` returns everything to the constructor's configuration.
    """

    def __init__(
        self,
        *,
        keys: Mapping[str, str] | None = None,
        items: Mapping[str, Iterable[str]] | None = None,
        limit: int = 10,
        window_s: float = 60.0,
        count_rejected: bool = True,
        retry_after: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        control: bool = True,
        on_request: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        _check_limit(limit, window_s)
        self._initial_keys: dict[str, str] = dict(keys) if keys is not None else {DEFAULT_KEY: DEFAULT_GUILD}
        self._initial_items: dict[str, frozenset[str]] = (
            {guild: frozenset(ids) for guild, ids in items.items()} if items is not None else {}
        )
        self._initial_limit = (limit, window_s)
        self.count_rejected = count_rejected
        self.retry_after = retry_after
        self.control = control
        self._host = host
        self._port = port
        self._on_request = on_request
        self._lock = threading.Lock()
        self._server: _SimHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._init_state()

    def _init_state(self) -> None:
        self._keys = dict(self._initial_keys)
        self._revoked: set[str] = set()
        self._catalogue = dict(self._initial_items)
        self._limit, self._window_s = self._initial_limit
        self._windows: dict[str, deque[float]] = {}
        self._profiles: dict[tuple[str, str], _Profile] = {}
        self._faults: list[_Fault] = []
        self._applied: list[AppliedChange] = []
        self._requests: list[RequestRecord] = []
        self._profile_shape: ProfileShape = "documented"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> WetbotSimulator:
        """Bind and serve in a daemon thread; returns self. ``url`` is valid afterwards."""
        if self._server is not None:
            raise RuntimeError("simulator already running")
        server = _SimHTTPServer((self._host, self._port), self)
        self._port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.name = f"wetbot-sim-{self._port}"
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving: wake sleeping faults, close the listener and every open connection."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.wait_released(timeout_s=2.0)  # a held answer is recorded before its connection is cut
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> WetbotSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def root_url(self) -> str:
        """``http://host:port`` (where ``/_sim/...`` lives)."""
        if self._port == 0:
            raise RuntimeError("simulator not started")
        return f"http://{self._host}:{self._port}"

    @property
    def url(self) -> str:
        """The API base URL, ending in ``/api`` (valid after :meth:`start`)."""
        return self.root_url + "/api"

    # ---------------------------------------------------------------- configuration at run time

    def inject(
        self,
        kind: str,
        *,
        count: int = 1,
        user_id: str | None = None,
        delay_s: float = 5.0,
        status: int = 503,
        message: str = "Service unavailable",
        method: str | None = None,
    ) -> None:
        """Queue a fault for the next ``count`` matching requests (FIFO across queued faults).

        ``user_id`` / ``method`` restrict which requests consume it (None = any ``/api`` request that
        passed the rate-limit, auth, route and guild checks). ``delay_s`` is for ``slow_after`` and
        ``stall_before``; ``status``/``message`` for ``status``.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        if not (delay_s >= 0 and math.isfinite(delay_s)):
            raise ValueError("delay_s must be a finite number >= 0")
        if not 100 <= status <= 599:
            raise ValueError("status must be in 100..599")
        fault = _Fault(kind, count, user_id, method.upper() if method else None, delay_s, status, message)
        with self._lock:
            self._faults.append(fault)

    def revoke_key(self, key: str) -> None:
        """Make ``key`` answer 401 until :meth:`restore_key`."""
        with self._lock:
            self._revoked.add(key)

    def restore_key(self, key: str) -> None:
        with self._lock:
            self._revoked.discard(key)

    def add_key(self, key: str, guild_id: str) -> None:
        """Add (or re-point) a key at run time."""
        with self._lock:
            self._keys[key] = guild_id

    def set_items(self, guild_id: str, item_ids: Iterable[str] | None) -> None:
        """Set a guild's item catalogue; None accepts any item id."""
        with self._lock:
            if item_ids is None:
                self._catalogue.pop(guild_id, None)
            else:
                self._catalogue[guild_id] = frozenset(item_ids)

    def set_limit(self, limit: int, window_s: float) -> None:
        """Change the rate limit; request times already in the windows are kept."""
        _check_limit(limit, window_s)
        with self._lock:
            self._limit, self._window_s = limit, window_s

    def adjust(self, guild_id: str, user_id: str, item_id: str, delta: float) -> None:
        """Change a member's item by ``delta`` as the bot itself would (a purchase, a trade, an admin's
        ``/give-item``): no API request, no rate slot, not in :meth:`applied` (which lists API changes)."""
        with self._lock:
            profile = self._profiles.setdefault((guild_id, user_id), _Profile())
            profile.inventory[item_id] = profile.inventory.get(item_id, Decimal(0)) + _decimal(delta)

    def set_profile_shape(self, shape: str) -> None:
        """Answer profiles in another shape than the documented one (a changed API, a proxy): one of
        ``PROFILE_SHAPES``; ``documented`` restores it. Changes only how profiles are written out."""
        if not _is_profile_shape(shape):
            raise ValueError(f"unknown profile shape {shape!r}; expected one of {sorted(PROFILE_SHAPES)}")
        with self._lock:
            self._profile_shape = shape

    def reset(self) -> None:
        """Clear profiles, windows, faults and logs; restore the constructor's keys, catalogue and limit."""
        with self._lock:
            self._init_state()

    # ---------------------------------------------------------------- inspection

    def applied(self) -> list[AppliedChange]:
        with self._lock:
            return list(self._applied)

    def requests(self) -> list[RequestRecord]:
        """Every ``/api`` request, in arrival order (a record appears when its answer is sent)."""
        with self._lock:
            return sorted(self._requests, key=lambda r: r.mono)

    def inventory(self, guild_id: str, user_id: str) -> dict[str, float]:
        """Current item totals (zero entries included); {} for a profile that does not exist."""
        with self._lock:
            profile = self._profiles.get((guild_id, user_id))
            return {} if profile is None else {k: float(v) for k, v in profile.inventory.items()}

    def profile(self, guild_id: str, user_id: str) -> dict[str, Any] | None:
        """The profile as the API would return it, or None (does not create it)."""
        with self._lock:
            profile = self._profiles.get((guild_id, user_id))
            return None if profile is None else profile.to_json(guild_id, user_id)

    def count_status(self, status: int) -> int:
        with self._lock:
            return sum(1 for r in self._requests if r.status == status)

    def max_in_window(
        self, window_s: float | None = None, *, statuses: Collection[int] | None = None, key: str | None = None
    ) -> int:
        """Most requests (optionally only those answered with ``statuses``, or sent with raw ``key``) that
        arrived within any ``window_s`` seconds (default: the current limit's window).

        Uses the limiter's own arrival times and its boundary rule (two arrivals exactly ``window_s``
        apart are in different windows). The simulator guarantees
        ``max_in_window(statuses=<anything but 429>, key=k) <= limit``; arrivals of every status can exceed
        it only if the client sent too fast, so a well-behaved client shows ``count_status(429) == 0``
        and ``max_in_window(key=k) <= limit``.
        """
        with self._lock:
            window = self._window_s if window_s is None else window_s
            fp = None if key is None else key_fingerprint(key)
            times = sorted(
                r.mono
                for r in self._requests
                if (statuses is None or r.status in statuses) and (fp is None or r.key == fp)
            )
        best = start = 0
        for end, t in enumerate(times):
            while times[start] <= t - window:
                start += 1
            best = max(best, end - start + 1)
        return best

    # ---------------------------------------------------------------- request handling (called by handlers)

    def _preflight(self, method: str, path: str, auth: str | None) -> _Pre:
        now, at = time.monotonic(), time.time()
        pre = _Pre(now, at, None if auth is None else key_fingerprint(auth), method, path)
        with self._lock:
            if auth is not None:
                pre.reply = self._take_slot(auth, now)
                if pre.reply is not None:
                    return pre
            # ASSUMPTION: 401 with this text for a missing, unknown or revoked key.
            if auth is None or auth not in self._keys or auth in self._revoked:
                pre.reply = _error(401, "Invalid API key")
                return pre
            route, allowed = _route(path)
            if route is None:
                pre.reply = _error(404, "Not found")
                return pre
            if method not in allowed:
                pre.reply = _error(405, "Method not allowed")
                pre.reply.headers["Allow"] = ", ".join(allowed)
                return pre
            if self._keys[auth] != route.guild:
                # ASSUMPTION: a valid key used for another guild is 403.
                pre.reply = _error(403, "This API key does not give access to this guild")
                return pre
            pre.route = route
            pre.fault = self._pop_fault(route.user, method)
        return pre

    def _take_slot(self, key: str, now: float) -> _Reply | None:
        """Sliding window (caller holds the lock): None if admitted, else the 429 reply."""
        window = self._windows.setdefault(key, deque())
        cutoff = now - self._window_s
        while window and window[0] <= cutoff:
            window.popleft()
        if len(window) < self._limit:
            window.append(now)
            return None
        if self.count_rejected:
            window.append(now)
        reply = _error(429, "Too many requests")
        if self.retry_after:
            # The next request is admitted once all but limit-1 of the times in the window have expired.
            frees_at = window[len(window) - self._limit] + self._window_s
            reply.headers["Retry-After"] = str(max(1, math.ceil(frees_at - now)))
        return reply

    def _pop_fault(self, user_id: str, method: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.user_id not in (None, user_id) or fault.method not in (None, method):
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[index]
            return fault
        return None

    def _execute(self, route: _Route, method: str, content_type: str | None, body: bytes) -> _Reply:
        """Content-Type, validation and the change itself (atomic under the lock)."""
        with self._lock:
            if method == "GET":
                return _ok(self._get_profile(route).to_json(route.guild, route.user), self._profile_shape)
            if content_type is None or not _JSON_TYPE.match(content_type):
                # ASSUMPTION: the docs require application/json; what the server does without it is unknown.
                return _error(400, "Content-Type must be application/json")
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                return _error(400, "Request body must be valid JSON")
            if not isinstance(data, dict):
                return _error(400, "Request body must be a JSON object")
            if route.kind == "inventory":
                return self._add_items(route, cast(dict[str, Any], data))
            return self._patch_profile(route, cast(dict[str, Any], data))

    def _get_profile(self, route: _Route) -> _Profile:
        return self._profiles.setdefault((route.guild, route.user), _Profile())

    def _add_items(self, route: _Route, data: dict[str, Any]) -> _Reply:
        raw_items = data.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            return _error(400, "'items' must be a non-empty array")
        entries: list[Any] = raw_items
        if len(entries) > MAX_ITEMS:
            return _error(400, f"'items' may hold at most {MAX_ITEMS} entries, got {len(entries)}")
        parsed: list[tuple[str, int | float]] = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                return _error(400, f"items[{index}] must be an object")
            item = cast(dict[str, Any], entry)
            item_id = item.get("itemID")
            if not isinstance(item_id, str) or not item_id:
                return _error(400, f"items[{index}].itemID must be a non-empty string")
            amount = _finite_number(item.get("amount"), MAX_AMOUNT)
            if amount is None:
                return _error(
                    400, f"items[{index}].amount must be a finite number between -{MAX_AMOUNT} and {MAX_AMOUNT}"
                )
            parsed.append((item_id, amount))
        catalogue = self._catalogue.get(route.guild)
        if catalogue is not None:
            for item_id, _ in parsed:
                if item_id not in catalogue:
                    return _error(404, f"Item not found: {item_id}")  # ASSUMPTION: status and text
        profile = self._get_profile(route)
        for item_id, amount in parsed:  # ASSUMPTION: atomic; every check above ran before any change
            profile.inventory[item_id] = profile.inventory.get(item_id, Decimal(0)) + _decimal(amount)
        self._applied.append(
            AppliedChange(time.time(), route.guild, route.user, tuple((i, float(a)) for i, a in parsed))
        )
        return _ok(profile.to_json(route.guild, route.user), self._profile_shape)

    def _patch_profile(self, route: _Route, data: dict[str, Any]) -> _Reply:
        deltas: list[tuple[str, int | float]] = []
        for name, bound in PROFILE_FIELD_LIMITS.items():
            if name not in data:
                continue
            value = _finite_number(data[name], bound)
            if value is None:
                return _error(400, f"{name} must be a finite number between -{bound} and {bound}")
            deltas.append((name, value))
        if not deltas:
            return _error(400, "Body must contain at least one of currency, xp, rp")
        profile = self._get_profile(route)
        for name, value in deltas:
            setattr(profile, name, cast(Decimal, getattr(profile, name)) + _decimal(value))
        self._applied.append(
            AppliedChange(time.time(), route.guild, route.user, tuple((n, float(v)) for n, v in deltas), "profile")
        )
        return _ok(profile.to_json(route.guild, route.user), "documented")  # PATCH answers are never reshaped

    def _record(self, pre: _Pre, status: int, fault: str | None, shape: ProfileShape | None = None) -> None:
        record = RequestRecord(pre.at, pre.key_fp, pre.method, pre.path, status, fault, pre.mono, shape)
        with self._lock:
            self._requests.append(record)
        if self._on_request is not None:
            self._on_request(record)

    def _control(self, method: str, path: str, query: str, body: bytes) -> _Reply:
        """The ``/_sim/...`` endpoints (plain JSON, no WetBot envelope)."""
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        endpoint = "/".join(parts) if len(parts) != 3 or parts[0] != "inventory" else "inventory"
        gets = {"health", "applied", "requests", "inventory", "max_in_window"}
        posts = {"faults", "reset", "keys/revoke", "keys/restore", "limit", "adjust", "profile_shape"}
        if endpoint not in gets | posts:
            return _Reply(404, {"error": f"unknown control endpoint {path}"})
        if method != ("GET" if endpoint in gets else "POST"):
            return _Reply(405, {"error": "method not allowed"})
        try:
            return self._control_call(endpoint, parts, parse_qs(query), body)
        except (ValueError, TypeError, KeyError) as exc:
            return _Reply(400, {"error": f"{type(exc).__name__}: {exc}"})

    def _control_call(self, endpoint: str, parts: list[str], query: dict[str, list[str]], body: bytes) -> _Reply:
        if endpoint == "health":
            return _Reply(200, {"ok": True, "url": self.url})
        if endpoint == "applied":
            return _Reply(200, {"applied": [asdict(change) for change in self.applied()]})
        if endpoint == "requests":
            return _Reply(200, {"requests": [asdict(record) for record in self.requests()]})
        if endpoint == "inventory":
            return _Reply(200, {"inventory": self.inventory(parts[1], parts[2])})
        if endpoint == "max_in_window":
            window = float(query["window_s"][0]) if "window_s" in query else None
            statuses = {int(s) for s in query["statuses"][0].split(",") if s} if "statuses" in query else None
            key = query["key"][0] if "key" in query else None
            return _Reply(200, {"max_in_window": self.max_in_window(window, statuses=statuses, key=key)})
        if endpoint == "reset":
            self.reset()
            return _Reply(200, {"ok": True})
        args = json.loads(body) if body else {}
        if not isinstance(args, dict):
            raise TypeError("body must be a JSON object")
        if endpoint == "faults":
            kind = args.pop("kind")
            self.inject(str(kind), **args)
        elif endpoint == "keys/revoke":
            self.revoke_key(str(args["key"]))
        elif endpoint == "keys/restore":
            self.restore_key(str(args["key"]))
        elif endpoint == "adjust":
            self.adjust(str(args["guild_id"]), str(args["user_id"]), str(args["item_id"]), float(args["delta"]))
        elif endpoint == "profile_shape":
            self.set_profile_shape(str(args["shape"]))
        else:  # limit
            self.set_limit(int(args["limit"]), float(args["window_s"]))
        return _Reply(200, {"ok": True})


def _is_profile_shape(shape: str) -> TypeGuard[ProfileShape]:
    return shape in PROFILE_SHAPES


def _reshape(profile: dict[str, Any], shape: ProfileShape) -> Any:
    inventory = profile.get("inventory", [])
    others = {key: value for key, value in profile.items() if key != "inventory"}
    if shape == "items":
        return {**others, "items": inventory}
    if shape == "itemId":
        return {
            **others,
            "inventory": [{"itemId": e["itemID"], "amount": e["amount"], "fav": e["fav"]} for e in inventory],
        }
    if shape == "amount_string":
        return {**others, "inventory": [{**e, "amount": str(e["amount"])} for e in inventory]}
    if shape == "no_inventory":
        return others
    if shape == "not_object":
        return inventory
    return profile


def _check_limit(limit: int, window_s: float) -> None:
    if limit < 1:
        raise ValueError("limit must be >= 1")
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError("window_s must be a finite number > 0")


class _SimHTTPServer(TrackingServer):
    def __init__(self, address: tuple[str, int], sim: WetbotSimulator) -> None:
        self.sim = sim
        self._holding = 0
        self._released = threading.Condition()
        super().__init__(address, _Handler)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """A handler holds a request (a slow fault) within this block, until it has recorded what became of it."""
        with self._released:
            self._holding += 1
        try:
            yield
        finally:
            with self._released:
                self._holding -= 1
                self._released.notify_all()

    def wait_released(self, *, timeout_s: float) -> None:
        """Until no handler holds a request (each woken by ``stopping`` records it and drops its connection)."""
        with self._released:
            self._released.wait_for(lambda: self._holding == 0, timeout=timeout_s)


class _BadFraming(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(TrackingHandler):
    server_version = "WetbotSim/1.0"

    def _server(self) -> _SimHTTPServer:
        return cast(_SimHTTPServer, self.server)

    def _dispatch(self) -> None:
        server = self._server()
        sim = server.sim
        path, query = urlsplit(self.path)[2:4]
        try:
            body = self._read_body()
        except _BadFraming as exc:
            self._send(_error(exc.status, str(exc)), close=True)
            return
        if sim.control and (path == "/_sim" or path.startswith("/_sim/")):
            self._send(sim._control(self.command, path, query, body))
            return
        pre = sim._preflight(self.command, path, self.headers.get("Authorization"))
        # Each request is recorded just BEFORE its answer is written (or the connection dropped), so a
        # client that has its response always finds the record; the status is what the server answered
        # even if the client had already gone.
        if pre.reply is not None or pre.route is None:
            reply = pre.reply or _error(500, "Internal server error")
            sim._record(pre, reply.status, None)
            self._send(reply)
            return
        fault = pre.fault
        kind = fault.kind if fault else None
        if kind == "stall_before" and fault is not None:
            with server.holding():
                if not self._stall(fault.delay_s):
                    sim._record(pre, NO_RESPONSE, kind)
                    self._drop()
                    return
        elif kind == "drop_before":
            sim._record(pre, NO_RESPONSE, kind)
            self._drop()
            return
        if fault is not None and kind in ("500_before", "status", "html_200"):
            if kind == "html_200":
                reply = _Reply(200, {}, html=HTML_PAGE)
            elif kind == "500_before":
                reply = _error(500, "Internal server error")
            else:
                reply = _error(fault.status, fault.message)
            sim._record(pre, reply.status, kind)
            self._send(reply)
            return
        reply = sim._execute(pre.route, self.command, self.headers.get("Content-Type"), body)
        if fault is not None and kind == "500_after":
            reply = _error(500, "Internal server error")
        elif fault is not None and kind == "html_200_after":
            reply = _Reply(200, {}, html=HTML_PAGE)
        elif fault is not None and kind == "slow_after":
            with server.holding():
                if server.stopping.wait(fault.delay_s):
                    sim._record(pre, NO_RESPONSE, kind)  # stopped while holding the answer: applied, never answered
                    self._drop()
                    return
        sim._record(pre, reply.status, kind, reply.shape)
        self._send(reply)

    def _read_body(self) -> bytes:
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if encoding and encoding != "identity":
            if encoding != "chunked":
                raise _BadFraming(400, f"Unsupported Transfer-Encoding: {encoding}")
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BadFraming(400, "Invalid Content-Length") from None
        if length < 0:
            raise _BadFraming(400, "Invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise _BadFraming(413, "Request body too large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise _BadFraming(413, "Request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        except ValueError:
            raise _BadFraming(400, "Invalid chunked body") from None

    def _send(self, reply: _Reply, *, close: bool = False) -> bool:
        """Write the reply; False if the client was already gone."""
        data = json.dumps(reply.payload).encode() if reply.html is None else reply.html
        content_type = "application/json; charset=utf-8" if reply.html is None else "text/html; charset=utf-8"
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True

    def _drop(self) -> None:
        """Close the connection without a response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _client_connected(self) -> bool:
        """Peek at the socket: readable with EOF (or an error) means the client closed its side."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return True
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return peeked != b""
        except OSError:
            return False

    def _stall(self, delay_s: float) -> bool:
        """Wait up to ``delay_s``; True if the client is still connected (and the simulator running) after it."""
        stopping = self._server().stopping
        deadline = time.monotonic() + delay_s
        while (remaining := deadline - time.monotonic()) > 0:
            if stopping.wait(min(0.05, remaining)) or not self._client_connected():
                return False
        return self._client_connected()


# -------------------------------------------------------------------- CLI


def parse_rate(text: str) -> tuple[int, float]:
    """``"10/60s"`` -> (10, 60.0). Units: ms, s (default), m/min, h."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"rate must look like 10/60s, got {text!r}")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[match.group(3)]
    limit, window = int(match.group(1)), float(match.group(2)) * scale
    if limit < 1 or window <= 0:
        raise argparse.ArgumentTypeError("rate needs at least 1 request per a positive window")
    return limit, window


def _print_record(record: RequestRecord) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(record.at))
    fault = f" fault={record.fault}" if record.fault else ""
    print(f"{stamp} {record.method} {record.path} {record.status}{fault}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description="Serve a simulated WetBot API until SIGINT/SIGTERM."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port (printed at start)")
    parser.add_argument(
        "--key", action="append", help=f"API key (repeatable, paired with --guild; default {DEFAULT_KEY})"
    )
    parser.add_argument("--guild", action="append", help=f"guild id of each --key (default {DEFAULT_GUILD})")
    parser.add_argument("--rate", type=parse_rate, default=(10, 60.0), help="LIMIT/WINDOW, e.g. 10/60s (default)")
    parser.add_argument("--items", help="comma-separated item ids known in every --guild (default: accept any)")
    parser.add_argument("--retry-after", action="store_true", help="send Retry-After with 429s")
    parser.add_argument("--no-count-rejected", action="store_true", help="429-answered requests do not count")
    parser.add_argument("--no-control", action="store_true", help="do not serve /_sim/... endpoints")
    args = parser.parse_args(argv)
    keys: list[str] = args.key or [DEFAULT_KEY]
    guilds: list[str] = args.guild or [DEFAULT_GUILD]
    if len(keys) != len(guilds):
        parser.error("give one --guild per --key")
    items = None
    if args.items is not None:
        ids = [i.strip() for i in str(args.items).split(",") if i.strip()]
        items = {guild: ids for guild in guilds}
    limit, window_s = cast(tuple[int, float], args.rate)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sim = WetbotSimulator(
        keys=dict(zip(keys, guilds, strict=True)),
        items=items,
        limit=limit,
        window_s=window_s,
        count_rejected=not args.no_count_rejected,
        retry_after=bool(args.retry_after),
        host=str(args.host),
        port=int(args.port),
        control=not args.no_control,
        on_request=_print_record,
    ).start()
    print(
        f"WetBot simulator listening on {sim.url} (guilds {', '.join(sorted(set(guilds)))}; "
        f"{limit} requests per {window_s:g}s per key)",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    print("WetBot simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
