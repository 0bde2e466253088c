"""Catch-up: the redemptions of our rewards that no notification brought become grants all the same.

EventSub does not replay what was sent while the service was down, a subscription revoked or a WebSocket
between sessions (docs/sources-sync.md §2.3); a redemption of a reward our client id created, though, waits
UNFULFILLED in Twitch's queue until we say its fate (§1.1, §2.2). A pass (``CatchUp.run_once``) lists those
rewards (``only_manageable_rewards``) and each one's UNFULFILLED redemptions, oldest first, and feeds each
redemption it does not know yet into ``handle_message`` as the EventSub event it would have been: the same
rules, links and creation as a delivery, under the same idempotency keys, built from the redemption's own id
(``producers.twitch.rules``). Whichever of the webhook, the WebSocket and the poll sees a redemption first
grants it; the others find its grants made. Each pass also writes the reward ids it listed to
``Keys.twitch_own_rewards``, which is how ``handle_message`` knows to watch a redemption's grants
(``RedemptionBook.watch``) without asking Helix.

A redemption is *known* once its grants are watched (they are until Twitch is told its fate, and the
redemption then leaves the UNFULFILLED list), or once a pass found no rule for it (marked, so a later pass
does not record it again; ``wetbot-rewards events reprocess`` takes it up after the rules change). What a
pass made is kept in the event inbox under the ref ``catchup:<redemption id>``, so the console shows where
the grants came from.

A 429 stops the pass; ``CatchUpPass.retry_at`` says when Helix's bucket is full again (§1.2). A reward
deleted between the listing and its redemptions is skipped. What a pass handled before it stopped stays
handled: the next pass starts over and finds it known.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import cast

from producers.inbox import EventOutcome, Outcome
from producers.settle import record_event
from producers.state import AppState
from producers.twitch.broadcaster_api import (
    BroadcasterHelix,
    ChannelReward,
    EndlessCursor,
    HelixRateLimited,
    RedemptionPage,
    RewardGone,
)
from producers.twitch.helix import HelixError
from producers.twitch.oauth import TwitchAuthError
from producers.twitch.webhook import NOTIFICATION, REDEMPTION_TYPE, handle_message
from worker.keys import SEEN_TTL_S

__all__ = ["CATCHUP_REF", "SEEN_CATCHUP", "CatchUp", "CatchUpPass", "redemption_event"]

logger = logging.getLogger(__name__)

#: Inbox ref (and message id given to ``handle_message``) of a redemption the poll handled.
CATCHUP_REF = "catchup:{id}"
#: ``Keys.seen`` source of redemptions a pass found no rule for.
SEEN_CATCHUP = "twitch-catchup"
#: Seconds to wait after a 429 whose answer did not say when the bucket is full again.
RATE_LIMIT_WAIT_S = 60.0
#: Headers kept with a catch-up's inbox entry (what the console shows of it).
_USER_AGENT = "wetbot-rewards catch-up (Helix Get Custom Reward Redemption)"


@dataclass(frozen=True)
class CatchUpPass:
    """What one pass did."""

    #: our rewards whose redemptions were listed.
    rewards: int = 0
    #: UNFULFILLED redemptions listed (each once, however many pages repeated it).
    redemptions: int = 0
    #: grants the pass created.
    granted: int = 0
    #: redemptions known already: watched, granted by another path first, or found to earn nothing before.
    known: int = 0
    #: redemptions no rule grants anything for (or that the rules cannot read), seen for the first time.
    ignored: int = 0
    #: rewards deleted on Twitch between the listing of rewards and of their redemptions.
    rewards_gone: int = 0
    #: epoch seconds: Helix's rate limit stopped the pass, come back then (0: it was not stopped by one).
    retry_at: float = 0.0
    #: why the pass stopped early, or left a reward half listed ("": it did not).
    error: str = ""

    @property
    def complete(self) -> bool:
        """Every redemption of every reward was looked at."""
        return not self.error and not self.retry_at


@dataclass
class _Tally:
    rewards: int = 0
    redemptions: int = 0
    granted: int = 0
    known: int = 0
    ignored: int = 0
    rewards_gone: int = 0
    errors: list[str] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)

    def result(self, retry_at: float = 0.0) -> CatchUpPass:
        return CatchUpPass(
            rewards=self.rewards,
            redemptions=self.redemptions,
            granted=self.granted,
            known=self.known,
            ignored=self.ignored,
            rewards_gone=self.rewards_gone,
            retry_at=retry_at,
            error="; ".join(self.errors),
        )


class CatchUp:
    """Lists the redemptions of our rewards through Helix and grants those no notification brought.

    Parameters:
      state: the parts ``handle_message`` works with (``producers.state.open_state``).
      helix: Helix as the connected broadcaster.
    """

    def __init__(self, state: AppState, helix: BroadcasterHelix) -> None:
        self._state = state
        self._helix = helix
        #: epoch seconds before which Helix's bucket is empty (a 429 said so): a pass asked for sooner waits.
        self._retry_at = 0.0

    async def run_once(self) -> CatchUpPass:
        """One pass over every reward our client id manages; what it did. Until the time a 429 gave, a pass
        asks Helix nothing and says when to come back (``CatchUpPass.retry_at``).

        Helix and the synchronous Redis calls run in threads, so the caller's event loop keeps serving.
        Raises only for Redis (or the broker): what was handled before stays handled.
        """
        if time.time() < self._retry_at:
            return CatchUpPass(retry_at=self._retry_at)  # a gap's pass asked for early: Helix would say 429 again
        tally = _Tally()
        try:
            broadcaster_id = await asyncio.to_thread(lambda: self._helix.broadcaster_id)
            rewards = await asyncio.to_thread(self._helix.list_rewards, broadcaster_id, only_manageable=True)
            await asyncio.to_thread(self._remember, rewards)
            for reward in rewards:
                await self._reward(broadcaster_id, reward, tally)
        except HelixRateLimited as exc:
            retry_at = exc.reset_at if exc.reset_at > time.time() else time.time() + RATE_LIMIT_WAIT_S
            self._retry_at = retry_at
            logger.warning("Twitch rate limit reached: catch-up stops until %.0f s from now", retry_at - time.time())
            return tally.result(retry_at)
        except (HelixError, TwitchAuthError) as exc:
            tally.errors.append(str(exc))
            logger.warning("Twitch catch-up stopped: %s", exc)
        done = tally.result()
        if done.granted:
            logger.info("Twitch catch-up: %d grant(s) made for missed redemptions", done.granted)
        return done

    def _remember(self, rewards: list[ChannelReward]) -> None:
        """Replace ``Keys.twitch_own_rewards`` with the ids just listed, in one step."""
        key = self._state.keys.twitch_own_rewards()
        pipe = self._state.redis.pipeline(transaction=True)
        pipe.delete(key)
        if rewards:
            pipe.sadd(key, *(reward.id for reward in rewards))
        pipe.execute()

    async def _reward(self, broadcaster_id: str, reward: ChannelReward, tally: _Tally) -> None:
        """Every UNFULFILLED redemption of ``reward``, page by page (a 429 propagates: the pass stops)."""
        pages = self._helix.redemption_pages(broadcaster_id, reward.id, status="UNFULFILLED")
        tally.rewards += 1
        try:
            while (page := await asyncio.to_thread(_next_page, pages)) is not None:
                fresh = [item for item in page.redemptions if _take(item, tally.listed)]
                tally.redemptions += len(fresh)
                await asyncio.gather(*(self._redemption(item, tally) for item in fresh))
        except RewardGone:
            tally.rewards_gone += 1
            logger.info("Twitch reward %s was deleted during a catch-up pass; skipped", reward.id)
        except EndlessCursor as exc:
            tally.errors.append(str(exc))
            logger.warning("Twitch catch-up: %s", exc)

    async def _redemption(self, item: Mapping[str, object], tally: _Tally) -> None:
        """One listed redemption: known already, or handled as its notification would have been."""
        state = self._state
        rid = str(item["id"])
        if await asyncio.to_thread(state.redemptions.get, rid) is not None or await state.aredis.exists(
            state.keys.seen(SEEN_CATCHUP, rid)
        ):
            tally.known += 1
            return
        ref = CATCHUP_REF.format(id=rid)
        payload = {"subscription": _subscription(item), "event": redemption_event(item)}
        outcome = await handle_message(state, ref, NOTIFICATION, payload, check_seen=False)
        made = await self._made_by(ref, outcome)
        if not outcome.granted and not outcome.parked:
            tally.ignored += 1
            await state.aredis.set(state.keys.seen(SEEN_CATCHUP, rid), "1", ex=SEEN_TTL_S)
        elif not made:
            tally.known += 1  # another path made them first; handle_message watched them all the same
            return
        tally.granted += made
        body = json.dumps(payload, separators=(",", ":")).encode()
        await record_event(state, "twitch", NOTIFICATION, ref, _headers(ref), body, outcome)

    async def _made_by(self, ref: str, outcome: EventOutcome) -> int:
        """How many of the outcome's grants were made under ``ref`` (by this pass, or by a pass cut short)."""
        if outcome.outcome not in (Outcome.GRANTED, Outcome.PARKED):
            return 0
        keys, aredis = self._state.keys, self._state.aredis
        refs = [
            await cast(Awaitable[bytes | None], aredis.hget(keys.grant(gid), "source_ref"))
            for gid in (*outcome.granted, *outcome.parked)
        ]
        return sum(1 for made_under in refs if made_under is not None and made_under.decode() == ref)


