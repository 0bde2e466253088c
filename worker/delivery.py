"""What the ``deliver`` actor does with one grant: slot, send, classify, record, report.

Kept apart from Dramatiq so tests can drive it directly. Nothing here raises
for WetBot trouble: every outcome becomes a ledger transition, and "try again
later" becomes a fresh queue message with a delay (``Requeue``), never an
exception, because Dramatiq's retries would count waiting as failure and
report every attempt to Sentry (research/dramatiq.md §2, §5).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from redis import Redis

from config.settings import Settings
from worker.client import CallResult, ItemDelta, Outcome, WetbotClient
from worker.keys import Keys
from worker.ledger import FINAL_STATES, SENDABLE_STATES, Grant, GrantState, Ledger, item_amounts
from worker.limiter import SlidingWindowLimiter
from worker.observability import capture

logger = logging.getLogger("wetbot_rewards.delivery")

#: Longest wait for a rate slot spent sleeping in the worker thread, in seconds.
#: Longer waits hand the thread back (the grant is requeued with that delay),
#: so one guild's backlog cannot occupy every thread while other keys wait.
MAX_INLINE_WAIT_S = 5.0
#: Seconds before its slot frees that a requeued grant comes back. Dramatiq's
#: delay queue and an idle consumer each add up to ~1 s of polling lag; coming
#: back early and sleeping the rest inline starts the request on time.
EARLY_RETURN_S = 2.5
#: Seconds a lease outlives the HTTP timeout. A lease marks "a live worker is
#: sending this grant"; a duplicate message that finds it comes back later.
LEASE_MARGIN_S = 5.0
#: Upper bound of the retry backoff, in seconds.
MAX_BACKOFF_S = 15 * 60.0
#: Dramatiq refuses delays of 7 days or more; requeue delays stay below this.
MAX_REQUEUE_DELAY_S = 6 * 24 * 3600.0

#: Schedules ``deliver(grant_id)`` again after ``delay_s`` seconds.
Requeue = Callable[[str, float], None]


@dataclass(frozen=True)
class Deliverer:
    """Delivers grants for one API key.

    Parameters:
      settings: the service settings (timeouts, policy, attempts).
      redis: client for the service's Redis.
      keys: key layout.
      ledger: the grant ledger.
      limiter: the shared rate limiter.
      client: WetBot client holding the key.
      requeue: how to run a grant again later (a delayed queue message).
      sleep: how to wait for a slot (tests pass a fake).
    """

    settings: Settings
    redis: Redis
    keys: Keys
    ledger: Ledger
    limiter: SlidingWindowLimiter
    client: WetbotClient
    requeue: Requeue
    sleep: Callable[[float], None] = time.sleep

    @property
    def key_id(self) -> str:
        return self.client.key_id

    def deliver(self, grant_id: str) -> None:
        """Process one queue message for ``grant_id``; see DESIGN.md "The single actor"."""
        grant = self.ledger.get(grant_id)
        if grant is None:
            logger.warning("grant %s: no such grant, message dropped", grant_id)
            return
        if grant.state in FINAL_STATES or grant.state == GrantState.PARKED:
            logger.debug("grant %s: already %s, nothing to do", grant_id, grant.state)
            return
        token = uuid.uuid4().hex
        if not self._key_may_send(grant, token) or not self._take_slot(grant_id):
            return
        # The lease says "a live worker is sending this grant". It is taken after
        # the slot so that it only spans one HTTP call, which keeps recovery after
        # a killed worker short; a duplicate message that loses the race wastes
        # one slot, nothing more.
        lease_key = self.keys.lease(grant_id)
        lease_ms = int((self.settings.wetbot_timeout + LEASE_MARGIN_S) * 1000)
        if not self.redis.set(lease_key, token, nx=True, px=lease_ms):
            self._requeue(grant_id, max(self._pttl_ms(lease_key), 1000) / 1000)
            return
        try:
            self._send(grant_id)
        finally:
            self._release(lease_key, token)

    # --- the steps --------------------------------------------------------------------
    def _send(self, grant_id: str) -> None:
        """Send the grant once; the caller holds its lease and a rate slot."""
        grant = self.ledger.get(grant_id)
        if grant is None or grant.state in FINAL_STATES or grant.state == GrantState.PARKED:
            return
        if grant.state == GrantState.SENDING:
            # We hold the lease, so whoever set "sending" is gone: a worker died mid-request.
            if not self._resume_abandoned(grant):
                return
            grant = self.ledger.get(grant_id) or grant  # counts changed: later decisions use them
        elif not self.ledger.transition(
            grant_id, GrantState.SENDING, "sending to WetBot", expect=SENDABLE_STATES, add_attempt=True
        ):
            return
        result = self.client.add_items(
            grant.guild_id, grant.user_id, [ItemDelta(item.item_id, item.amount) for item in grant.items]
        )
        self._record(grant, result)

    def _resume_abandoned(self, grant: Grant) -> bool:
        """A grant left in ``sending`` by a dead worker: apply ``AMBIGUOUS_POLICY``. True = send it again now."""
        error = "the worker stopped while sending; the request may have been applied"
        if self.settings.ambiguous_policy == "hold":
            self._finish(grant, GrantState.UNKNOWN, f"{error}; held for an operator")
            return False
        if self._gave_up(grant, error):
            return False
        return self.ledger.transition(
            grant.id,
            GrantState.SENDING,
            f"{error}; sending again (AMBIGUOUS_POLICY=retry)",
            expect=[GrantState.SENDING],
            add_attempt=True,
            add_failure=True,
            last_error=error,
        )

    def _auth_scope(self, guild_id: str) -> str:
        """What a 401/403 pauses: this key for this guild.

        WetBot keys belong to one guild, so a refusal for one guild says nothing
        about grants for another; with one guild this is simply "the key".
        """
        return f"{self.key_id}:{guild_id}"

    def _key_may_send(self, grant: Grant, token: str) -> bool:
        """False (and the grant requeued) while the key is paused after a 401/403.

        Once the pause ends, one request probes the key; the rest wait for it.
        """
        scope = self._auth_scope(grant.guild_id)
        paused_ms = self._pttl_ms(self.keys.key_paused(scope))
        if paused_ms > 0:
            self._requeue(grant.id, paused_ms / 1000)
            return False
        if self.redis.exists(self.keys.key_unauthorised(scope)):
            probe_key = self.keys.key_probe(scope)
            probe_ms = int((self.settings.wetbot_timeout + LEASE_MARGIN_S) * 1000)
            if not self.redis.set(probe_key, token, nx=True, px=probe_ms):
                self._requeue(grant.id, max(self._pttl_ms(probe_key), 1000) / 1000)
                return False
        return True

    def _take_slot(self, grant_id: str) -> bool:
        """Wait for a rate slot: sleep through short waits, requeue for long ones. No retry is spent."""
        while True:
            decision = self.limiter.try_acquire(self.key_id)
            if decision.granted:
                return True
            if decision.wait_s > MAX_INLINE_WAIT_S:
                self._requeue(grant_id, decision.wait_s - EARLY_RETURN_S)
                return False
            self.sleep(decision.wait_s)

    def _record(self, grant: Grant, result: CallResult) -> None:
        match result.outcome:
            case Outcome.DELIVERED:
                self._delivered(grant, result)
            case Outcome.RATE_LIMITED:
                wait_s = result.retry_after_s if result.retry_after_s is not None else self.limiter.rate.window_s
                self.limiter.block(self.key_id, wait_s)
                self.ledger.transition(
                    grant.id,
                    GrantState.QUEUED,
                    f"WetBot answered 429; key blocked for {wait_s:.1f}s (not a failure)",
                    expect=[GrantState.SENDING],
                    last_error=_describe(result),
                )
                self._requeue(grant.id, wait_s)
            case Outcome.UNAUTHORISED:
                self._unauthorised(grant, result)
            case Outcome.REJECTED:
                self._finish(grant, GrantState.DEAD, f"WetBot refused the grant: {_describe(result)}")
            case Outcome.TRANSIENT:
                self._failed(grant, _describe(result))
            case Outcome.AMBIGUOUS:
                self._ambiguous(grant, _describe(result))

    def _delivered(self, grant: Grant, result: CallResult) -> None:
        now = time.time()
        amounts: dict[str, float] | None = None
        if result.profile is not None:
            self.ledger.save_profile(grant.guild_id, grant.user_id, result.profile, now)
            amounts = item_amounts(result.profile, (item.item_id for item in grant.items))
        self.ledger.transition(
            grant.id,
            GrantState.DELIVERED,
            f"WetBot answered {result.status}",
            expect=[GrantState.SENDING],
            last_error="",
            result=amounts,
        )
        self._key_works(grant.guild_id)
        logger.info("grant %s delivered to %s/%s", grant.id, grant.guild_id, grant.user_id)

    def _key_works(self, guild_id: str) -> None:
        """A call succeeded: a paused or refused key is usable again."""
        scope = self._auth_scope(guild_id)
        if self.redis.delete(
            self.keys.key_unauthorised(scope), self.keys.key_probe(scope), self.keys.key_paused(scope)
        ):
            logger.warning("API key %s works again for guild %s; paused grants resume", self.key_id, guild_id)

    def _unauthorised(self, grant: Grant, result: CallResult) -> None:
        pause_s = self.settings.wetbot_auth_pause_s
        reason = _describe(result)
        scope = self._auth_scope(grant.guild_id)
        self.redis.set(self.keys.key_paused(scope), reason, px=int(pause_s * 1000))
        first = self.redis.set(self.keys.key_unauthorised(scope), reason, nx=True)
        self.redis.delete(self.keys.key_probe(scope))
        self.ledger.transition(
            grant.id,
            GrantState.QUEUED,
            f"API key refused ({reason}); key paused {pause_s:.0f}s, grant kept (not a failure)",
            expect=[GrantState.SENDING],
            last_error=reason,
        )
        self._requeue(grant.id, pause_s)
        if first:
            logger.error(
                "API key %s refused by WetBot for guild %s (%s): its grants wait until the key works",
                self.key_id,
                grant.guild_id,
                reason,
            )
            capture(
                f"WetBot refused API key {self.key_id} for guild {grant.guild_id}: {reason}; deliveries are paused",
                level="warning",
                tags={"kind": "key_unauthorised", "key_id": self.key_id, "guild_id": grant.guild_id, "state": "paused"},
            )

    def _failed(self, grant: Grant, error: str) -> None:
        """A failure after which nothing was applied: retry with backoff, or ``dead`` when out of attempts."""
        if self._gave_up(grant, error):
            return
        failures = grant.failures + 1
        delay_s = self._backoff_s(failures)
        if self.ledger.transition(
            grant.id,
            GrantState.RETRYING,
            f"failure {failures} of {self.settings.wetbot_max_attempts}: {error}; next try in {delay_s:.1f}s",
            expect=[GrantState.SENDING],
            add_failure=True,
            last_error=error,
        ):
            self._requeue(grant.id, delay_s)

    def _gave_up(self, grant: Grant, error: str) -> bool:
        """True (and the grant ``dead``) when this failure is its last allowed one."""
        failures = grant.failures + 1
        if failures < self.settings.wetbot_max_attempts:
            return False
        self._finish(grant, GrantState.DEAD, f"gave up after {failures} failures: {error}", add_failure=True)
        return True

    def _ambiguous(self, grant: Grant, error: str) -> None:
        """The request may have been applied: hold for an operator, or retry, as ``AMBIGUOUS_POLICY`` says."""
        if self.settings.ambiguous_policy == "hold":
            self._finish(grant, GrantState.UNKNOWN, f"may have been applied ({error}); held for an operator")
        else:
            self._failed(grant, f"may have been applied, sending again (AMBIGUOUS_POLICY=retry): {error}")

    def _finish(self, grant: Grant, state: GrantState, reason: str, *, add_failure: bool = False) -> None:
        """Move to a final state and report it to Sentry once (only the caller that moved it reports)."""
        if not self.ledger.transition(
            grant.id, state, reason, expect=[GrantState.SENDING], add_failure=add_failure, last_error=reason
        ):
            return
        logger.error("grant %s is %s: %s", grant.id, state.value, reason)
        capture(
            f"grant {state.value}: {reason}",
            level="error",
            tags={"kind": "grant_final", "state": state.value, "grant_id": grant.id, "source": grant.source},
            context={
                "id": grant.id,
                "state": state.value,
                "guild_id": grant.guild_id,
                "user_id": grant.user_id,
                "items": [[item.item_id, item.amount] for item in grant.items],
                "source": grant.source,
                "rule": grant.rule,
                "attempts": grant.attempts + 1,
            },
        )

    def _backoff_s(self, failures: int) -> float:
        base = self.settings.wetbot_retry_backoff_s * 2 ** (failures - 1)
        jitter = random.uniform(1.0, 1.25)  # noqa: S311 - jitter, not security
        return float(min(base, MAX_BACKOFF_S) * jitter)

    def _requeue(self, grant_id: str, delay_s: float) -> None:
        self.requeue(grant_id, min(max(delay_s, 0.001), MAX_REQUEUE_DELAY_S))

    def _release(self, lease_key: str, token: str) -> None:
        current = cast(bytes | None, self.redis.get(lease_key))
        if current is not None and current.decode() == token:
            self.redis.delete(lease_key)

    def _pttl_ms(self, key: str) -> int:
        """Milliseconds ``key`` still lives (negative when it is gone or has no TTL)."""
        return int(cast(int, self.redis.pttl(key)))


def _describe(result: CallResult) -> str:
    status = f"HTTP {result.status}" if result.status is not None else "no response"
    return f"{status}: {result.message}" if result.message else status
