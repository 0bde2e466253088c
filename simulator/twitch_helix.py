"""The Helix half of the Twitch simulator: authentication, rate limits, users, custom rewards and redemptions.

Pure state and logic, called by :class:`simulator.twitch.TwitchSimulator` with its lock held. EventSub
subscriptions are in ``simulator.twitch_eventsub``. What is documented and what is chosen is listed in the
docstring of ``simulator.twitch``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from simulator._http import Reply, Request
from simulator.twitch_oauth import TwitchUser

#: Custom rewards one channel may have, disabled ones included (docs/sources-sync.md §1.1).
MAX_REWARDS = 50
MAX_TITLE = 45
#: ASSUMPTION: the prompt bound (undocumented in docs/sources-sync.md).
MAX_PROMPT = 200
#: Ids per call (users: 100; redemptions and rewards: 50).
MAX_USER_IDS = 100
MAX_REDEMPTION_IDS = 50
READ_REDEMPTIONS = frozenset({"channel:read:redemptions", "channel:manage:redemptions"})
MANAGE_REDEMPTIONS = frozenset({"channel:manage:redemptions"})

RedemptionStatus = Literal["UNFULFILLED", "FULFILLED", "CANCELED"]
STATUSES: frozenset[str] = frozenset({"UNFULFILLED", "FULFILLED", "CANCELED"})


def helix_error(status: int, message: str) -> Reply:
    names = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    names |= {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
    return Reply(status, {"error": names.get(status, "Error"), "status": status, "message": message})


def rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Caller:
    """Who a Helix request comes from (from its token)."""

    client_id: str
    user_id: str | None
    scopes: frozenset[str]


@dataclass
class Bucket:
    """A token bucket of points, refilled continuously to ``limit`` over ``window_s``."""

    points: float
    updated: float


@dataclass
class RateLimiter:
    """Per-token buckets: one per (client id, user id) for user tokens, one per client for app tokens
    (docs/sources-sync.md §1.2)."""

    limit: int = 800
    window_s: float = 60.0
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def _bucket(self, key: str, now: float) -> Bucket:
        bucket = self.buckets.setdefault(key, Bucket(float(self.limit), now))
        rate = self.limit / self.window_s
        bucket.points = min(float(self.limit), bucket.points + (now - bucket.updated) * rate)
        bucket.updated = now
        return bucket

    def take(self, key: str, now: float) -> bool:
        bucket = self._bucket(key, now)
        if bucket.points < 1:
            return False
        bucket.points -= 1
        return True

    def headers(self, key: str, now: float, wall: float) -> dict[str, str]:
        bucket = self._bucket(key, now)
        full_in = (self.limit - bucket.points) * self.window_s / self.limit
        return {
            "Ratelimit-Limit": str(self.limit),
            "Ratelimit-Remaining": str(math.floor(bucket.points)),
            "Ratelimit-Reset": str(math.ceil(wall + full_in)),
        }


def bucket_key(request: Request, caller: Caller | None) -> str:
    if caller is None:
        return "anonymous:" + request.headers.get("client-id", "")
    return f"{caller.client_id}:{caller.user_id or 'app'}"


@dataclass
class Reward:
    id: str
    broadcaster: TwitchUser
    client_id: str
    title: str
    cost: int
    prompt: str = ""
    is_enabled: bool = True
    background_color: str = "#9147FF"
    is_user_input_required: bool = False
    max_per_stream: int | None = None
    max_per_user_per_stream: int | None = None
    global_cooldown_seconds: int | None = None
    is_paused: bool = False
    should_redemptions_skip_request_queue: bool = False
    deleted: bool = False

    def to_json(self) -> dict[str, object]:
        def setting(name: str, value: int | None) -> dict[str, object]:
            return {"is_enabled": value is not None, name: value or 0}

        return {
            "broadcaster_id": self.broadcaster.id,
            "broadcaster_login": self.broadcaster.login,
            "broadcaster_name": self.broadcaster.display_name,
            "id": self.id,
            "title": self.title,
            "prompt": self.prompt,
            "cost": self.cost,
            "image": None,
            "default_image": {"url_1x": "", "url_2x": "", "url_4x": ""},
            "background_color": self.background_color,
            "is_enabled": self.is_enabled,
            "is_user_input_required": self.is_user_input_required,
            "max_per_stream_setting": setting("max_per_stream", self.max_per_stream),
            "max_per_user_per_stream_setting": setting("max_per_user_per_stream", self.max_per_user_per_stream),
            "global_cooldown_setting": setting("global_cooldown_seconds", self.global_cooldown_seconds),
            "is_paused": self.is_paused,
            "is_in_stock": True,
            "should_redemptions_skip_request_queue": self.should_redemptions_skip_request_queue,
            "redemptions_redeemed_current_stream": None,
            "cooldown_expires_at": None,
        }


@dataclass
class Redemption:
    seq: int
    id: str
    reward: Reward
    #: The reward as it was at redemption time (id, title, prompt, cost).
    reward_snapshot: dict[str, object]
    user: TwitchUser
    user_input: str
    status: RedemptionStatus
    redeemed_at: str

    def to_json(self) -> dict[str, object]:
        broadcaster = self.reward.broadcaster
        return {
            "broadcaster_id": broadcaster.id,
            "broadcaster_login": broadcaster.login,
            "broadcaster_name": broadcaster.display_name,
            "id": self.id,
            "user_id": self.user.id,
            "user_login": self.user.login,
            "user_name": self.user.display_name,
            "user_input": self.user_input,
            "status": self.status,
            "redeemed_at": self.redeemed_at,
            "reward": dict(self.reward_snapshot),
        }

    def event(self) -> dict[str, object]:
        """The redemption as EventSub's ``channel.channel_points_custom_reward_redemption.add`` event."""
        broadcaster = self.reward.broadcaster
        return {
            "id": self.id,
            "broadcaster_user_id": broadcaster.id,
            "broadcaster_user_login": broadcaster.login,
            "broadcaster_user_name": broadcaster.display_name,
            "user_id": self.user.id,
            "user_login": self.user.login,
            "user_name": self.user.display_name,
            "user_input": self.user_input,
            "status": self.status.lower(),
            "reward": dict(self.reward_snapshot),
            "redeemed_at": self.redeemed_at,
        }


