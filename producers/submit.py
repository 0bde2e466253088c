"""Durably queue grants: ledger entry and queue message in one atomic step, once per idempotency key.

Every producer (grants API, CLI, webhooks) goes through here and answers 2xx
only after it returns (``worker.creation`` writes the ledger entry, its place
on the ledger's schedule and the Dramatiq message together). Whatever happens
to the message afterwards, the schedule moves the grant (``worker.schedule``).
"""

from __future__ import annotations

from producers.links import LinkStore, SelfLink
from worker.creation import Mode, Planned
from worker.effects import HoldChange, StepEffects
from worker.grant import CreateResult, GrantState, NewGrant
from worker.ledger import Ledger

#: The grant field a refund sets (``lua/redemption_decide.lua``); a grant carrying it is never queued again.
REFUNDED_FLAG = "refunded"


def submit_grant(ledger: Ledger, new: NewGrant) -> CreateResult:
    """Create ``new`` and its queue message unless its idempotency key is taken (then return that grant).

    Raises whatever Redis raises; the caller answers 503 then and the source
    retries with the same idempotency key.
    """
    return ledger.create_many([Planned(new, Mode.ENQUEUE)]).results[0]


def planned_for_identity(links: LinkStore, new: NewGrant) -> Planned:
    """``new`` for the Discord user linked to ``new.platform``/``new.external_id`` — or parked until one is."""
    return Planned(new, Mode.RESOLVE, links.static_user(new.platform, new.external_id) or "")


def requeue_grant(
    ledger: Ledger,
    grant_id: str,
    reason: str,
    *,
    expect: GrantState,
    verify: bool = False,
    version: int = -1,
    confirm: bool = False,
    action: str = "",
) -> bool:
    """``requeue_group``, True when the named grant moved."""
    moved = requeue_group(
        ledger, grant_id, reason, expect=expect, verify=verify, version=version, confirm=confirm, action=action
    )
    return grant_id in moved


def requeue_group(
    ledger: Ledger,
    grant_id: str,
    reason: str,
    *,
    expect: GrantState,
    verify: bool = False,
    version: int = -1,
    confirm: bool = False,
    action: str = "",
) -> list[str]:
    """Queue a grant in state ``expect`` again (replay, resolve) in one atomic step; the ids this call moved.

    The step puts the grant on the ledger's schedule, due now, so a command
    killed at any instant leaves it either unchanged or moving, and a second
    run finds it moved and does nothing. ``verify`` asks for a read-back of the
    last request instead of a resend (``resolve --verify``); ``version`` (when >= 0) is the number of
    history entries the operator saw (``StepEffects.expect_history``). An ``unknown``
    grant moves with every grant its merged request carried (``request_group``):
    the decision is about the request, and a read-back judges it as a whole. ``confirm`` waits for the
    ledger's replicas (``Ledger.transition``; raises ``NotReplicated``). ``action`` names the operator's
    action the step is, in its history entry (``StepEffects.action``).
    """
    # A refunded grant never goes out again: the supporter has their payment back (``Grant.refunded``).
    effects = (
        StepEffects(
            fields={"verify": "1"},
            hold=HoldChange.SET,
            expect_history=version,
            action=action,
            unless_flagged=(REFUNDED_FLAG,),
        )
        if verify
        else StepEffects(del_fields=("verify",), expect_history=version, action=action, unless_flagged=(REFUNDED_FLAG,))
    )
    to = GrantState.RETRYING if verify else GrantState.QUEUED
    ids = request_group(ledger, grant_id, expect)
    ids = [grant_id, *(other for other in ids if other != grant_id)]  # the version is the named grant's
    return ledger.transition_many(
        ids, to, reason, expect=[expect], reset_failures=True, effects=effects, confirm=confirm
    )


def request_group(ledger: Ledger, grant_id: str, state: GrantState) -> list[str]:
    """``grant_id`` and, for an ``unknown`` grant, the other grants of its merged request still ``unknown``."""
    grant = ledger.get(grant_id)
    if grant is None or state != GrantState.UNKNOWN or grant.state != GrantState.UNKNOWN:
        return [grant_id]
    return ledger.same_request_ids(grant)


def submit_for_identity(ledger: Ledger, links: LinkStore, new: NewGrant) -> CreateResult:
    """Queue ``new`` for the Discord user linked to ``new.platform``/``new.external_id``, or park it.

    A parked grant is never dropped: ``link_and_release`` queues it, once, when
    the link appears. The link is looked up inside the same atomic step that
    parks, so a link added at the same moment cannot leave the grant parked.
    """
    return ledger.create_many([planned_for_identity(links, new)]).results[0]


def link_and_release(
    ledger: Ledger, links: LinkStore, platform: str, external_id: str, discord_user_id: str
) -> list[str]:
    """Store the link, then queue every grant parked for that user (each exactly once). Returns their ids.

    Released grants are due at once on the ledger's schedule: a worker's
    reconciler dispatches them within a second, even if this caller dies next.
    Both steps are confirmed by the replicas ``links`` and ``ledger`` wait for
    (``worker.replication``): each can raise ``NotReplicated``, and the call
    is then safe to repeat (the link is set again, what is still parked is
    released; nothing is released twice).
    """
    links.add(platform, external_id, discord_user_id)
    return ledger.release_parked(platform, external_id, discord_user_id, confirm=True)


def self_link_and_release(
    ledger: Ledger, links: LinkStore, platform: str, external_id: str, discord_user_id: str, *, max_accounts: int
) -> tuple[SelfLink, list[str]]:
    """A self-made link (``LinkStore.add_self``), then, if it stands, the user's parked grants queued.

    A refused link releases nothing: the user's grants keep going where their existing link (or
    none: parked) sends them. ``ALREADY`` releases too, so a redelivered redemption whose first
    attempt died between the link and the release finishes the job. Confirmed as ``link_and_release``.
    """
    outcome = links.add_self(platform, external_id, discord_user_id, max_accounts=max_accounts)
    if outcome.refused:
        return outcome, []
    return outcome, ledger.release_parked(platform, external_id, discord_user_id, confirm=True)
