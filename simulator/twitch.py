"""A local simulator of Twitch's OAuth server and Helix API, for tests, benchmarks and demo mode.

A real HTTP server on loopback (stdlib ``ThreadingHTTPServer``, daemon threads, see ``simulator._http``),
started in-process (:class:`TwitchSimulator`). OAuth lives under ``/oauth2`` (``auth_url``), Helix under
``/helix`` (``api_url``), the device-activation page at ``/activate`` and the control endpoints under
``/_sim``. The EventSub WebSocket server is a separate object (``simulator.eventsub_ws``); this simulator
asks it, through :class:`SessionDirectory`, whether a session id exists, binds each websocket subscription
to its session (``attach``; the server's connection limits answer 429) and unbinds deleted ones; a session
the server ends (``on_session_end``) gives its subscriptions the ``websocket_*`` status it ended with.
:meth:`~TwitchSimulator.redeem` has the server deliver the redemption to each enabled websocket subscription
it matches, and revoking (``revoke_all``, a revocation status) has it send ``revocation`` messages. Webhook
subscriptions get no challenge and no deliveries from the simulator.

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
* Authorization code grant flow (docs/sources-sync.md §4, "Authorization code grant flow"):
  ``GET /oauth2/authorize`` with ``response_type=code``, ``client_id``, ``redirect_uri`` (one registered for
  the app), ``scope`` (space-separated) and ``state``; the user's approval redirects to the redirect URI with
  ``code``, ``scope`` and ``state``, a refusal with ``error=access_denied``, ``error_description`` and
  ``state``. ``POST /oauth2/token`` with ``grant_type=authorization_code``, ``client_id``, ``client_secret``,
  ``code`` and the same ``redirect_uri`` answers as the device flow's exchange (``access_token``,
  ``refresh_token``, ``expires_in``, ``scope``, ``token_type``).
* ``GET /oauth2/validate`` with ``Authorization: OAuth <token>`` answers ``client_id``, ``login``,
  ``scopes``, ``user_id``, ``expires_in``, or 401 for a dead token (§4). ``POST /oauth2/revoke``
  (``client_id``, ``token``) revokes.
* OAuth errors have the shape ``{"status": n, "message": "..."}``.
* Helix: ``Authorization: Bearer <token>`` plus ``Client-Id``; errors ``{"error", "status", "message"}``.
  Rewards, redemptions and their updates need the broadcaster's user token, ``broadcaster_id`` equal to
  its user, and scope ``channel:manage:redemptions`` (listing redemptions: ``channel:read:redemptions``
  too). At most 50 rewards per channel, disabled ones included; titles unique and at most 45 characters.
  Only rewards our client id created can be updated or deleted, and only their redemptions are listed or
  updated; redemptions list with ``status`` (required without ``id``), ``reward_id``, ``sort``
  OLDEST/NEWEST, ``first`` <= 50 (default 20) and an ``after`` cursor; a redemption carries its reward as it
  was at redemption time; ``PATCH`` takes up to 50 ``id`` and changes only UNFULFILLED ones (CANCELED
  refunds); ``should_redemptions_skip_request_queue`` rewards are FULFILLED at once (§1.1).
* Every Helix answer has ``Ratelimit-Limit`` / ``-Remaining`` / ``-Reset`` (epoch seconds when full); a
  bucket of 800 points a minute per client and user (app tokens apart), 1 point a call; empty -> 429 (§1.2).
* EventSub: webhook subscriptions need an app token, websocket ones a user token and a live session id;
  a duplicate answers 409 (also against an "enabled" orphan of a dead session); lists carry ``total``,
  ``total_cost``, ``max_total_cost`` (10000 for webhooks, 10 per client and user for websockets) and ignore
  ``first``; authorized subscriptions cost 0; a websocket session holds <= 300; disabled websocket
  subscriptions stay listed an hour, webhook ones 10 days; an app token lists webhook subscriptions, a user
  token the websocket ones it made; filters ``status``, ``type``, ``user_id`` (§2.1, §3.1;
  ``docs/twitch.md`` §1.1).

**Simulator choices** (ASSUMPTIONS):

* ``slow_down`` (RFC 8628) is answered when a device code is polled again less than ``interval`` seconds after
  its previous poll (the first poll is never too fast); the required spacing is not raised afterwards.
  ``expired_token`` once the device code's ``expires_in`` has passed, ``access_denied`` once the user
  denied, ``invalid device code`` for an unknown, used or other client's code. Check order: client ->
  code known -> expired -> too fast -> denied -> pending -> tokens.
* ``verification_uri`` points at this simulator's ``/activate`` page (Authorize / Deny buttons, acting as
  the broadcaster); the ``user_code`` is 8 upper-case letters.
* ``auto_approve_after_s`` approves a device code as the broadcaster once it is that old (demo mode).
* ``/oauth2/authorize`` acts as the signed-in broadcaster: ``authorize="ask"`` shows a page with Authorize /
  Cancel buttons, ``approve`` / ``deny`` answer at once (tests, demo mode). A code lives 10 minutes and is
  single use (RFC 6749 §4.1.2); an unknown, used, expired or other client's code answers 400 ``Invalid
  authorization code``, another redirect URI 400 ``Parameter redirect_uri does not match registered URI``,
  a missing or wrong secret 403 ``invalid client secret`` (a public client has none, so cannot use this
  flow). Without ``redirect_uris`` every http(s) URI counts as registered; an unregistered one, an unknown
  client or another ``response_type`` is answered 400 by the page itself, never redirected.
* Refreshing keeps the grant's older access tokens valid until they expire. Revoking either an access or a
  refresh token ends the whole grant (its access tokens and its refresh token).
* Validating an app token answers ``client_id``, ``scopes`` ``[]`` and ``expires_in`` (no ``login`` or
  ``user_id``). Unknown client ids answer 400 ``invalid client`` (404 ``client does not exist`` on revoke).
* Helix ``GET /users`` without ``id``/``login`` answers the token's user (400 with an app token); more than
  100 ids and logins together answer 400. Unknown ones are left out.
* Rewards: titles are compared case-insensitively; a refused ``PATCH`` changes nothing; 400 messages
  ``CREATE_CUSTOM_REWARD_DUPLICATE_REWARD`` / ``CREATE_CUSTOM_REWARD_TOO_MANY_REWARDS``; another client's
  reward answers 403, an unknown or deleted one 404; a ``broadcaster_id`` other than the token's user 401;
  a missing scope or an app token 401. A reward deleted on Twitch takes its redemptions out of every
  listing, and updating them answers 404 (``redemptions()`` still shows them). Redemption cursors point
  after the last redemption returned, so a status change between pages skips nothing.
* ``PATCH`` redemptions requires ``reward_id``; ids that are not UNFULFILLED (or not that reward's) are
  left out of ``data``; none left answers 404 ``No redemptions found``.
* Rate limit: the bucket refills continuously; answers to requests without a valid token carry the headers
  of a bucket per ``Client-Id`` header; an injected fault's answer shows the bucket without taking a point
  (so an injected 429 is one "unrelated to the bucket", §1.2).
* EventSub duplicates compare client, type, version and condition (not callback or session); the webhook
  callback must be https and the secret 10-100 characters; webhook subscriptions start as
  ``webhook_callback_verification_pending`` (no challenge is sent: :meth:`TwitchSimulator.set_subscription_status`
  enables them), websocket ones ``enabled``; an unauthorized type answers 403 ``subscription missing proper
  authorization`` (the scopes of the condition user's live grants for webhooks, of the token for
  websockets); exceeding ``max_total_cost`` or a session's 300 answers 429. Without a ``sessions`` object no
  websocket session exists. :meth:`TwitchSimulator.revoke_all` also turns the scoped subscriptions of every
  user into ``authorization_revoked``.
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
``POST /_sim/tokens/issue`` (``{"login", "scopes": [...]}``, answers ``{"tokens": ...}``),
``POST /_sim/tokens/lifetime`` (``{"seconds": s}``), ``POST /_sim/authorize`` (``{"mode": "ask" | "approve" |
"deny"}``), ``POST /_sim/clock/advance`` (``{"seconds": s}``),
``POST /_sim/rate_limit`` (``{"limit": n, "window_s": s}``); the channel: ``GET /_sim/rewards``,
``/_sim/redemptions``, ``/_sim/refunds``, ``/_sim/subscriptions``; ``POST /_sim/redeem`` (``{"reward_id",
"login", "user_input"}``, answers ``{"event": ...}``), ``/_sim/rewards/create`` (``{"title", "cost", ...,
"other_app": true}``), ``/_sim/rewards/delete`` (``{"reward_id"}``), ``/_sim/rewards/rename``
(``{"reward_id", "title"}``), ``/_sim/subscriptions/status`` (``{"id", "status"}``) and ``/_sim/sessions/end``
(``{"session_id", "status"}``).
"""

from __future__ import annotations

from simulator._http import Reply, Request
from simulator.twitch_control import control
from simulator.twitch_core import (
    DEFAULT_BROADCASTER,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_VIEWERS,
    FAULT_KINDS,
    NO_RESPONSE,
    OTHER_CLIENT_ID,
    OTHER_CLIENT_SECRET,
    RequestRecord,
    TwitchCore,
    token_fingerprint,
)
from simulator.twitch_eventsub import SessionDirectory
from simulator.twitch_helix import StatusUpdate
from simulator.twitch_oauth import TwitchUser

__all__ = [
    "DEFAULT_BROADCASTER",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_VIEWERS",
    "FAULT_KINDS",
    "NO_RESPONSE",
    "OTHER_CLIENT_ID",
    "OTHER_CLIENT_SECRET",
    "RequestRecord",
    "SessionDirectory",
    "StatusUpdate",
    "TwitchSimulator",
    "TwitchUser",
    "token_fingerprint",
]


class TwitchSimulator(TwitchCore):
    """The Twitch simulator with its ``/_sim`` control endpoints; the parameters and the control methods are
    :class:`~simulator.twitch_core.TwitchCore`'s."""

    def _control(self, request: Request) -> Reply:
        return control(self, request)