@dataclass(frozen=True)
class StatusUpdate:
    """One redemption status change made through Helix (``CANCELED`` is a refund)."""

    redemption_id: str
    reward_id: str
    status: RedemptionStatus
    client_id: str


class BadRequest(Exception):
    """A Helix 400 (its text is the answer's message)."""


def _text(body: Mapping[str, object], name: str, bound: int, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f'Missing required parameter "{name}"')
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > bound:
        raise BadRequest(f'"{name}" must be a string of at most {bound} characters')
    return value


def _flag(body: Mapping[str, object], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f'"{name}" must be a boolean')
    return value


def _count(body: Mapping[str, object], name: str, *, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f'"{name}" must be an integer >= {minimum}')
    return value


def _setting(reward: Reward, body: Mapping[str, object], flag: str, name: str, attr: str) -> None:
    enabled, value = _flag(body, flag), _count(body, name)
    current: int | None = getattr(reward, attr)
    if enabled is False:
        setattr(reward, attr, None)
    elif enabled is True or value is not None:
        if value is None and current is None:
            raise BadRequest(f'"{name}" is required when "{flag}" is true')
        setattr(reward, attr, value if value is not None else current)


def apply_reward_fields(reward: Reward, body: Mapping[str, object]) -> None:
    """Copy the writable fields present in a Create/Update Custom Reward body onto ``reward``."""
    title = _text(body, "title", MAX_TITLE)
    if title is not None:
        if not title.strip():
            raise BadRequest('"title" must not be empty')
        reward.title = title
    cost = _count(body, "cost")
    if cost is not None:
        reward.cost = cost
    prompt = _text(body, "prompt", MAX_PROMPT)
    if prompt is not None:
        reward.prompt = prompt
    color = _text(body, "background_color", 7)
    if color is not None:
        reward.background_color = color
    for name in ("is_enabled", "is_user_input_required", "is_paused", "should_redemptions_skip_request_queue"):
        value = _flag(body, name)
        if value is not None:
            setattr(reward, name, value)
    _setting(reward, body, "is_max_per_stream_enabled", "max_per_stream", "max_per_stream")
    _setting(reward, body, "is_max_per_user_per_stream_enabled", "max_per_user_per_stream", "max_per_user_per_stream")
    _setting(reward, body, "is_global_cooldown_enabled", "global_cooldown_seconds", "global_cooldown_seconds")


