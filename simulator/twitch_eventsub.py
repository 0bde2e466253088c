"""EventSub subscriptions in the Twitch simulator: ``/helix/eventsub/subscriptions`` (create, list, delete).

Pure state and logic, called by :class:`simulator.twitch.TwitchSimulator` with its lock held. What is
documented and what is chosen is listed in the docstring of ``simulator.twitch``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from simulator._http import Reply, Request
from simulator.eventsub_ws import EventSubSimError, UnknownSessionError
from simulator.twitch_helix import READ_REDEMPTIONS, Caller, helix_error, rfc3339

#: The scopes (any one of them) the condition's user must have granted our client, per type.
TYPE_SCOPES: Mapping[str, frozenset[str]] = {
    "channel.subscribe": frozenset({"channel:read:subscriptions"}),
    "channel.subscription.gift": frozenset({"channel:read:subscriptions"}),
    "channel.subscription.message": frozenset({"channel:read:subscriptions"}),
    "channel.cheer": frozenset({"bits:read"}),
    "channel.channel_points_custom_reward_redemption.add": READ_REDEMPTIONS,
    "channel.channel_points_custom_reward_redemption.update": READ_REDEMPTIONS,
    "channel.follow": frozenset({"moderator:read:followers"}),
    "channel.raid": frozenset(),
}
#: Condition fields Helix lists as "" when a subscription does not use them.
LISTED_CONDITION_FIELDS: Mapping[str, tuple[str, ...]] = {
    "channel.raid": ("from_broadcaster_user_id", "to_broadcaster_user_id"),
    "channel.channel_points_custom_reward_redemption.add": ("broadcaster_user_id", "reward_id"),
    "channel.channel_points_custom_reward_redemption.update": ("broadcaster_user_id", "reward_id"),
}
#: Statuses in which a subscription delivers (or is about to) and blocks a duplicate.
ACTIVE = frozenset({"enabled", "webhook_callback_verification_pending"})
#: docs/sources-sync.md §2.1 and §3.1.
WEBHOOK_MAX_TOTAL_COST = 10_000
WEBSOCKET_MAX_TOTAL_COST = 10
WEBSOCKET_MAX_PER_SESSION = 300
#: How long disabled subscriptions stay listed (docs/sources-sync.md §2.1).
WEBSOCKET_LISTED_AFTER_DISABLED_S = 3600.0
WEBHOOK_LISTED_AFTER_DISABLED_S = 10 * 86_400.0


class SessionDirectory(Protocol):
    """What the simulator asks the EventSub WebSocket server (``simulator.eventsub_ws``). Called with the
    simulator's lock held, so it must not call back into the simulator (``on_session_end`` runs elsewhere)."""

    on_session_end: Callable[[str, str], None] | None

    @property
    def url(self) -> str: ...

    def has_session(self, session_id: str) -> bool: ...

    def attach(self, session_id: str, subscription: Mapping[str, object], *, owner: str | None = None) -> None: ...

    def detach(self, subscription_id: str) -> bool: ...

    def notify(self, target: str, event: Mapping[str, object], *, duplicate: bool = False) -> object: ...

    def revoke(self, subscription_id: str, status: str = "authorization_revoked") -> object: ...


@dataclass
class Subscription:
    id: str
    type: str
    version: str
    condition: dict[str, str]
    method: str
    client_id: str
    #: The user whose token created a websocket subscription (None: webhook, app token).
    user_id: str | None
    created_at: str
    cost: int
    status: str
    callback: str = ""
    secret: str = ""
    session_id: str = ""
    disabled_at: float | None = None

    def to_json(self) -> dict[str, object]:
        listed = {name: "" for name in LISTED_CONDITION_FIELDS.get(self.type, ())} | self.condition
        transport: dict[str, object] = {"method": self.method}
        if self.method == "webhook":
            transport["callback"] = self.callback
        else:
            transport |= {"session_id": self.session_id, "connected_at": self.created_at}
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "version": self.version,
            "condition": listed,
            "created_at": self.created_at,
            "transport": transport,
            "cost": self.cost,
        }


