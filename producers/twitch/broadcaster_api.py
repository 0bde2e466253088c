"""Helix calls made with the broadcaster's user token (rewards, redemptions, users).

The token comes from the ``TokenVault``; a 401 refreshes it once through the vault (one process at a time,
whoever refreshes first) and the call is sent again. Every answer's ``Ratelimit-Reset`` is kept, and a 429
becomes ``HelixRateLimited`` carrying it, so callers wait until Twitch's bucket is full again instead of
hammering it (docs/sources-sync.md §1.2). Errors are ``HelixError`` (``producers.twitch.helix``); their text
never holds a token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from redis import Redis

from config.settings import Settings
from producers.twitch.helix import DEFAULT_TIMEOUT_S, MAX_PAGES, HelixError, Subscription, SubscriptionExists
from producers.twitch.tokens import StoredTokens, TokenVault

__all__ = [
    "BroadcasterHelix",
    "ChannelReward",
    "EndlessCursor",
    "HelixRateLimited",
    "RedemptionPage",
    "RedemptionUpdate",
    "RewardGone",
    "TwitchUser",
]

#: Redemption ids one Helix call takes, and redemptions one page lists at most (docs/sources-sync.md §1.1).
IDS_PER_CALL = 50
#: Logins (or ids) one Get Users call takes.
USERS_PER_CALL = 100
#: Pages of one reward's redemptions listed in one go at most (50 each): past this, the cursor is taken to be
#: one that never ends (Helix's lists are "dynamic", docs/sources-sync.md §1.2) and the listing stops.
MAX_REDEMPTION_PAGES = 200


class HelixRateLimited(HelixError):
    """Helix answered 429; ``reset_at`` (epoch seconds, 0 when not said) is when its bucket is full again."""

    def __init__(self, message: str, reset_at: float) -> None:
        super().__init__(message, 429)
        self.reset_at = reset_at


class RewardGone(HelixError):
    """Helix answered 404 for a reward: it was deleted on Twitch (or never was the broadcaster's)."""


class EndlessCursor(HelixError):
    """A redemption listing handed back a cursor it had given before, or more pages than any queue holds."""


@dataclass(frozen=True)
class RedemptionPage:
    """One page of Get Custom Reward Redemption: the redemption objects as Helix gives them, and the cursor
    of the next page ("" on the last)."""

    redemptions: tuple[Mapping[str, object], ...]
    cursor: str


@dataclass(frozen=True)
class RedemptionUpdate:
    """What one Update Redemption Status call changed: the ids Twitch answered with their new status."""

    changed: tuple[str, ...]
    #: Helix answered 404 "No redemptions found": none of the ids was UNFULFILLED for that reward.
    none_found: bool = False


@dataclass(frozen=True)
class ChannelReward:
    """One custom reward as Helix lists it: its id, what viewers see, and the limits the rules file sets."""

    id: str
    title: str
    cost: int
    #: Our client id created it (listed with ``only_manageable_rewards=true``).
    ours: bool
    #: The Create/Update Custom Reward body's fields with their values on Twitch (``OwnedReward.helix_body``'s names).
    fields: Mapping[str, str | int | bool]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, ours: bool) -> ChannelReward:
        fields: dict[str, str | int | bool] = {}
        for name in ("title", "prompt", "background_color"):
            if isinstance(data.get(name), str):
                fields[name] = data[name]
        for name in ("is_enabled", "is_user_input_required", "should_redemptions_skip_request_queue"):
            if isinstance(data.get(name), bool):
                fields[name] = data[name]
        if isinstance(data.get("cost"), int):
            fields["cost"] = data["cost"]
        for setting, flag, value in _REWARD_SETTINGS:
            block = data.get(setting)
            if isinstance(block, Mapping) and isinstance(block.get("is_enabled"), bool):
                fields[flag] = block["is_enabled"]
                if block["is_enabled"] and isinstance(block.get(value), int):
                    fields[value] = block[value]
        return cls(str(data.get("id", "")), str(data.get("title", "")), int(data.get("cost") or 0), ours, fields)


#: How Helix lists a reward's limits: (setting object, its switch in the body, its value in the body).
_REWARD_SETTINGS = (
    ("max_per_stream_setting", "is_max_per_stream_enabled", "max_per_stream"),
    ("max_per_user_per_stream_setting", "is_max_per_user_per_stream_enabled", "max_per_user_per_stream"),
    ("global_cooldown_setting", "is_global_cooldown_enabled", "global_cooldown_seconds"),
)