@dataclass
class HelixState:
    """Rewards, redemptions and the status changes made to them. The caller holds the simulator's lock."""

    users: Mapping[str, TwitchUser]
    rewards: dict[str, Reward] = field(default_factory=dict)
    redemptions: list[Redemption] = field(default_factory=list)
    updates: list[StatusUpdate] = field(default_factory=list)

    # ---------------------------------------------------------------- control

    def create_reward(self, broadcaster: TwitchUser, client_id: str, body: Mapping[str, object]) -> Reward:
        """Create a reward as ``client_id`` would; raises BadRequest as Helix answers 400."""
        title = _text(body, "title", MAX_TITLE, required=True)
        if _count(body, "cost") is None:
            raise BadRequest('Missing required parameter "cost"')
        live = [r for r in self.rewards.values() if r.broadcaster.id == broadcaster.id and not r.deleted]
        if len(live) >= MAX_REWARDS:
            raise BadRequest("CREATE_CUSTOM_REWARD_TOO_MANY_REWARDS")
        reward = Reward(str(uuid.uuid4()), broadcaster, client_id, title or "", 1)
        apply_reward_fields(reward, body)
        self._check_unique(reward)
        self.rewards[reward.id] = reward
        return reward

    def _check_unique(self, reward: Reward) -> None:
        for other in self.rewards.values():
            same_channel = other.broadcaster.id == reward.broadcaster.id and other.id != reward.id
            if same_channel and not other.deleted and other.title.casefold() == reward.title.casefold():
                raise BadRequest("CREATE_CUSTOM_REWARD_DUPLICATE_REWARD")

    def live_reward(self, reward_id: str) -> Reward:
        reward = self.rewards.get(reward_id)
        if reward is None or reward.deleted:
            raise ValueError(f"no reward {reward_id!r}")
        return reward

    def rename_reward(self, reward_id: str, title: str) -> None:
        reward = self.live_reward(reward_id)
        old, reward.title = reward.title, title
        try:
            self._check_unique(reward)
        except BadRequest:
            reward.title = old
            raise ValueError(f"another reward is already titled {title!r}") from None

    def redeem(self, reward_id: str, user: TwitchUser, user_input: str, wall: datetime) -> Redemption:
        reward = self.live_reward(reward_id)
        if not reward.is_enabled or reward.is_paused:
            raise ValueError(f"reward {reward.title!r} is disabled or paused")
        redemption = Redemption(
            seq=len(self.redemptions) + 1,
            id=str(uuid.uuid4()),
            reward=reward,
            reward_snapshot={"id": reward.id, "title": reward.title, "prompt": reward.prompt, "cost": reward.cost},
            user=user,
            user_input=user_input,
            status="FULFILLED" if reward.should_redemptions_skip_request_queue else "UNFULFILLED",
            redeemed_at=rfc3339(wall),
        )
        self.redemptions.append(redemption)
        return redemption

    # ---------------------------------------------------------------- endpoints

    def handle(self, request: Request, caller: Caller, broadcaster_check: Callable[[str], Reply | None]) -> Reply:
        """Route ``/helix/users`` and ``/helix/channel_points/...``; ``broadcaster_check`` vets a broadcaster id."""
        path = request.path.removeprefix("/helix").rstrip("/")
        try:
            if path == "/users" and request.method == "GET":
                return self._users(request, caller)
            if path == "/channel_points/custom_rewards":
                return self._rewards(request, caller, broadcaster_check)
            if path == "/channel_points/custom_rewards/redemptions":
                return self._redemptions(request, caller, broadcaster_check)
        except BadRequest as exc:
            return helix_error(400, str(exc))
        return helix_error(404, "Not Found")

    def _users(self, request: Request, caller: Caller) -> Reply:
        ids, logins = request.query.get("id", []), [login.lower() for login in request.query.get("login", [])]
        if len(ids) + len(logins) > MAX_USER_IDS:
            raise BadRequest(f"The sum of the id and login parameters may not exceed {MAX_USER_IDS}")
        if not ids and not logins:
            if caller.user_id is None:
                raise BadRequest('Missing required parameter "id" or "login" with an app access token')
            ids = [caller.user_id]
        found = [u for u in self.users.values() if u.id in ids or u.login in logins]
        return Reply(200, {"data": [_user_json(u) for u in found]})

    def _rewards(self, request: Request, caller: Caller, check: Callable[[str], Reply | None]) -> Reply:
        scopes = READ_REDEMPTIONS if request.method == "GET" else MANAGE_REDEMPTIONS
        broadcaster_id = request.arg("broadcaster_id") or ""
        refused = _scope_check(caller, scopes) or check(broadcaster_id)
        if refused is not None:
            return refused
        broadcaster = self.users[broadcaster_id]
        if request.method == "GET":
            ids = request.query.get("id", [])
            if len(ids) > MAX_REDEMPTION_IDS:
                raise BadRequest(f"At most {MAX_REDEMPTION_IDS} id parameters")
            only_ours = (request.arg("only_manageable_rewards") or "").lower() == "true"
            rewards = [
                r
                for r in self.rewards.values()
                if r.broadcaster.id == broadcaster_id
                and not r.deleted
                and (not ids or r.id in ids)
                and (not only_ours or r.client_id == caller.client_id)
            ]
            return Reply(200, {"data": [r.to_json() for r in rewards]})
        if request.method == "POST":
            return Reply(
                200, {"data": [self.create_reward(broadcaster, caller.client_id, _json_object(request)).to_json()]}
            )
        if request.method not in ("PATCH", "DELETE"):
            return helix_error(404, "Not Found")
        reward = self.rewards.get(request.arg("id") or "")
        if reward is None or reward.deleted or reward.broadcaster.id != broadcaster_id:
            return helix_error(404, "Custom Reward Not Found")
        if reward.client_id != caller.client_id:
            return helix_error(403, "The client-id in the header must match the client-id that created the reward")
        if request.method == "DELETE":
            reward.deleted = True
            return Reply(204)
        candidate = dataclasses.replace(reward)  # all or nothing: a bad field leaves the reward as it was
        apply_reward_fields(candidate, _json_object(request))
        self._check_unique(candidate)
        for name in (f.name for f in dataclasses.fields(Reward)):
            setattr(reward, name, getattr(candidate, name))
        return Reply(200, {"data": [reward.to_json()]})

    def _redemptions(self, request: Request, caller: Caller, check: Callable[[str], Reply | None]) -> Reply:
        scopes = READ_REDEMPTIONS if request.method == "GET" else MANAGE_REDEMPTIONS
        broadcaster_id = request.arg("broadcaster_id") or ""
        refused = _scope_check(caller, scopes) or check(broadcaster_id)
        if refused is not None:
            return refused
        ids = request.query.get("id", [])
        if len(ids) > MAX_REDEMPTION_IDS:
            raise BadRequest(f"At most {MAX_REDEMPTION_IDS} id parameters")
        reward_id = request.arg("reward_id")
        if reward_id is not None:
            reward = self.rewards.get(reward_id)
            if reward is None or reward.deleted or reward.broadcaster.id != broadcaster_id:
                return helix_error(404, "Custom Reward Not Found")
            if reward.client_id != caller.client_id:
                return helix_error(403, "The client-id in the header must match the client-id that created the reward")
        if request.method == "PATCH":
            return self._update(request, caller, ids, reward_id)
        if request.method != "GET":
            return helix_error(404, "Not Found")
        status = request.arg("status")
        if status is None and not ids:
            raise BadRequest('Missing required parameter "status" when no "id" is given')
        if status is not None and status not in STATUSES:
            raise BadRequest('"status" must be UNFULFILLED, FULFILLED or CANCELED')
        sort = request.arg("sort") or "OLDEST"
        if sort not in ("OLDEST", "NEWEST"):
            raise BadRequest('"sort" must be OLDEST or NEWEST')
        first = _first(request.arg("first"))
        matching = [
            r
            for r in self.redemptions
            if r.reward.broadcaster.id == broadcaster_id
            and not r.reward.deleted
            and r.reward.client_id == caller.client_id
            and (reward_id is None or r.reward.id == reward_id)
            and (not ids or r.id in ids)
            and (status is None or r.status == status)
        ]
        if sort == "NEWEST":
            matching.reverse()
        after = _decode_cursor(request.arg("after"))
        if after is not None:
            matching = [r for r in matching if (r.seq > after if sort == "OLDEST" else r.seq < after)]
        page = matching[:first]
        pagination: dict[str, object] = {}
        if len(matching) > first:
            pagination["cursor"] = _encode_cursor(page[-1].seq)
        return Reply(200, {"data": [r.to_json() for r in page], "pagination": pagination})

    def _update(self, request: Request, caller: Caller, ids: list[str], reward_id: str | None) -> Reply:
        if not ids or reward_id is None:
            raise BadRequest('Missing required parameters "id" and "reward_id"')
        body = _json_object(request)
        status = body.get("status")
        if status not in ("FULFILLED", "CANCELED"):
            raise BadRequest('"status" must be FULFILLED or CANCELED')
        new_status: RedemptionStatus = "FULFILLED" if status == "FULFILLED" else "CANCELED"
        changed = [
            r for r in self.redemptions if r.id in ids and r.reward.id == reward_id and r.status == "UNFULFILLED"
        ]
        if not changed:
            return helix_error(404, "No redemptions found")
        for redemption in changed:
            redemption.status = new_status
            self.updates.append(StatusUpdate(redemption.id, reward_id, new_status, caller.client_id))
        return Reply(200, {"data": [r.to_json() for r in changed]})