@dataclass
class EventSubState:
    """Every subscription, in creation order. The caller holds the simulator's lock.

    ``granted(client_id, user_id)`` answers the scopes a user has granted a client (live grants only);
    ``sessions`` is the EventSub WebSocket server, told of each websocket subscription made or deleted
    (None: no session exists).
    """

    granted: Callable[[str, str], frozenset[str]]
    sessions: SessionDirectory | None
    subscriptions: list[Subscription] = field(default_factory=list)
    page_size: int = 100

    def handle(self, request: Request, caller: Caller, now: float, wall: datetime) -> Reply:
        self._prune(now)
        if request.method == "GET":
            return self._list(request, caller)
        if request.method == "POST":
            return self._create(request, caller, wall)
        if request.method == "DELETE":
            found = self._find(request.arg("id") or "", caller)
            if found is None:
                return helix_error(404, "subscription not found")
            self.subscriptions.remove(found)
            if found.method == "websocket" and self.sessions is not None:
                self.sessions.detach(found.id)
            return Reply(204)
        return helix_error(404, "Not Found")

    # ---------------------------------------------------------------- control

    def set_status(self, subscription_id: str, status: str, now: float) -> Subscription:
        for subscription in self.subscriptions:
            if subscription.id == subscription_id:
                subscription.status = status
                subscription.disabled_at = None if status in ACTIVE else now
                return subscription
        raise ValueError(f"no subscription {subscription_id!r}")

    def delivering(self, kind: str, event: Mapping[str, object]) -> list[Subscription]:
        """The enabled websocket subscriptions of ``kind`` whose condition the event meets."""

        def meets(subscription: Subscription) -> bool:
            reward = event.get("reward")
            for name, wanted in subscription.condition.items():
                value = reward.get("id") if name == "reward_id" and isinstance(reward, dict) else event.get(name)
                if value != wanted:
                    return False
            return True

        return [
            s
            for s in self.subscriptions
            if s.method == "websocket" and s.type == kind and s.status == "enabled" and meets(s)
        ]

    def end_session(self, session_id: str, status: str, now: float) -> list[Subscription]:
        """The session's live subscriptions take ``status`` (a websocket_* one); returns them."""
        ended = [s for s in self.subscriptions if s.session_id == session_id and s.status in ACTIVE]
        for subscription in ended:
            subscription.status, subscription.disabled_at = status, now
        return ended

    def revoke_user(self, user_id: str, now: float) -> list[Subscription]:
        """The user withdrew their authorization: their scoped subscriptions become authorization_revoked."""
        revoked = [
            s
            for s in self.subscriptions
            if s.status in ACTIVE and TYPE_SCOPES.get(s.type) and user_id in s.condition.values()
        ]
        for subscription in revoked:
            subscription.status, subscription.disabled_at = "authorization_revoked", now
        return revoked

    # ---------------------------------------------------------------- endpoints

    def _visible(self, caller: Caller) -> list[Subscription]:
        """An app token sees the client's webhook subscriptions; a user token the websocket ones it made."""
        if caller.user_id is None:
            return [s for s in self.subscriptions if s.client_id == caller.client_id and s.method == "webhook"]
        return [
            s
            for s in self.subscriptions
            if s.client_id == caller.client_id and s.method == "websocket" and s.user_id == caller.user_id
        ]

    def _find(self, subscription_id: str, caller: Caller) -> Subscription | None:
        return next((s for s in self._visible(caller) if s.id == subscription_id), None)

    def _totals(self, caller: Caller) -> dict[str, object]:
        visible = self._visible(caller)
        return {
            "total": len(visible),
            "total_cost": sum(s.cost for s in visible if s.status in ACTIVE),
            "max_total_cost": WEBHOOK_MAX_TOTAL_COST if caller.user_id is None else WEBSOCKET_MAX_TOTAL_COST,
        }

    def _list(self, request: Request, caller: Caller) -> Reply:
        filters = [name for name in ("status", "type", "user_id") if request.arg(name)]
        if len(filters) > 1:
            return helix_error(400, "Only one of status, type and user_id may be given")
        listed = self._visible(caller)
        status, kind, user_id = request.arg("status"), request.arg("type"), request.arg("user_id")
        if status:
            listed = [s for s in listed if s.status == status]
        if kind:
            listed = [s for s in listed if s.type == kind]
        if user_id:
            listed = [s for s in listed if user_id in s.condition.values()]
        after = request.arg("after") or ""
        start = next((i + 1 for i, s in enumerate(listed) if s.id == after), 0) if after else 0
        page = listed[start : start + self.page_size]
        more = start + self.page_size < len(listed)
        pagination: dict[str, object] = {"cursor": page[-1].id} if more and page else {}
        return Reply(200, {"data": [s.to_json() for s in page], **self._totals(caller), "pagination": pagination})

    def _create(self, request: Request, caller: Caller, wall: datetime) -> Reply:
        try:
            body = request.json_body()
        except ValueError:
            return helix_error(400, "The request body must be JSON")
        if not isinstance(body, dict):
            return helix_error(400, "The request body must be a JSON object")
        kind, version = body.get("type"), body.get("version")
        condition, transport = body.get("condition"), body.get("transport")
        if not isinstance(kind, str) or kind not in TYPE_SCOPES or not isinstance(version, str):
            return helix_error(400, "unknown or missing subscription type or version")
        if not isinstance(condition, dict) or not isinstance(transport, dict):
            return helix_error(400, "condition and transport must be objects")
        wanted = {str(k): str(v) for k, v in condition.items() if v not in (None, "")}
        subscription = Subscription(
            id=str(uuid.uuid4()),
            type=kind,
            version=version,
            condition=wanted,
            method=str(transport.get("method", "")),
            client_id=caller.client_id,
            user_id=caller.user_id,
            created_at=rfc3339(wall),
            cost=0 if TYPE_SCOPES[kind] else 1,
            status="enabled",
        )
        refused = self._transport(subscription, {str(k): v for k, v in transport.items()}, caller)
        refused = refused or self._authorization(subscription, caller) or self._limits(subscription, caller)
        if refused is None and subscription.method == "websocket" and self.sessions is not None:
            refused = self._attach(subscription)
        if refused is not None:
            return refused
        self.subscriptions.append(subscription)
        return Reply(202, {"data": [subscription.to_json()], **self._totals(caller)})

    def _transport(self, subscription: Subscription, transport: Mapping[str, object], caller: Caller) -> Reply | None:
        if subscription.method == "webhook":
            if caller.user_id is not None:
                return helix_error(400, "the webhook transport requires an app access token")
            callback, secret = transport.get("callback"), transport.get("secret")
            if not isinstance(callback, str) or not callback.startswith("https://"):
                return helix_error(400, "the callback must be an https URL")
            if not isinstance(secret, str) or not 10 <= len(secret) <= 100:
                return helix_error(400, "the secret must be 10 to 100 characters")
            subscription.callback, subscription.secret = callback, secret
            subscription.status = "webhook_callback_verification_pending"
            subscription.user_id = None
            return None
        if subscription.method == "websocket":
            if caller.user_id is None:
                return helix_error(400, "the websocket transport requires a user access token")
            session_id = transport.get("session_id")
            if not isinstance(session_id, str) or self.sessions is None or not self.sessions.has_session(session_id):
                return helix_error(400, "websocket session does not exist or has already disconnected")
            subscription.session_id = session_id
            return None
        return helix_error(400, "transport method must be webhook or websocket")

    def _authorization(self, subscription: Subscription, caller: Caller) -> Reply | None:
        needed = TYPE_SCOPES[subscription.type]
        if not needed:
            return None
        user_id = subscription.condition.get("broadcaster_user_id", "")
        if caller.user_id is not None:
            granted = caller.scopes if caller.user_id == user_id else frozenset()
        else:
            granted = self.granted(caller.client_id, user_id)
        return None if granted & needed else helix_error(403, "subscription missing proper authorization")

    def _limits(self, subscription: Subscription, caller: Caller) -> Reply | None:
        for other in self._visible(caller):
            same = (other.type, other.version, other.condition) == (
                subscription.type,
                subscription.version,
                subscription.condition,
            )
            if same and other.status in ACTIVE:
                return helix_error(409, "subscription already exists")
        totals = self._totals(caller)
        total_cost, max_cost = totals["total_cost"], totals["max_total_cost"]
        if isinstance(total_cost, int) and isinstance(max_cost, int) and total_cost + subscription.cost > max_cost:
            return helix_error(429, "the subscriptions' total cost would exceed max_total_cost")
        if subscription.method == "websocket":
            in_session = [s for s in self.subscriptions if s.session_id == subscription.session_id]
            if sum(1 for s in in_session if s.status in ACTIVE) >= WEBSOCKET_MAX_PER_SESSION:
                return helix_error(429, "the websocket session holds the most subscriptions it may")
        return None

    def _attach(self, subscription: Subscription) -> Reply | None:
        """Bind the subscription to its session; the WebSocket server enforces its connection limits."""
        assert self.sessions is not None
        owner = f"{subscription.client_id}:{subscription.user_id}"
        try:
            self.sessions.attach(subscription.session_id, subscription.to_json(), owner=owner)
        except UnknownSessionError:
            return helix_error(400, "websocket session does not exist or has already disconnected")
        except EventSubSimError as exc:
            # ASSUMPTION: 429, as for the other subscription limits.
            return helix_error(429, str(exc))
        return None

    def _prune(self, now: float) -> None:
        def listed(s: Subscription) -> bool:
            if s.disabled_at is None:
                return True
            keep = WEBSOCKET_LISTED_AFTER_DISABLED_S if s.method == "websocket" else WEBHOOK_LISTED_AFTER_DISABLED_S
            return now - s.disabled_at < keep

        self.subscriptions[:] = [s for s in self.subscriptions if listed(s)]