@dataclass(frozen=True)
class TwitchUser:
    """A Twitch account: its id, login (lowercase) and display name."""

    id: str
    login: str
    display_name: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TwitchUser:
        return cls(str(data.get("id", "")), str(data.get("login", "")), str(data.get("display_name", "")))


class BroadcasterHelix:
    """Helix as the connected broadcaster.

    Parameters:
      api_url: Helix base (``TWITCH_API_URL``).
      client_id: the app's client id (``TWITCH_CLIENT_ID``).
      vault: where the broadcaster's tokens are (and are refreshed).
      timeout_s: seconds per call.
    """

    def __init__(
        self,
        *,
        api_url: str,
        client_id: str,
        vault: TokenVault,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        session: requests.Session | None = None,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._client_id = client_id
        self._vault = vault
        self._timeout_s = timeout_s
        self._session = session or requests.Session()
        self._tokens: StoredTokens | None = None
        #: Epoch seconds when the last answer said the bucket is full again (0: not said yet).
        self.ratelimit_reset_at = 0.0
        #: Points left in the bucket as the last answer said (-1: not said yet).
        self.ratelimit_remaining = -1

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    @property
    def broadcaster_id(self) -> str:
        """The connected broadcaster's user id (from the stored tokens)."""
        return self._token().user_id

    # -- redemptions -----------------------------------------------------------------------------
    def redemption_page(
        self, broadcaster_id: str, reward_id: str, *, status: str, after: str = "", sort: str = "OLDEST"
    ) -> RedemptionPage:
        """One page (up to 50) of ``reward_id``'s redemptions in ``status``, oldest first by default.

        Raises:
          RewardGone: Helix answered 404 (the reward was deleted on Twitch).
          HelixRateLimited: 429.
          HelixError: any other refusal (403: another app's reward), or no answer.
        """
        params = [
            ("broadcaster_id", broadcaster_id),
            ("reward_id", reward_id),
            ("status", status),
            ("sort", sort),
            ("first", str(IDS_PER_CALL)),
        ]
        if after:
            params.append(("after", after))
        response = self._call("GET", "/channel_points/custom_rewards/redemptions", params, None)
        if response.status_code == 404:
            raise RewardGone(f"reward {reward_id}: Twitch answered 404 ({_message(response)})", 404)
        self._expect(response, 200, "get redemptions")
        return RedemptionPage(tuple(self._data(response)), _cursor(response))

    def redemption_pages(
        self, broadcaster_id: str, reward_id: str, *, status: str, max_pages: int = MAX_REDEMPTION_PAGES
    ) -> Iterator[RedemptionPage]:
        """Every page of ``reward_id``'s redemptions in ``status``, oldest first, following the ``after`` cursor.

        Pages come one at a time, so a caller keeps what it handled before a failure. A cursor handed back
        twice, or more than ``max_pages`` pages, raises ``EndlessCursor`` after the pages given so far.

        Raises:
          RewardGone, HelixRateLimited, HelixError: as ``redemption_page``.
          EndlessCursor: the listing does not end.
        """
        cursors: set[str] = set()
        after = ""
        for _ in range(max_pages):
            page = self.redemption_page(broadcaster_id, reward_id, status=status, after=after)
            yield page
            if not page.cursor or not page.redemptions:
                return
            if page.cursor in cursors:
                raise EndlessCursor(f"reward {reward_id}: Twitch handed back a cursor twice; stopped listing")
            cursors.add(page.cursor)
            after = page.cursor
        raise EndlessCursor(f"reward {reward_id}: more than {max_pages} pages of redemptions; stopped listing")

    def update_redemptions(
        self, broadcaster_id: str, reward_id: str, redemption_ids: Sequence[str], status: str
    ) -> RedemptionUpdate:
        """Set up to 50 redemptions of one reward to ``status`` (FULFILLED or CANCELED: CANCELED refunds).

        Raises:
          HelixRateLimited: 429.
          HelixError: any other refusal (403: the reward is another app's), or no answer.
        """
        if not 0 < len(redemption_ids) <= IDS_PER_CALL:
            raise ValueError(f"1 to {IDS_PER_CALL} redemption ids per call, not {len(redemption_ids)}")
        params: list[tuple[str, str]] = [("broadcaster_id", broadcaster_id), ("reward_id", reward_id)]
        params += [("id", rid) for rid in redemption_ids]
        response = self._call("PATCH", "/channel_points/custom_rewards/redemptions", params, {"status": status})
        if response.status_code == 404:
            return RedemptionUpdate((), none_found=True)
        self._expect(response, 200, "update redemption status")
        return RedemptionUpdate(tuple(str(item.get("id")) for item in self._data(response)))

    def redemption_statuses(self, broadcaster_id: str, reward_id: str, redemption_ids: Iterable[str]) -> dict[str, str]:
        """Redemption id -> its status on Twitch, for the ids Twitch still lists (a deleted reward's: none)."""
        found: dict[str, str] = {}
        ids = list(redemption_ids)
        for start in range(0, len(ids), IDS_PER_CALL):
            params: list[tuple[str, str]] = [("broadcaster_id", broadcaster_id), ("reward_id", reward_id)]
            params += [("id", rid) for rid in ids[start : start + IDS_PER_CALL]]
            response = self._call("GET", "/channel_points/custom_rewards/redemptions", params, None)
            if response.status_code == 404:
                continue
            self._expect(response, 200, "get redemptions")
            for item in self._data(response):
                found[str(item.get("id"))] = str(item.get("status"))
        return found

    # -- EventSub over WebSocket ----------------------------------------------------------------
    def create_websocket_subscription(
        self, subscription_type: str, version: str, condition: Mapping[str, str], session_id: str
    ) -> Subscription:
        """Subscribe WebSocket session ``session_id`` to one type (a user token is required, docs/sources-sync.md §3).

        Raises:
          SubscriptionExists: 409, Twitch holds one with that type and condition (maybe of a dead session).
          HelixRateLimited: 429 (also: the subscriptions' total cost or the session's 300 reached).
          HelixError: any other refusal (400: the session is gone; 403: a scope is missing).
        """
        body = {
            "type": subscription_type,
            "version": version,
            "condition": dict(condition),
            "transport": {"method": "websocket", "session_id": session_id},
        }
        response = self._call("POST", "/eventsub/subscriptions", (), body)
        if response.status_code == 409:
            raise SubscriptionExists(f"create {subscription_type}: {_message(response)}", 409)
        self._expect(response, 202, f"create {subscription_type} subscription")
        data = self._data(response)
        if not data:
            raise HelixError("Twitch's answer lists no subscription", response.status_code)
        return Subscription.from_json(data[0])

    def list_websocket_subscriptions(self) -> list[Subscription]:
        """The WebSocket subscriptions this app made with the broadcaster's token (any status), every page."""
        found: list[Subscription] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            params = [("after", cursor)] if cursor else []
            response = self._call("GET", "/eventsub/subscriptions", params, None)
            self._expect(response, 200, "list subscriptions")
            found.extend(Subscription.from_json(item) for item in self._data(response))
            pagination = response.json().get("pagination") or {}
            cursor = str(pagination.get("cursor") or "") if isinstance(pagination, dict) else ""
            if not cursor:
                return found
        raise HelixError(f"more than {MAX_PAGES} pages of subscriptions; stopped listing")

    def delete_subscription(self, subscription_id: str) -> None:
        """Delete one subscription (one already gone counts as deleted)."""
        response = self._call("DELETE", "/eventsub/subscriptions", [("id", subscription_id)], None)
        if response.status_code != 404:
            self._expect(response, 204, "delete subscription")

    # -- custom rewards and users (producers.twitch.reward_catalogue, links by login) -------------
    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis) -> BroadcasterHelix:
        """Helix as the broadcaster, built as every process builds it (``TokenVault.from_settings``).

        Raises:
          ConfigError: ``TWITCH_CLIENT_ID`` is unset.
        """
        vault = TokenVault.from_settings(settings, redis)
        return cls(api_url=settings.twitch_api_url, client_id=vault.oauth.client_id, vault=vault)

    def list_rewards(self, broadcaster_id: str, *, only_manageable: bool = False) -> list[ChannelReward]:
        """The channel's custom rewards; ``only_manageable``: just those our client id created (the ones it
        may update, and whose redemptions it may fulfil or refund). One call: a channel has at most 50.

        Raises:
          HelixRateLimited: 429.
          HelixError: any other refusal (403: the channel is not a partner or affiliate), or no answer.
        """
        params = [("broadcaster_id", broadcaster_id)]
        if only_manageable:
            params.append(("only_manageable_rewards", "true"))
        response = self._call("GET", "/channel_points/custom_rewards", params, None)
        self._expect(response, 200, "get custom rewards")
        return [ChannelReward.from_json(item, ours=only_manageable) for item in self._data(response)]

    def create_reward(self, broadcaster_id: str, body: Mapping[str, str | int | bool]) -> ChannelReward:
        """Create a custom reward (ours from then on). Raises HelixError: 400 names a duplicate title or too
        many rewards in Twitch's message."""
        response = self._call("POST", "/channel_points/custom_rewards", [("broadcaster_id", broadcaster_id)], body)
        self._expect(response, 200, "create custom reward")
        return self._one_reward(response)

    def update_reward(
        self, broadcaster_id: str, reward_id: str, changes: Mapping[str, str | int | bool]
    ) -> ChannelReward:
        """Change some fields of one of our rewards (Helix keeps the others). Raises HelixError: 403 when
        another app made it, 404 when it is gone."""
        params = [("broadcaster_id", broadcaster_id), ("id", reward_id)]
        response = self._call("PATCH", "/channel_points/custom_rewards", params, changes)
        self._expect(response, 200, "update custom reward")
        return self._one_reward(response)

    def users(self, *, logins: Sequence[str] = (), ids: Sequence[str] = ()) -> list[TwitchUser]:
        """The Twitch users with these logins or ids (those that do not exist are simply absent)."""
        wanted: list[tuple[str, str]] = [("login", login) for login in logins] + [("id", uid) for uid in ids]
        found: list[TwitchUser] = []
        for start in range(0, len(wanted), USERS_PER_CALL):
            response = self._call("GET", "/users", wanted[start : start + USERS_PER_CALL], None)
            self._expect(response, 200, "get users")
            found.extend(TwitchUser.from_json(item) for item in self._data(response))
        return found

    def _one_reward(self, response: requests.Response) -> ChannelReward:
        data = self._data(response)
        if not data:
            raise HelixError("Twitch's answer lists no reward", response.status_code)
        return ChannelReward.from_json(data[0], ours=True)

    # -- plumbing ---------------------------------------------------------------------------------
    def _token(self) -> StoredTokens:
        if self._tokens is None:
            self._tokens = self._vault.load()
        return self._tokens

    def _call(
        self, method: str, path: str, params: Sequence[tuple[str, str]], body: Mapping[str, Any] | None
    ) -> requests.Response:
        response = self._send(method, path, params, body, self._token())
        if response.status_code == 401:  # expired or revoked: a fresh pair (the vault's lock), then once more
            self._tokens = self._vault.refresh(self._token())
            response = self._send(method, path, params, body, self._tokens)
        if response.status_code == 429:
            raise HelixRateLimited(f"{method} {path}: Twitch answered 429 (rate limit)", self.ratelimit_reset_at)
        return response

    def _send(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        body: Mapping[str, Any] | None,
        tokens: StoredTokens,
    ) -> requests.Response:
        headers = {"Client-Id": self._client_id, "Authorization": f"Bearer {tokens.access_token}"}
        try:
            response = self._session.request(
                method,
                self._api_url + path,
                params=list(params),
                json=None if body is None else dict(body),
                headers=headers,
                timeout=self._timeout_s,
            )
        except requests.RequestException as exc:
            raise HelixError(f"{method} {path}: cannot reach Twitch ({type(exc).__name__})") from None
        self._note_bucket(response)
        return response

    def _note_bucket(self, response: requests.Response) -> None:
        reset, remaining = response.headers.get("Ratelimit-Reset"), response.headers.get("Ratelimit-Remaining")
        if reset is not None and reset.isascii() and reset.isdigit():
            self.ratelimit_reset_at = float(reset)
        if remaining is not None and remaining.isascii() and remaining.isdigit():
            self.ratelimit_remaining = int(remaining)

    def _expect(self, response: requests.Response, status: int, what: str) -> None:
        if response.status_code != status:
            raise HelixError(
                f"{what}: Twitch answered {response.status_code}: {_message(response)}", response.status_code
            )

    def _data(self, response: requests.Response) -> list[dict[str, Any]]:
        try:
            body = response.json()
        except ValueError:
            raise HelixError(f"Twitch answered {response.status_code} with something that is not JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise HelixError(f"Twitch answered {response.status_code} without a data list")
        return [item for item in data if isinstance(item, dict)]


def _cursor(response: requests.Response) -> str:
    """``pagination.cursor`` of a list answer ("" when there is none: the last page)."""
    body = response.json()
    pagination = body.get("pagination") if isinstance(body, dict) else None
    cursor = pagination.get("cursor") if isinstance(pagination, dict) else None
    return cursor if isinstance(cursor, str) else ""


def _message(response: requests.Response) -> str:
    """Helix's ``message`` (it never echoes the token), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or "(no message)"
    return str(body.get("message") if isinstance(body, dict) else body)[:200]


def seconds_until(reset_at: float, *, floor_s: float = 1.0) -> float:
    """Seconds from now until ``reset_at`` (epoch seconds), at least ``floor_s``."""
    return max(floor_s, reset_at - time.time())