def _user_json(user: TwitchUser) -> dict[str, object]:
    return {
        "id": user.id,
        "login": user.login,
        "display_name": user.display_name,
        "type": "",
        "broadcaster_type": "affiliate",
        "description": "",
        "profile_image_url": "",
        "offline_image_url": "",
        "view_count": 0,
        "created_at": "2016-12-14T20:32:28Z",
    }


def _scope_check(caller: Caller, scopes: frozenset[str]) -> Reply | None:
    if caller.user_id is None:
        return helix_error(401, "This endpoint requires a user access token")
    if not caller.scopes & scopes:
        return helix_error(401, f"Missing scope: {' or '.join(sorted(scopes))}")
    return None


def _json_object(request: Request) -> dict[str, object]:
    try:
        body = request.json_body()
    except ValueError:
        raise BadRequest("The request body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return {str(k): v for k, v in body.items()}


def _first(text: str | None) -> int:
    if text is None:
        return 20
    if not text.isdigit() or not 1 <= int(text) <= MAX_REDEMPTION_IDS:
        raise BadRequest(f'"first" must be an integer in 1..{MAX_REDEMPTION_IDS}')
    return int(text)


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": seq}).encode()).decode()


def _decode_cursor(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(text.encode()))
    except ValueError:
        raise BadRequest('Invalid "after" cursor') from None
    seq = value.get("s") if isinstance(value, dict) else None
    if not isinstance(seq, int):
        raise BadRequest('Invalid "after" cursor')
    return seq
