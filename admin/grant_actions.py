"""What an operator can do to a grant (replay, cancel, resolve, bulk replay): once, for console, API and CLI.

Each action is one atomic ledger step guarded by the state it starts from
(and, from a form, by the grant's ``version``: how many history entries the
operator saw), so a double click, a form sent again or a retried API call
does nothing twice: the second finds the grant moved and is refused with a
message saying what the grant is now. Every call, done or refused, is written
to the audit log.

Every answer is confirmed by the ledger's replicas (``REDIS_WAIT_REPLICAS``,
``worker.replication``) before it is given: a step's own write, and the state
a refusal or a "nothing to do" rests on (``Ledger.confirmed``). Short of them
the action raises ``ActionUnconfirmed`` (``producers.unconfirmed``): not done,
not refused — "could not be confirmed, run it again". Its step may stand on
the primary; the repeat then finds it done (a cancel: "already cancelled") or
refuses it saying what the grant is (a replay: "replayed already"), confirmed.
Each action first has the client ask the sentinels for the master
(``follow_failover``), so it does not start on a primary just replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from config.errors import WetbotRewardsError
from producers.audit import Audit
from producers.submit import request_group, requeue_grant, requeue_group
from producers.unconfirmed import ActionUnconfirmed
from worker.connections import follow_failover
from worker.effects import StepEffects
from worker.grant import CANCELLABLE_STATES, Grant, GrantState
from worker.grant_search import GrantQuery, find_grants
from worker.ledger import Ledger
from worker.replication import NotReplicated

__all__ = [
    "MAX_BULK",
    "ActionDone",
    "ActionInvalid",
    "ActionRefused",
    "ActionUnconfirmed",
    "Decision",
    "GrantMissing",
    "OperatorAction",
    "bulk_replay",
    "cancel",
    "count_dead",
    "replay",
    "resolve",
]

#: Most dead grants one bulk replay moves (a larger set takes several).
MAX_BULK = 10_000
#: Longest reason or note kept with an action, in characters.
MAX_REASON_CHARS = 500
#: How a replay's history entry reads (a bulk replay's too).
REPLAYED = "replayed by an operator"
#: How a resolve's history entry reads: marked delivered or sent again, or a read-back asked for.
RESOLVED = ("resolved by an operator", "operator asked for a read-back")


class OperatorAction(StrEnum):
    """An operator's action as its step's history entry names it (``Transition.action``)."""

    REPLAY = "replay"
    RESOLVE = "resolve"


#: The state each operator action moves a grant out of.
_ACTS_ON = {OperatorAction.REPLAY: GrantState.DEAD, OperatorAction.RESOLVE: GrantState.UNKNOWN}


class Decision(StrEnum):
    """How an operator resolves an ``unknown`` grant."""

    #: WetBot did apply it: mark it delivered.
    DELIVERED = "delivered"
    #: WetBot did not apply it: send it again.
    RESEND = "resend"
    #: read the member's profile back and let the worker decide (one rate slot).
    VERIFY = "verify"


class ActionRefused(WetbotRewardsError):
    """Raised when the action did nothing: the grant is not in a state it applies to, or changed since it was
    looked at."""

    def __init__(self, message: str, grant: Grant | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.grant = grant


class GrantMissing(ActionRefused):
    """No grant has that id (mistyped, or trimmed by retention)."""


class ActionInvalid(ActionRefused):
    """The request itself is incomplete (a cancel without a reason): nothing was looked at or done."""


@dataclass(frozen=True)
class ActionDone:
    """What an action did: the grant as it stands now, and every grant that moved with it."""

    grant: Grant
    #: False when there was nothing to do because it was already done (a cancel of a cancelled grant).
    done: bool
    message: str
    moved: tuple[str, ...] = ()


@dataclass
class _Recorder:
    audit: Audit | None
    actor: str

    def __call__(self, action: str, target: str, outcome: str, detail: str = "") -> None:
        if self.audit is not None:
            self.audit.record(self.actor, action, target, outcome, detail)


def _get(ledger: Ledger, grant_id: str) -> Grant:
    grant = ledger.get(grant_id)
    if grant is None:
        raise GrantMissing(f"no grant with id {grant_id} (mistyped, or older than the ledger's retention)")
    return grant


def _found(ledger: Ledger, grant_id: str) -> Grant:
    """The grant, for an action. "No such grant" is an answer too, so it is confirmed like one: during a
    failover a demoted primary resyncing from the new one can answer a read from an empty dataset.

    Raises:
      GrantMissing: the replicas confirm there is no such grant.
      NotReplicated: too few replicas confirmed the read (or the node answering is no primary any more).
    """
    grant = ledger.get(grant_id)
    if grant is not None:
        return grant
    confirmed, _ = ledger.confirmed(grant_id)
    if confirmed is None:
        raise GrantMissing(f"no grant with id {grant_id} (mistyped, or older than the ledger's retention)")
    return confirmed


def _done_before(ledger: Ledger, grant: Grant, action: OperatorAction, version: int) -> bool:
    """Whether the grant's last step is the operator's ``action`` (out of the state it acts on), as its history
    entry names it, and, given a ``version``, the one step since the operator looked: the same action, done
    by an earlier try whose answer was lost or not confirmed. Its repeat then says so instead of "not dead"."""
    history = ledger.history(grant.id)
    if not history or (version >= 0 and len(history) != version + 1):
        return False
    last = history[-1]
    return last.from_state == _ACTS_ON[action].value and last.action == action


def _refusal(ledger: Ledger, grant_id: str, expected: str, version: int) -> ActionRefused:
    """Why a guarded step did not move the grant, read after the fact."""
    grant = _get(ledger, grant_id)
    if version >= 0 and len(ledger.history(grant_id)) != version:
        return ActionRefused(
            f"grant {grant_id} changed since it was shown (it is {grant.state.value} now): nothing done; look again",
            grant,
        )
    return ActionRefused(f"grant {grant_id} is {grant.state.value}, not {expected}: nothing done", grant)


#: Times an answer that wrote nothing is judged again when the grant moved before its state was confirmed
#: (a worker's step landing in between); a grant still moving after that is reported unconfirmed.
CONFIRM_TRIES = 3


def _confirmed_now(ledger: Ledger, grant: Grant) -> Grant:
    """The grant as replicas confirm it now (``Ledger.confirmed``): what an answer that wrote nothing rests on.

    Raises:
      NotReplicated: too few replicas confirmed it, or the grant is gone.
    """
    now, _ = ledger.confirmed(grant.id)
    if now is None:
        raise NotReplicated(f"grant {grant.id} is not there on the replicas' side")
    return now


def _run(
    ledger: Ledger,
    audit: Audit | None,
    actor: str,
    action: str,
    grant_id: str,
    step: Callable[[Grant], ActionDone],
    detail: str = "",
) -> ActionDone:
    """``step`` on the grant, its answer confirmed (module docstring) and written to the audit log.

    An answer that wrote nothing (a refusal, "already done") rests on the state the step saw; when the
    confirmed state differs (a worker moved the grant meanwhile), the step judges the grant again as it
    is now, so the answer is about the grant as it stands, never "unconfirmed" for a grant that only moved.

    Raises:
      ActionUnconfirmed: too few replicas confirmed the step, or the state a refusal rests on.
      ActionRefused: as ``step`` (``GrantMissing``, ``ActionInvalid`` need no confirmation).
    """
    record = _Recorder(audit, actor)
    why = f"; {detail}" if detail else ""
    follow_failover(ledger.redis)
    try:
        grant = _found(ledger, grant_id)
        for _ in range(CONFIRM_TRIES):
            try:
                result = step(grant)
            except ActionRefused as refused:
                if refused.grant is None or isinstance(refused, GrantMissing | ActionInvalid):
                    record(action, grant_id, "refused", refused.message + why)
                    raise
                now = _confirmed_now(ledger, refused.grant)
                if now.state == refused.grant.state:
                    record(action, grant_id, "refused", refused.message + why)
                    raise
                grant = now
                continue
            if result.done:
                break
            now = _confirmed_now(ledger, result.grant)
            if now.state == result.grant.state:
                break
            grant = now
        else:
            raise NotReplicated(f"grant {grant_id} kept changing while its state was being confirmed")
    except NotReplicated as exc:
        unconfirmed = ActionUnconfirmed(f"{action} of grant {grant_id}", exc)
        record(action, grant_id, "not confirmed", unconfirmed.message + why)
        raise unconfirmed from exc
    record(action, grant_id, "done" if result.done else "nothing to do", result.message + why)
    return result


def _clean(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON_CHARS]


def replay(
    ledger: Ledger, grant_id: str, *, version: int = -1, audit: Audit | None = None, actor: str = ""
) -> ActionDone:
    """Queue a dead grant again; its failures start over.

    Raises:
      GrantMissing: no such grant.
      ActionRefused: it is not dead (already replayed, say), or changed since ``version``.
      ActionUnconfirmed: too few replicas confirmed it (module docstring).
    """

    def step(grant: Grant) -> ActionDone:
        if grant.state != GrantState.DEAD and _done_before(ledger, grant, OperatorAction.REPLAY, version):
            raise ActionRefused(
                f"grant {grant.id} was replayed already: it is {grant.state.value}, not dead: nothing replayed again",
                grant,
            )
        if grant.state != GrantState.DEAD:
            raise ActionRefused(f"grant {grant.id} is {grant.state.value}, not dead: nothing replayed", grant)
        if grant.refunded:
            raise ActionRefused(
                f"grant {grant.id} was refunded on Twitch (the viewer has the channel points back): replaying it "
                "would give the reward too: nothing replayed",
                grant,
            )
        reason = REPLAYED
        action = OperatorAction.REPLAY
        if not requeue_grant(
            ledger, grant.id, reason, expect=GrantState.DEAD, version=version, confirm=True, action=action
        ):
            raise _refusal(ledger, grant.id, "dead", version)
        return ActionDone(_get(ledger, grant.id), True, f"grant {grant.id} queued again", (grant.id,))

    return _run(ledger, audit, actor, "replay", grant_id, step)


def cancel(
    ledger: Ledger, grant_id: str, reason: str, *, version: int = -1, audit: Audit | None = None, actor: str = ""
) -> ActionDone:
    """Cancel a queued, parked or retrying grant nothing of which can have reached WetBot; it never goes out.

    Cancelling a cancelled grant is done already (``done`` False), not an error, so a retried call succeeds.

    Raises:
      ActionInvalid: no reason given (a reason of spaces is none).
      GrantMissing: no such grant.
      ActionRefused: it is being sent, was delivered or ended otherwise, or may have reached WetBot.
      ActionUnconfirmed: too few replicas confirmed it (module docstring); "already cancelled" too.
    """
    why = _clean(reason)

    def step(grant: Grant) -> ActionDone:
        if not why:
            raise ActionInvalid("a reason is required to cancel a grant", grant)
        if grant.state == GrantState.CANCELLED:
            return ActionDone(grant, False, f"grant {grant.id} was already cancelled")
        if grant.state in CANCELLABLE_STATES and not grant.cancellable:
            raise ActionRefused(
                f"grant {grant.id} may already have reached WetBot (its last request's outcome is being "
                "checked): it cannot be cancelled",
                grant,
            )
        if grant.state not in CANCELLABLE_STATES:
            raise ActionRefused(
                f"grant {grant.id} is {grant.state.value}: only queued, parked or retrying grants can be cancelled",
                grant,
            )
        if not ledger.cancel(grant.id, f"cancelled by an operator: {why}", version=version, confirm=True):
            raise _refusal(ledger, grant.id, "queued, parked or retrying", version)
        return ActionDone(_get(ledger, grant.id), True, f"grant {grant.id} cancelled: it will not be sent", (grant.id,))

    return _run(ledger, audit, actor, "cancel", grant_id, step, why)


def resolve(
    ledger: Ledger,
    grant_id: str,
    decision: Decision,
    *,
    note: str = "",
    version: int = -1,
    audit: Audit | None = None,
    actor: str = "",
) -> ActionDone:
    """Decide an ``unknown`` grant, with every grant its merged request carried (``request_group``).

    Raises:
      GrantMissing: no such grant.
      ActionRefused: it is not unknown (decided already), or changed since ``version``.
      ActionUnconfirmed: too few replicas confirmed it (module docstring).
    """
    extra = f" ({_clean(note)})" if _clean(note) else ""

    def step(grant: Grant) -> ActionDone:
        if grant.state != GrantState.UNKNOWN and _done_before(ledger, grant, OperatorAction.RESOLVE, version):
            raise ActionRefused(
                f"grant {grant.id} was resolved already: it is {grant.state.value}; only grants in state unknown "
                "can be resolved: nothing done again",
                grant,
            )
        if grant.state != GrantState.UNKNOWN:
            raise ActionRefused(
                f"grant {grant.id} is {grant.state.value}; only grants in state unknown can be resolved", grant
            )
        if decision == Decision.DELIVERED:
            group = request_group(ledger, grant.id, GrantState.UNKNOWN)
            ids = [grant.id, *(other for other in group if other != grant.id)]
            moved = ledger.transition_many(
                ids,
                GrantState.DELIVERED,
                f"{RESOLVED[0]}: applied{extra}",
                expect=[GrantState.UNKNOWN],
                effects=StepEffects(expect_history=version, action=OperatorAction.RESOLVE),
                confirm=True,
            )
            ok, done = grant.id in moved, "marked delivered"
        else:
            verify = decision == Decision.VERIFY
            reason = f"{RESOLVED[1]}{extra}" if verify else f"{RESOLVED[0]}: not applied, resend{extra}"
            moved = requeue_group(
                ledger,
                grant.id,
                reason,
                expect=GrantState.UNKNOWN,
                verify=verify,
                version=version,
                confirm=True,
                action=OperatorAction.RESOLVE,
            )
            ok = grant.id in moved
            done = "queued for a read-back of the member's profile" if verify else "queued to be sent again"
        if not ok:
            raise _refusal(ledger, grant.id, "unknown", version)
        others = [other for other in moved if other != grant.id]
        together = f", with the {len(others)} other grant(s) its merged request carried: {', '.join(others)}"
        message = f"grant {grant.id} {done}{together if others else ''}"
        return ActionDone(_get(ledger, grant.id), True, message, tuple(moved))

    return _run(ledger, audit, actor, f"resolve {decision.value}", grant_id, step, _clean(note))


def _dead_query(query: GrantQuery) -> GrantQuery:
    return GrantQuery(state=GrantState.DEAD, source=query.source, guild_id=query.guild_id, text=query.text)


def _dead_ids(ledger: Ledger, query: GrantQuery, up_to: float) -> list[str]:
    """Ids of the dead grants ``query`` matches that died at or before ``up_to``, newest first."""
    found: list[str] = []
    cursor: str | None = None
    while len(found) < MAX_BULK:
        page = find_grants(ledger.redis, ledger.keys, _dead_query(query), cursor=cursor, limit=100)
        found += [grant.id for grant in page.grants if grant.state == GrantState.DEAD and grant.updated_at <= up_to]
        cursor = page.next_cursor
        if cursor is None:
            break
    return found[:MAX_BULK]


def count_dead(ledger: Ledger, query: GrantQuery, *, up_to: float | None = None) -> int:
    """How many dead grants a bulk replay of ``query`` would queue again now (shown before confirming)."""
    return len(_dead_ids(ledger, query, time.time() if up_to is None else up_to))


@dataclass(frozen=True)
class BulkDone:
    replayed: tuple[str, ...]
    #: matched when counted but moved meanwhile (replayed by someone else, say).
    skipped: int


def bulk_replay(
    ledger: Ledger, query: GrantQuery, *, up_to: float, audit: Audit | None = None, actor: str = ""
) -> BulkDone:
    """Queue again every dead grant ``query`` matches that died at or before ``up_to`` (the moment the
    operator was shown the count), each in its own guarded, confirmed step: a second run finds none of them dead.

    Raises:
      ActionUnconfirmed: a step fell short of the replicas; the run stops there (its ``done``: the grants
        replayed and confirmed before it). A second run replays the rest.
    """
    replayed: list[str] = []
    skipped = 0
    what = ", ".join(f"{name}={value}" for name, value in query.filters().items() if name != "state") or "all"
    record = _Recorder(audit, actor)
    follow_failover(ledger.redis)
    for grant_id in _dead_ids(ledger, query, up_to):
        try:
            moved = requeue_grant(
                ledger,
                grant_id,
                f"{REPLAYED} (bulk)",
                expect=GrantState.DEAD,
                confirm=True,
                action=OperatorAction.REPLAY,
            )
        except NotReplicated as exc:
            unconfirmed = ActionUnconfirmed(f"bulk replay ({len(replayed)} replayed before it)", exc, tuple(replayed))
            record("bulk replay", what, "not confirmed", f"{len(replayed)} replayed, stopped at grant {grant_id}")
            raise unconfirmed from exc
        if moved:
            replayed.append(grant_id)
        else:
            skipped += 1
    record("bulk replay", what, "done", f"{len(replayed)} replayed, {skipped} skipped")
    return BulkDone(tuple(replayed), skipped)