def redemption_event(item: Mapping[str, object]) -> dict[str, object]:
    """The ``channel.channel_points_custom_reward_redemption.add`` event of a redemption Helix lists.

    The same fields (docs/sources-sync.md §1.1; the sample payload in docs/twitch.md): Helix's
    ``broadcaster_id/login/name`` are the event's ``broadcaster_user_*``, its status is upper-case where the
    event's is lower-case, and the reward keeps ``id``, ``title``, ``cost`` and ``prompt`` as they were when
    it was redeemed. A field Helix left out stays out, so the rules find it missing as they would in a
    notification.
    """
    event: dict[str, object] = {}
    renamed = {"broadcaster_id": "broadcaster_user_id", "broadcaster_login": "broadcaster_user_login"}
    renamed["broadcaster_name"] = "broadcaster_user_name"
    for name in ("id", "broadcaster_id", "broadcaster_login", "broadcaster_name", "user_id", "user_login"):
        if name in item:
            event[renamed.get(name, name)] = item[name]
    for name in ("user_name", "user_input", "redeemed_at"):
        if name in item:
            event[name] = item[name]
    status = item.get("status")
    if isinstance(status, str):
        event["status"] = status.lower()
    reward = item.get("reward")
    if isinstance(reward, Mapping):
        event["reward"] = {name: reward[name] for name in ("id", "title", "cost", "prompt") if name in reward}
    elif "reward" in item:
        event["reward"] = reward
    return event


