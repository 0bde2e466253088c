"""What the ``deliver`` actor does with one grant: claim, slot, send, record, verify, report.

Kept apart from Dramatiq so tests can drive it directly. Nothing here raises
for WetBot trouble: every outcome becomes one atomic ledger step
(``Ledger.transition`` with ``StepEffects``) that also says when the grant is
looked at next (``worker.schedule``), so "try again later" is a due time the
ledger owns, never a Dramatiq retry or delayed message (docs/dramatiq.md
§2, §8).

A run, in order: claim the message (stale copies stop here) and the user's
lease; then a rate slot (waiting is not a failure); then the request; then
the outcome is recorded **first**, in one step, retried in place while Redis
is briefly away (the step is guarded by the run's token, so a resent script
changes nothing twice). Outcomes after which the request may have been
applied follow ``AMBIGUOUS_POLICY``: ``verify`` reads the profile back
(``worker.verify``), ``hold`` leaves the grant ``unknown`` for an operator,
``retry`` sends again and counts a possible duplicate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from redis import Redis, RedisError
from redis.commands.core import Script

from config.settings import Settings
from worker import key_health
from worker import redis_values as values
from worker.client import CallOutcome, CallResult, ItemDelta, WetbotClient
from worker.coalesce import Merged, merge, pending_grants, same_request
from worker.effects import HoldChange, JsonObject, LeaseRelease, LeaseSet, Park, ProfileWrite, SlotSettle, StepEffects
from worker.grant import FINAL_STATES, SENDABLE_STATES, Grant, GrantItem, GrantState
from worker.guild_clients import GuildClients
from worker.keys import PROFILE_TTL_S, Keys
from worker.ledger import Ledger
from worker.limiter import SlidingWindowLimiter
from worker.observability import capture
from worker.profile import Inventory, ProfileProblem, parse_inventory
from worker.replication import NotReplicated
from worker.schedule import Schedule
from worker.scripts import load_script
from worker.timings import DEFAULT_TIMINGS, Timings
from worker.verify import SPARE_FRACTION, VERIFY_WINDOW_S, Amounts, Verdict, judge

logger = logging.getLogger("wetbot_rewards.delivery")

_T = TypeVar("_T")

#: Upper bound of the retry backoff, in seconds.
MAX_BACKOFF_S = 15 * 60.0
#: Runs that failed unexpectedly (a bug, not WetBot trouble) before the grant is ``dead``.
MAX_CRASHES = 20

#: Why a read-back cannot judge a request, when nothing more precise is known.
NO_BASELINE = "no baseline was read before the request"
#: Seconds before the same profile-shape problem is reported to Sentry again.
PROBLEM_REPORT_TTL_S = 24 * 3600

#: A step that changes nothing beyond its grants' state.
_NO_EFFECTS = StepEffects()

ABANDONED = "the worker stopped while sending; the request may have been applied"


@dataclass(frozen=True)
class _Baseline:
    """The amounts of a request's items in the member's profile as read right before it, and when (Redis' clock)."""

    amounts: Amounts
    at_s: float


@dataclass(frozen=True)
class _Run:
    """One claimed run of a grant: its token, the user lease it holds, and the request whose outcome it records."""

    grant: Grant
    token: str
    lease_key: str
    #: the run token of the request being recorded: this run's own once it sent, else the abandoned one's.
    attempt: str
    #: the client holding the key of the grant's guild (set once the run knows there is one).
    client: WetbotClient | None = None
    #: every grant the run's request carries, ``grant`` first (more than one when coalesced).
    members: tuple[Grant, ...] = ()
    #: why no baseline was read for the run's request ("" when one was): a read-back cannot judge it then.
    baseline_missing: str = ""

    @property
    def batch(self) -> tuple[Grant, ...]:
        return self.members or (self.grant,)

    @property
    def ids(self) -> list[str]:
        return [member.id for member in self.batch]

    @property
    def api(self) -> WetbotClient:
        if self.client is None:
            raise RuntimeError("the run has no client: its guild has no key")
        return self.client

    @property
    def lease_value(self) -> str:
        return f"{self.grant.id}:{self.token}"

    def lease_release(self) -> LeaseRelease:
        return LeaseRelease(self.lease_key, self.lease_value)


@dataclass(frozen=True)
class Deliverer:
    """Delivers grants, each with its guild's API key.

    Parameters:
      settings: the service settings (timeouts, policy, attempts).
      redis: client for the service's Redis.
      keys: key layout.
      ledger: the grant ledger.
      limiter: the shared rate limiter (one window per key).
      clients: a WetBot client per configured key, by guild.
      schedule: the ledger's schedule (claims and hand-backs).
      sleep: how to wait (tests pass a fake).
      timings: how long it waits, holds and retries (tests pass shorter ones).
    """

    settings: Settings
    redis: Redis
    keys: Keys
    ledger: Ledger
    limiter: SlidingWindowLimiter
    clients: GuildClients
    schedule: Schedule
    sleep: Callable[[float], None] = time.sleep
    timings: Timings = DEFAULT_TIMINGS
    _extend_lease: Script = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_extend_lease", load_script(self.redis, "extend_lease"))

    def deliver(self, grant_id: str, token: str = "") -> None:
        """Process one queue message for ``grant_id`` carrying dispatch ``token``; see README "Exactly once".

        Redis errors propagate (the grant stays on the schedule and moves again
        when Redis answers); other unexpected exceptions are counted on the
        grant first (``MAX_CRASHES``).
        """
        run_token = uuid.uuid4().hex
        claim = self.schedule.claim(
            grant_id,
            token,
            run_token,
            lease_px=int(self.timings.claim_lease_s * 1000),
            busy_ms=int(self.timings.busy_retry_s * 1000),
        )
        if not claim.claimed:
            logger.debug("grant %s: message %s (%s), nothing to do", grant_id, token or "-", claim.status)
            return
        grant = self.ledger.get(grant_id)
        if grant is None:
            return
        run = _Run(grant, run_token, self.keys.lease(grant.guild_id, grant.user_id), grant.attempt_token)
        try:
            self._run(run)
        except RedisError:
            raise
        except Exception as exc:
            self._crashed(run, exc)
            raise

    # --- the steps ----------------------------------------------------------------------
    def _run(self, run: _Run) -> None:
        grant = run.grant
        if grant.state == GrantState.SENDING:
            # We hold the user's lease, so whoever set "sending" is gone: a worker died mid-request.
            taken_over = self._abandoned(run)
            if taken_over is None:
                return
            grant = taken_over
            run = replace(run, grant=grant)
        client = self.clients.for_guild(grant.guild_id)
        if client is None:
            self._park_without_key(run)
            return
        run = replace(run, client=client)
        if not self._key_may_send(run):
            return
        if grant.verify_pending and self._cannot_verify(run):
            return
        slot = self._take_slot(run)
        if slot is None:
            return
        if grant.verify_pending:
            self._verify(run, slot)
        else:
            self._send(run, slot, duplicate=grant.maybe_applied)

    def _abandoned(self, run: _Run) -> Grant | None:
        """A grant left ``sending``: apply ``AMBIGUOUS_POLICY`` to its whole request (every grant a merged
        request carried moves together). Returns the grant to go on with (a resend that may duplicate carries
        ``maybe_applied``), or None when this run is done."""
        grant = run.grant
        run = replace(run, members=tuple(same_request(self.redis, self.keys, grant)))
        policy = self.settings.ambiguous_policy
        if grant.verify_pending or policy == "verify":
            # A read-back that was cut short changed nothing: read again, whatever the policy.
            reason = (
                "the worker stopped while reading the profile back; reading again"
                if grant.verify_pending
                else f"{ABANDONED}; reading the profile back to verify"
            )
            moved = self._persist(
                lambda: self.ledger.transition_many(
                    run.ids,
                    GrantState.RETRYING,
                    reason,
                    expect=[GrantState.SENDING],
                    add_failure=True,
                    last_error=reason,
                    effects=StepEffects(
                        fields={"verify": "1"}, due_in_s=self.timings.claim_lease_s + 1, hold=HoldChange.SET
                    ),
                )
            )
        elif policy == "hold":
            # Not guarded by the abandoned request's token: if its answer still comes back, it is recorded.
            self._finish(run, GrantState.UNKNOWN, f"{ABANDONED}; held for an operator", guarded=False)
            return None
        else:
            if self._gave_up(run, ABANDONED, maybe_applied=True):
                return None
            moved = self._persist(
                lambda: self.ledger.transition_many(
                    run.ids,
                    GrantState.RETRYING,
                    f"{ABANDONED}; sending again (AMBIGUOUS_POLICY=retry)",
                    expect=[GrantState.SENDING],
                    add_failure=True,
                    last_error=ABANDONED,
                    effects=StepEffects(fields={"maybe_applied": "1"}, due_in_s=self.timings.claim_lease_s + 1),
                )
            )
        return self.ledger.get(grant.id) if grant.id in moved else None

    def _park_without_key(self, run: _Run) -> None:
        """No configured key serves the grant's guild: park it, visibly and without looping, until one does.

        A worker that has the guild's key (this one after a restart with the key
        back, or another host's) releases it: ``Ledger.release_key_parked`` runs
        at start and on every adoption pass (``worker.runtime``).
        """
        grant = run.grant
        reason = f"{self.clients.keyring.missing_key_problem(grant.guild_id)}; parked until a worker has that key"
        park = Park(self.keys.parked_for_key(grant.guild_id), self.keys.key_parked_guilds(), grant.guild_id)
        if not self._persist(
            lambda: self.ledger.transition(
                grant.id,
                GrantState.PARKED,
                reason,
                expect=SENDABLE_STATES,
                last_error=reason,
                effects=StepEffects(park=park, lease_release=run.lease_release()),
            )
        ):
            self.schedule.reschedule(grant.id, run.lease_key, run.lease_value, self.timings.busy_retry_s)
            return
        logger.error("grant %s: %s", grant.id, reason)
        capture(
            f"no WetBot API key for guild {grant.guild_id}: its grants are parked",
            level="warning",
            tags={"kind": "key_missing", "guild_id": grant.guild_id, "state": "parked"},
        )

    def _key_may_send(self, run: _Run) -> bool:
        """False (and the grant handed back) while the key is paused after a 401/403.

        Once the pause ends, one request probes the key; the rest wait for it.
        """
        health = key_health.read_key_health(self.redis, self.keys, run.api.key_id, run.grant.guild_id)
        if health.paused:
            self._hand_back(run, health.pause_left_s)
            return False
        if health.refused:
            hold_s = self.settings.wetbot_timeout_s + self.timings.lease_margin_s
            probing_s = key_health.claim_probe(
                self.redis, self.keys, run.api.key_id, run.grant.guild_id, run.token, hold_s
            )
            if probing_s is not None:
                self._hand_back(run, max(probing_s, 1.0))
                return False
        return True

    def _take_slot(self, run: _Run) -> str | None:
        """A rate slot's member, or None when the grant was handed back for its turn. No retry is spent.

        Only a wait of at most ``Timings.max_inline_wait_s`` is slept; any longer one hands the grant back, due at its
        turn in the key's line: the slot after those of the grants waiting ahead of it.
        """
        budget_s = self.timings.max_inline_wait_s
        waiter = self._line_waiter(run.grant)
        while True:
            decision = self.limiter.try_acquire(
                run.api.key_id, waiter=waiter, grant_key=self.keys.grant(run.grant.id), hold_s=self._slot_hold_s()
            )
            if decision.granted:
                return decision.member
            if decision.wait_s > budget_s:
                self._hand_back(run, decision.wait_s, due_at_us=decision.due_at_us)
                return None
            self.sleep(decision.wait_s)
            budget_s -= decision.wait_s

    def _slot_hold_s(self) -> float:
        """How long after its slot a run's request may still reach WetBot: its claim's lease, then its own."""
        return self.timings.claim_lease_s + self.settings.wetbot_timeout_s + self.timings.lease_margin_s

    def _line_waiter(self, grant: Grant) -> str:
        """Who takes a place in the key's line for ``grant``: its member, when one request carries them all.

        With coalescing, a member's pending grants go out in one request, so they
        share one place: k cheers of one viewer wait for one slot, not k (whose
        unused turns would push every other member back). A grant that must go
        alone waits as itself.
        """
        if not self.settings.wetbot_coalesce or grant.verify_pending or grant.maybe_applied or grant.solo:
            return grant.id
        return f"member:{grant.guild_id}:{grant.user_id}"

    def _merged(self, lead: Grant) -> Merged:
        """What the request for ``lead`` carries: every pending grant of the user that fits (``worker.coalesce``),
        or ``lead`` alone when coalescing is off or ``lead`` must go alone."""
        alone = Merged((lead,), lead.items)
        if not self.settings.wetbot_coalesce or lead.verify_pending or lead.maybe_applied or lead.solo:
            return alone
        candidates = pending_grants(self.redis, self.keys, lead)
        if not candidates:
            return alone
        return merge(lead, candidates, max_items=self.settings.wetbot_max_items_per_request)

    def _send(self, run: _Run, slot: str, *, duplicate: bool) -> None:
        """Send the grant (with the user's other pending grants, merged) once; the run holds lease and slot."""
        grant = run.grant
        merged = self._merged(grant)
        # Read before the baseline: a profile recorded meanwhile (another run's delivery) makes a read-back
        # of this request undecided (``_evidence``), never judged against a baseline older than it.
        snapshot = self.ledger.get_profile(grant.guild_id, grant.user_id)
        read = self._read_baseline(run, slot, merged)
        if read is None:
            return
        slot, found = read
        missing = found if isinstance(found, str) else ""
        baseline = None if isinstance(found, str) else found
        send_lease_s = self.settings.wetbot_timeout_s + self.timings.lease_margin_s
        reason = "sending to WetBot" + (" again; this may duplicate an applied request" if duplicate else "")
        if len(merged.members) > 1:
            reason += f" (one request for {len(merged.members)} grants of this member: {_items(merged.items)})"
        reason += f"; baseline read: {_amounts(baseline.amounts)}" if baseline is not None else f"; {missing}"
        try:
            moved = self.ledger.transition_many(
                merged.ids,
                GrantState.SENDING,
                reason,
                expect=SENDABLE_STATES,
                add_attempt=True,
                effects=StepEffects(
                    begin=run.token,
                    # The request's grants go out together or not at all (one cancelled meanwhile: pick again).
                    all_or_nothing=True,
                    # A companion must be as clean as when it was picked; the lead's own flags were judged above.
                    unless_flagged=("verify", "maybe_applied", "solo") if len(merged.members) > 1 else (),
                    fields={
                        "baseline": "" if baseline is None else json.dumps(baseline.amounts),
                        "baseline_at": "" if baseline is None else repr(baseline.at_s),
                        "baseline_missing": missing,
                        "baseline_seq": str(snapshot.seq if snapshot else 0),
                        "sent_items": json.dumps([[item.item_id, item.amount] for item in merged.items]),
                        "request_ids": json.dumps(merged.ids),
                    },
                    del_fields=("maybe_applied",),
                    due_in_s=send_lease_s + 1,
                    lease_set=LeaseSet(run.lease_key, run.lease_value, int(send_lease_s * 1000)),
                    possible_duplicate=duplicate,
                ),
                confirm=True,
            )
        except NotReplicated as exc:
            self.limiter.settle(run.api.key_id, slot)  # nothing goes out: the slot holds one window, no longer
            self._not_confirmed(replace(run, attempt=run.token, members=merged.members), str(exc), duplicate=duplicate)
            return
        if grant.id not in moved:
            # The grant, or a companion, moved meanwhile (an operator's cancel): nothing went out; look again.
            self.limiter.give_back(run.api.key_id, slot)  # nothing was sent with it: the slot is free again
            delay_s = 0.0 if len(merged.members) > 1 else self.timings.busy_retry_s
            self.schedule.reschedule(grant.id, run.lease_key, run.lease_value, delay_s)
            return
        run = replace(run, members=merged.members, attempt=run.token, baseline_missing=missing)
        result = run.api.add_items(
            grant.guild_id, grant.user_id, [ItemDelta(item.item_id, item.amount) for item in merged.items]
        )
        self._record(run, slot, result)

    def _read_baseline(self, run: _Run, slot: str, merged: Merged) -> tuple[str, _Baseline | str] | None:
        """Read the member's profile for the request about to go out, when a read-back may need it (``verify``,
        or an operator's "check by read-back" under ``hold``) and the key has a spare slot (``worker.verify``).

        Returns the slot the request then uses and its baseline (or why none was read), or None when the run
        ended without sending (WetBot answered the read with a 429, or refused the key).

        The read spends the run's slot; the request takes the spare one. A maybe-applied outcome of a
        request sent without a baseline cannot be judged by a read-back: it is held ``unknown``.
        """
        if self.settings.ambiguous_policy == "retry":  # nothing is ever judged by a read-back
            return slot, f"{NO_BASELINE} (AMBIGUOUS_POLICY=retry)"
        api = run.api
        spare = self.limiter.try_spare(
            api.key_id,
            keep_free=math.ceil(self.limiter.rate.limit * SPARE_FRACTION),
            demand_key=self.keys.guild_state(run.grant.guild_id, GrantState.QUEUED.value),
            own_demand=sum(1 for member in merged.members if member.state == GrantState.QUEUED),
            # The request goes out after the read: its slot may wait the read's lease on top of the usual hold.
            hold_s=self._slot_hold_s() + self.settings.wetbot_timeout_s + self.timings.lease_margin_s,
        )
        if not spare.granted:
            return slot, f"{NO_BASELINE} (the key had no spare rate slot)"
        read_lease_ms = int((self.settings.wetbot_timeout_s + self.timings.lease_margin_s) * 1000)
        if not self._extend_lease(keys=[run.lease_key], args=[run.lease_value, read_lease_ms]):
            self.limiter.give_back(api.key_id, spare.member)
            return slot, f"{NO_BASELINE} (the run lost its lease)"
        result = api.get_profile(run.grant.guild_id, run.grant.user_id)
        self.limiter.settle(api.key_id, slot, may_still_arrive=result.may_still_arrive)
        self._count_outcome(run, result)
        send_lease_ms = int((self.settings.wetbot_timeout_s + self.timings.lease_margin_s) * 1000)
        if not self._extend_lease(keys=[run.lease_key], args=[run.lease_value, send_lease_ms]):
            # The read outlived the lease: another run may have claimed the member and sent meanwhile. This
            # run owns nothing any more and sends nothing (the grant's schedule entry moves it again).
            self.limiter.give_back(api.key_id, spare.member)
            logger.warning("grant %s: the baseline read outlived the run's lease; not sent by this run", run.grant.id)
            return None
        if result.outcome == CallOutcome.RATE_LIMITED:
            wait_s = result.retry_after_s if result.retry_after_s is not None else self.limiter.rate.window_s
            self.limiter.give_back(api.key_id, spare.member)
            self.limiter.block(api.key_id, wait_s)
            self._hand_back(run, wait_s)
            return None
        if result.outcome == CallOutcome.UNAUTHORISED:
            # The request would be refused too: pause the key as a refused request does, send nothing.
            self.limiter.give_back(api.key_id, spare.member)
            reason, pause_s = _describe(result), self.settings.wetbot_auth_pause_s
            self._step(
                run,
                run.grant.state,
                f"API key refused reading the profile ({reason}); key paused {pause_s:.0f}s, nothing sent",
                expect=tuple(SENDABLE_STATES),
                last_error=reason,
                guarded=False,
                effects=StepEffects(due_in_s=pause_s),
            )
            self._pause_key(run, reason)
            return None
        if result.outcome == CallOutcome.AMBIGUOUS and result.status is not None and 200 <= result.status < 300:
            inventory: Inventory | ProfileProblem = ProfileProblem(result.message)
        elif result.outcome != CallOutcome.DELIVERED:
            # A read changes nothing: the request goes without a baseline.
            return spare.member, f"{NO_BASELINE} (reading it failed: {_describe(result)})"
        else:
            inventory = parse_inventory(result.profile)
        if isinstance(inventory, ProfileProblem):
            self._profile_problem(run.grant, inventory, "reading the baseline")
            return spare.member, f"{NO_BASELINE} (the profile was not in WetBot's documented shape: {inventory.what})"
        return spare.member, _Baseline(inventory.of(merged.item_ids), self.schedule.now_ms() / 1000)

    def _not_confirmed(self, run: _Run, error: str, *, duplicate: bool) -> None:
        """No replica confirmed the step into sending: step back without sending (not a failure).

        A failover now could bring back a primary without that step, and the grant would be sent again
        after WetBot applied it (``worker.replication``). Nothing was sent, so the step back keeps what
        the grant was; its slot is spent unused.
        """
        grant = run.grant
        back = grant.state if grant.state in (GrantState.QUEUED, GrantState.RETRYING) else GrantState.RETRYING
        logger.warning("grant %s: not sent, Redis replicas did not confirm (%s)", grant.id, error)
        self._step(
            run,
            back,
            f"not sent: {error}; trying again in {self.timings.unconfirmed_retry_s:.0f}s (not a failure)",
            effects=StepEffects(
                due_in_s=self.timings.unconfirmed_retry_s, fields={"maybe_applied": "1"} if duplicate else {}
            ),
            confirm=False,  # a confirmation would stall every send while a replica is away
        )

    def _record(self, run: _Run, slot: str, result: CallResult) -> None:
        """Record a POST's outcome, first and in one step."""
        settle = self.limiter.settle_ref(run.api.key_id, slot, may_still_arrive=result.may_still_arrive)
        self._record_outcome(run, result, settle)
        self._count_outcome(run, result)

    def _record_outcome(self, run: _Run, result: CallResult, settle: SlotSettle) -> None:
        match result.outcome:
            case CallOutcome.DELIVERED:
                self._delivered(run, result, settle, f"WetBot answered {result.status}")
            case CallOutcome.RATE_LIMITED:
                self._rate_limited(run, result, settle)
            case CallOutcome.UNAUTHORISED:
                self._unauthorised(run, result, settle)
            case CallOutcome.REJECTED if len(run.batch) > 1:
                self._split(run, result, settle)
            case CallOutcome.REJECTED:
                reason = f"WetBot refused the grant: {_describe(result)}"
                self._finish(run, GrantState.DEAD, reason, slot=settle)
            case CallOutcome.TRANSIENT:
                self._failed(run, _describe(result), settle)
            case CallOutcome.AMBIGUOUS:
                self._ambiguous(run, _describe(result), settle)

    def _split(self, run: _Run, result: CallResult, settle: SlotSettle) -> None:
        """A merged request refused for its content: each grant goes out alone next, so one bad grant cannot
        hold the others back (the refusal is not counted as a failure of any of them)."""
        self._step(
            run,
            GrantState.QUEUED,
            f"WetBot refused the merged request for {len(run.batch)} grants ({_describe(result)});"
            " each goes out alone now",
            slot=settle,
            last_error=f"merged request refused: {_describe(result)}",
            effects=StepEffects(fields={"solo": "1"}, due_in_s=0.0),
        )

    def _step(
        self,
        run: _Run,
        to: GrantState,
        reason: str,
        *,
        slot: SlotSettle | None = None,
        expect: tuple[GrantState, ...] = (GrantState.SENDING,),
        confirm: bool = True,
        guarded: bool = True,
        add_failure: bool = False,
        last_error: str | None = None,
        per_grant: Mapping[str, Mapping[str, str]] | None = None,
        effects: StepEffects = _NO_EFFECTS,
    ) -> list[str]:
        """One guarded outcome step of this run's request (every grant it carried), retried in place while
        Redis is away or too few replicas confirm it (``worker.replication``: a lost outcome would turn a
        known answer into a maybe-applied one; a repeat is guarded by the run's token).

        It also ends the run: the user's lease is released in the same step. Returns the ids whose change
        is in place (none when the run's own grant could not move).

        ``guarded`` steps happen only while the grant's last request is the run's ``attempt`` (a second run
        of the step is then a no-op); an unguarded one (the request's outcome is recorded already) relies on
        the run's claim and lease. ``slot`` is the run's rate slot, re-stamped in the same step.
        """
        final = ("verify", "maybe_applied") if to in FINAL_STATES else ()
        step = replace(
            effects,
            attempt=run.attempt if guarded else "",
            del_fields=(*effects.del_fields, *final),
            slot=slot if slot is not None else effects.slot,
            lease_release=run.lease_release(),
        )
        # A step too few replicas confirmed is in place on the primary; its repeat (retried until confirmed)
        # may then find nothing left to move when the step is not guarded by a token: the first try's ids
        # are the ones it moved (for the Sentry report of a final state, say).
        moved_first: list[str] = []

        def attempt() -> list[str]:
            try:
                return self.ledger.transition_many(
                    run.ids,
                    to,
                    reason,
                    expect=expect,
                    add_failure=add_failure,
                    last_error=last_error,
                    per_grant=per_grant,
                    effects=step,
                    confirm=confirm,
                )
            except NotReplicated as exc:
                if not moved_first and isinstance(exc.reply, list):
                    moved_first.extend(str(grant_id) for grant_id in exc.reply)  # ``Ledger.transition_many``
                raise

        moved = self._persist(attempt)
        return list(dict.fromkeys([*moved_first, *moved]))

    def _delivered(self, run: _Run, result: CallResult, settle: SlotSettle, reason: str) -> None:
        grant = run.grant
        profile = result.profile or {}
        inventory = parse_inventory(profile)
        if isinstance(inventory, ProfileProblem):
            self._profile_problem(grant, inventory, "recording a delivered request's result")
            per_grant: dict[str, dict[str, str]] = {}
        else:
            per_grant = {member.id: {"result": json.dumps(_result(inventory, member.items))} for member in run.batch}
        # An answer that comes back after the run's lease ran out (Redis was away longer than the margin)
        # still wins over a takeover that only guessed (held unknown, or waiting for a read-back), as long
        # as nothing was sent since: the attempt guard says so.
        recorded = self._step(
            run,
            GrantState.DELIVERED,
            reason,
            slot=settle,
            expect=(GrantState.SENDING, GrantState.RETRYING, GrantState.UNKNOWN),
            last_error="",
            per_grant=per_grant,
            effects=StepEffects(profile=self._profile_ref(grant, profile)),
        )
        self._key_works(run)
        if recorded:
            logger.info("grant(s) %s delivered to %s/%s (%s)", ",".join(run.ids), grant.guild_id, grant.user_id, reason)
        else:
            logger.warning(
                "grant %s: a 200 came back after another run took the grant over; that run decides", grant.id
            )

    def _rate_limited(self, run: _Run, result: CallResult, settle: SlotSettle) -> None:
        wait_s = result.retry_after_s if result.retry_after_s is not None else self.limiter.rate.window_s
        self._step(
            run,
            GrantState.RETRYING if run.grant.verify_pending else GrantState.QUEUED,
            f"WetBot answered 429; key blocked for {wait_s:.1f}s (not a failure)",
            slot=settle,
            last_error=_describe(result),
            effects=StepEffects(due_in_s=wait_s),
        )
        self.limiter.block(run.api.key_id, wait_s)

    def _unauthorised(self, run: _Run, result: CallResult, settle: SlotSettle) -> None:
        grant = run.grant
        pause_s = self.settings.wetbot_auth_pause_s
        reason = _describe(result)
        self._step(
            run,
            GrantState.RETRYING if grant.verify_pending else GrantState.QUEUED,
            f"API key refused ({reason}); key paused {pause_s:.0f}s, grant kept (not a failure)",
            slot=settle,
            last_error=reason,
            effects=StepEffects(due_in_s=pause_s),
        )
        self._pause_key(run, reason)

    def _pause_key(self, run: _Run, reason: str) -> None:
        """WetBot refused the key for this guild (401/403): pause it, alert once; a probe resumes it."""
        grant = run.grant
        pause_s = self.settings.wetbot_auth_pause_s
        if key_health.pause(self.redis, self.keys, run.api.key_id, grant.guild_id, reason, pause_s):
            logger.error(
                "API key %s refused by WetBot for guild %s (%s): its grants wait until the key works",
                run.api.key_id,
                grant.guild_id,
                reason,
            )
            capture(
                f"WetBot refused API key {run.api.key_id} for guild {grant.guild_id}: {reason}; deliveries are paused",
                level="warning",
                tags={
                    "kind": "key_unauthorised",
                    "key_id": run.api.key_id,
                    "guild_id": grant.guild_id,
                    "state": "paused",
                },
            )

    def _failed(
        self, run: _Run, error: str, settle: SlotSettle | None, *, fields: dict[str, str] | None = None
    ) -> None:
        """A failure: retry with backoff, or give up when out of attempts (``unknown`` if it may have been applied)."""
        if self._gave_up(run, error, settle, maybe_applied=bool(fields and fields.get("maybe_applied"))):
            return
        failures = run.grant.failures + 1
        delay_s = self._backoff_s(failures)
        self._step(
            run,
            GrantState.RETRYING,
            f"failure {failures} of {self.settings.wetbot_max_attempts}: {error}; next try in {delay_s:.1f}s",
            slot=settle,
            add_failure=True,
            last_error=error,
            effects=StepEffects(due_in_s=delay_s, fields=fields or {}),
        )

    def _gave_up(self, run: _Run, error: str, settle: SlotSettle | None = None, *, maybe_applied: bool = False) -> bool:
        """True when this failure is the last allowed one: the grant is then ``dead``, or ``unknown`` when the
        last request may have been applied (an operator decides; ``grants replay`` would risk a double grant)."""
        failures = run.grant.failures + 1
        if failures < self.settings.wetbot_max_attempts:
            return False
        state = GrantState.UNKNOWN if maybe_applied else GrantState.DEAD
        reason = f"gave up after {failures} failures: {error}"
        self._finish(run, state, reason, add_failure=True, slot=settle)
        return True

    def _ambiguous(self, run: _Run, error: str, settle: SlotSettle) -> None:
        """The request may have been applied: verify, hold or retry, as ``AMBIGUOUS_POLICY`` says."""
        policy = self.settings.ambiguous_policy
        if policy == "hold":
            self._finish(run, GrantState.UNKNOWN, f"may have been applied ({error}); held for an operator", slot=settle)
        elif policy == "retry":
            self._failed(
                run,
                f"may have been applied, sending again (AMBIGUOUS_POLICY=retry): {error}",
                settle,
                fields={"maybe_applied": "1"},
            )
        elif run.baseline_missing:
            reason = (
                f"may have been applied ({error}); {run.baseline_missing}, so a read-back cannot tell;"
                " held for an operator"
            )
            self._finish(run, GrantState.UNKNOWN, reason, slot=settle)
        else:
            self._step(
                run,
                GrantState.RETRYING,
                f"may have been applied ({error}); reading the profile back in {self._verify_delay_s():.0f}s",
                slot=settle,
                add_failure=True,
                last_error=f"may have been applied: {error}",
                effects=StepEffects(fields={"verify": "1"}, due_in_s=self._verify_delay_s(), hold=HoldChange.SET),
            )

    def _cannot_verify(self, run: _Run) -> bool:
        """True (and the grant held ``unknown``, no slot spent) when no read-back could judge its last request:
        no baseline was read for it, or the baseline is older than ``VERIFY_WINDOW_S``."""
        problem = self._baseline_problem(run.grant)
        if not problem:
            return False
        reason = f"a read-back cannot tell whether the last request was applied: {problem}; held for an operator"
        # Not guarded by the request's token (its outcome is recorded already): the run's claim and lease are.
        self._finish(run, GrantState.UNKNOWN, reason, guarded=False, expect=tuple(SENDABLE_STATES))
        return True

    def _baseline_problem(self, grant: Grant) -> str:
        """Why ``grant``'s baseline cannot serve a read-back now ("" when it can)."""
        if grant.baseline is None or grant.baseline_at is None:
            return grant.baseline_missing or NO_BASELINE
        age_s = self.schedule.now_ms() / 1000 - grant.baseline_at
        if age_s > VERIFY_WINDOW_S:
            return (
                f"the baseline was read {age_s:.0f}s ago (more than {VERIFY_WINDOW_S:.0f}s): the member may have"
                " changed these items meanwhile"
            )
        return ""

    def _verify_delay_s(self) -> float:
        """Seconds before a read-back: a request WetBot still holds gets that long to land first."""
        return float(self.settings.wetbot_timeout_s)

    def _verify(self, run: _Run, slot: str) -> None:
        """Read the profile back and judge the last request (``worker.verify``); the run holds lease and slot."""
        grant = run.grant
        # The request being judged may have carried several grants: they are judged, and move, together.
        members = tuple(same_request(self.redis, self.keys, grant))
        send_lease_s = self.settings.wetbot_timeout_s + self.timings.lease_margin_s
        moved = self.ledger.transition_many(
            [member.id for member in members],
            GrantState.SENDING,
            "reading the profile back to verify the last request",
            expect=SENDABLE_STATES,
            effects=StepEffects(
                begin=run.token,
                all_or_nothing=True,
                due_in_s=send_lease_s + 1,
                lease_set=LeaseSet(run.lease_key, run.lease_value, int(send_lease_s * 1000)),
            ),
        )
        if grant.id not in moved:
            self.limiter.settle(run.api.key_id, slot)  # nothing goes out: the slot holds one window, no longer
            self.schedule.reschedule(grant.id, run.lease_key, run.lease_value, self.timings.busy_retry_s)
            return
        result = run.api.get_profile(grant.guild_id, grant.user_id)
        run = replace(run, attempt=run.token, members=tuple(m for m in members if m.id in moved))
        settle = self.limiter.settle_ref(run.api.key_id, slot, may_still_arrive=result.may_still_arrive)
        if result.outcome == CallOutcome.DELIVERED and result.profile is not None:
            self._judged(run, result.profile, settle)
        elif result.outcome == CallOutcome.RATE_LIMITED:
            self._rate_limited(run, result, settle)
        elif result.outcome == CallOutcome.UNAUTHORISED:
            self._unauthorised(run, result, settle)
        else:
            self._read_back_failed(run, _describe(result), settle)
        self._count_outcome(run, result)

    def _judged(self, run: _Run, profile: JsonObject, settle: SlotSettle) -> None:
        grant = run.grant
        sent = grant.sent_items or grant.items  # what the request carried (merged), as its start recorded it
        verdict, seen = self._evidence(grant, sent, profile)
        profile_ref = self._profile_ref(grant, profile)
        if verdict == Verdict.APPLIED:
            result = CallResult(CallOutcome.DELIVERED, 200, "", profile)
            self._delivered(run, result, settle, f"verified by read-back: applied ({seen})")
        elif verdict == Verdict.NOT_APPLIED:
            if grant.failures >= self.settings.wetbot_max_attempts:
                reason = f"not applied (verified by read-back: {seen}); gave up after {grant.failures} failures"
                self._finish(run, GrantState.DEAD, reason, slot=settle, effects=StepEffects(profile=profile_ref))
                return
            self._step(
                run,
                GrantState.RETRYING,
                f"verified by read-back: not applied ({seen}); sending again",
                slot=settle,
                effects=StepEffects(profile=profile_ref, del_fields=("verify",), hold=HoldChange.CLEAR),
            )
        else:
            reason = f"read-back cannot tell whether the request was applied ({seen}); held for an operator"
            self._finish(run, GrantState.UNKNOWN, reason, slot=settle, effects=StepEffects(profile=profile_ref))

    def _evidence(self, grant: Grant, sent: tuple[GrantItem, ...], profile: JsonObject) -> tuple[Verdict, str]:
        """The verdict a read-back supports, and what was seen (``worker.verify``): only a baseline read for
        the request, young enough, that is still the last thing known of the member, can decide."""
        inventory = parse_inventory(profile)
        if isinstance(inventory, ProfileProblem):
            self._profile_problem(grant, inventory, "reading a profile back")
            return Verdict.UNDECIDED, f"the profile read back is not in WetBot's documented shape: {inventory.what}"
        now = inventory.of(item.item_id for item in sent)
        seen = f"baseline {_amounts(grant.baseline)}, read back {_amounts(now)}"
        problem = self._baseline_problem(grant)
        if problem:
            return Verdict.UNDECIDED, f"{seen}; {problem}"
        known = self.ledger.get_profile(grant.guild_id, grant.user_id)
        if grant.baseline_seq == -1 or (known.seq if known else 0) != grant.baseline_seq:
            return Verdict.UNDECIDED, seen + "; the member's recorded profile changed since the request"
        return judge(sent, grant.baseline, now), seen

    def _profile_problem(self, grant: Grant, problem: ProfileProblem, doing: str) -> None:
        """A profile WetBot sent is not in the documented shape: log it, and tell Sentry once a day per problem."""
        logger.error("grant %s: %s: the profile is not in WetBot's documented shape: %s", grant.id, doing, problem.what)
        digest = hashlib.sha256(f"profile-shape:{problem.what}".encode()).hexdigest()[:16]
        try:
            first = self.redis.set(self.keys.reported(digest), "1", nx=True, ex=PROBLEM_REPORT_TTL_S)
        except RedisError as exc:
            logger.debug("profile problem not marked as reported (%s)", exc)
            first = True
        if first:
            capture(
                f"WetBot sent a profile not in its documented shape ({doing}): {problem.what}",
                level="error",
                tags={"kind": "profile_shape", "guild_id": grant.guild_id, "grant_id": grant.id},
                context={"problem": problem.what, "doing": doing},
            )

    def _read_back_failed(self, run: _Run, error: str, settle: SlotSettle) -> None:
        """The read-back itself failed: try it again later, or ``unknown`` when out of attempts."""
        failures = run.grant.failures + 1
        if failures >= self.settings.wetbot_max_attempts:
            self._finish(
                run,
                GrantState.UNKNOWN,
                f"could not read the profile back after {failures} failures: {error}; held for an operator",
                add_failure=True,
                slot=settle,
            )
            return
        delay_s = self._backoff_s(failures)
        self._step(
            run,
            GrantState.RETRYING,
            f"read-back failed ({error}); reading again in {delay_s:.1f}s",
            slot=settle,
            add_failure=True,
            last_error=f"read-back failed: {error}",
            effects=StepEffects(due_in_s=delay_s),
        )

    def _finish(
        self,
        run: _Run,
        state: GrantState,
        reason: str,
        *,
        slot: SlotSettle | None = None,
        effects: StepEffects = _NO_EFFECTS,
        guarded: bool = True,
        add_failure: bool = False,
        expect: tuple[GrantState, ...] = (GrantState.SENDING,),
    ) -> None:
        """Move to a final state and report it to Sentry once (only the run that moved it reports).

        ``slot``, ``effects`` and ``guarded`` as in ``_step``.
        """
        moved = self._step(
            run,
            state,
            reason,
            slot=slot,
            expect=expect,
            guarded=guarded,
            add_failure=add_failure,
            last_error=reason,
            effects=effects,
        )
        for grant in run.batch:
            if grant.id in moved:
                self._report_final(grant, state, reason)

    def _report_final(self, grant: Grant, state: GrantState, reason: str) -> None:
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
                "attempts": grant.attempts,
            },
        )

    def _crashed(self, run: _Run, exc: Exception) -> None:
        """An unexpected exception in this run: count it; ``dead`` after ``MAX_CRASHES`` runs that never sent."""
        grant = run.grant
        error = f"the worker failed unexpectedly: {type(exc).__name__}: {exc}"[:300]
        try:
            crashes = values.integer(self.redis.hincrby(self.keys.grant(grant.id), "crashes", 1))
            logger.exception("grant %s: %s (run %d of %d)", grant.id, error, crashes, MAX_CRASHES)
            if crashes >= MAX_CRASHES and self.ledger.transition(
                grant.id,
                GrantState.DEAD,
                f"{error}; gave up after {crashes} runs",
                expect=SENDABLE_STATES,
                last_error=error,
                effects=StepEffects(lease_release=run.lease_release()),
            ):
                capture(
                    f"grant dead: {error}",
                    level="error",
                    tags={"kind": "grant_final", "state": GrantState.DEAD.value, "grant_id": grant.id},
                )
        except RedisError as redis_exc:
            logger.error("grant %s: %s; Redis unavailable to record it (%s)", grant.id, error, redis_exc)

    # --- helpers --------------------------------------------------------------------------
    def _persist(self, step: Callable[[], _T]) -> _T:
        """Run a guarded ledger step, retrying in place while Redis does not answer (up to ``Timings.record_retry_s``).

        An answer already received must not be lost to a Redis restart or a
        failover's write pause; the step's run token makes a repeat harmless.
        """
        deadline = time.monotonic() + self.timings.record_retry_s
        delay_s = 0.2
        while True:
            try:
                return step()
            except RedisError as exc:
                if time.monotonic() > deadline:
                    logger.error(
                        "could not record an outcome for %.0fs: Redis unavailable (%s)",
                        self.timings.record_retry_s,
                        exc,
                    )
                    raise
                logger.warning("recording an outcome: Redis unavailable (%s); trying again in %.1fs", exc, delay_s)
                self.sleep(delay_s)
                delay_s = min(delay_s * 2, 3.0)

    def _profile_ref(self, grant: Grant, profile: JsonObject) -> ProfileWrite:
        return ProfileWrite(
            self.keys.profile(grant.guild_id, grant.user_id), json.dumps(profile), time.time(), PROFILE_TTL_S
        )

    def _hand_back(self, run: _Run, delay_s: float, *, due_at_us: int = 0) -> None:
        self.schedule.reschedule(run.grant.id, run.lease_key, run.lease_value, max(delay_s, 0.0), due_at_us=due_at_us)

    def _key_works(self, run: _Run) -> None:
        """A call succeeded: a paused or refused key is usable again."""
        if key_health.clear(self.redis, self.keys, run.api.key_id, run.grant.guild_id):
            logger.warning(
                "API key %s works again for guild %s; paused grants resume", run.api.key_id, run.grant.guild_id
            )

    def _count_outcome(self, run: _Run, result: CallResult) -> None:
        """Count the request's outcome per key for ``/metrics``; the count is best effort, the ledger is not."""
        try:
            self.redis.hincrby(self.keys.key_outcomes(run.api.key_id), result.outcome.value, 1)
        except RedisError as exc:
            logger.debug("key %s: outcome not counted (%s)", run.api.key_id, exc)

    def _backoff_s(self, failures: int) -> float:
        base = self.settings.wetbot_retry_backoff_s * 2 ** (failures - 1)
        jitter = random.uniform(1.0, 1.25)  # noqa: S311 - jitter, not security
        return float(min(base, MAX_BACKOFF_S) * jitter)


def _describe(result: CallResult) -> str:
    status = f"HTTP {result.status}" if result.status is not None else "no response"
    return f"{status}: {result.message}" if result.message else status


def _result(inventory: Inventory, items: tuple[GrantItem, ...]) -> dict[str, float]:
    """A delivered grant's resulting amounts: each of its items as the profile holds it (0 without an entry)."""
    return {item: amount or 0.0 for item, amount in inventory.of(i.item_id for i in items).items()}


def _items(items: tuple[GrantItem, ...]) -> str:
    return ", ".join(f"{item.item_id} {item.amount:g}" for item in items)


def _amounts(amounts: Amounts | None) -> str:
    if amounts is None:
        return "none recorded"
    return ", ".join(f"{item}={'absent' if value is None else f'{value:g}'}" for item, value in amounts.items())