def _subscription(item: Mapping[str, object]) -> dict[str, object]:
    """The ``subscription`` object a notification of ``item`` would carry (its type is what is read)."""
    reward = item.get("reward")
    condition = {"broadcaster_user_id": item.get("broadcaster_id")}
    if isinstance(reward, Mapping):
        condition["reward_id"] = reward.get("id")
    return {
        "type": REDEMPTION_TYPE,
        "version": "1",
        "status": "enabled",
        "condition": condition,
        "transport": {"method": "catchup"},
    }


def _headers(ref: str) -> dict[str, str]:
    return {
        "user-agent": _USER_AGENT,
        "twitch-eventsub-message-id": ref,
        "twitch-eventsub-message-type": NOTIFICATION,
        "twitch-eventsub-subscription-type": REDEMPTION_TYPE,
        "twitch-eventsub-subscription-version": "1",
    }


def _take(item: Mapping[str, object], listed: set[str]) -> bool:
    """Whether ``item`` is a redemption not listed before in this pass (Helix's lists may repeat an item)."""
    rid = item.get("id")
    if not isinstance(rid, str) or not rid or rid in listed:
        return False
    listed.add(rid)
    return True


def _next_page(pages: Iterator[RedemptionPage]) -> RedemptionPage | None:
    """The next page, or None after the last (StopIteration cannot cross a thread's future)."""
    return next(pages, None)
