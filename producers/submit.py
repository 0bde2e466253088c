"""Durably queue a grant: ledger entry (idempotent) and queue message, in that order.

Every producer (grants API, CLI, webhooks) goes through ``submit_grant`` and
answers 2xx only after it returns. A failure part-way leaves either nothing, or
a grant whose outbox marker makes the worker's sweeper enqueue it
(``worker.sweeper``) — never a lost grant.
"""

from __future__ import annotations

from dataclasses import replace

import dramatiq

from producers.links import LinkStore
from worker.broker import enqueue_grant
from worker.ledger import CreateResult, Ledger, NewGrant


def submit_grant(ledger: Ledger, broker: dramatiq.Broker, new: NewGrant) -> CreateResult:
    """Create ``new`` unless its idempotency key is taken, and make sure it is queued.

    Raises whatever Redis or the broker raise; the caller answers 503 then and
    the source retries with the same idempotency key.
    """
    result = ledger.create(new)
    if result.needs_enqueue:
        enqueue_grant(broker, result.grant.id)
        ledger.mark_enqueued(result.grant.id)
    return result


def requeue_grant(ledger: Ledger, broker: dramatiq.Broker, grant_id: str) -> None:
    """Queue an existing grant again (replay, resolve), outbox first so a crash cannot lose it."""
    ledger.mark_needs_enqueue(grant_id)
    enqueue_grant(broker, grant_id)
    ledger.mark_enqueued(grant_id)


def submit_for_identity(ledger: Ledger, broker: dramatiq.Broker, links: LinkStore, new: NewGrant) -> CreateResult:
    """Queue ``new`` for the Discord user linked to ``new.platform``/``new.external_id``, or park it.

    A parked grant is never dropped: ``link_and_release`` queues it, once, when
    the link appears. The link is looked up again after parking, so a link added
    at the same moment cannot leave the grant parked (each side writes first,
    then looks at the other).
    """
    user_id = links.resolve(new.platform, new.external_id)
    if user_id is not None:
        return submit_grant(ledger, broker, replace(new, user_id=user_id))
    result = ledger.create(new, parked=True)
    late_user = links.resolve(new.platform, new.external_id)
    if late_user is not None:
        _enqueue_released(ledger, broker, ledger.release_parked(new.platform, new.external_id, late_user))
        grant = ledger.get(result.grant.id)
        return CreateResult(grant=grant or result.grant, created=result.created)
    if result.needs_enqueue:  # the key named a grant that is queued, not parked: finish its enqueue
        enqueue_grant(broker, result.grant.id)
        ledger.mark_enqueued(result.grant.id)
    return result


def link_and_release(
    ledger: Ledger, broker: dramatiq.Broker, links: LinkStore, platform: str, external_id: str, discord_user_id: str
) -> list[str]:
    """Store the link, then queue every grant parked for that user (each exactly once). Returns their ids."""
    links.add(platform, external_id, discord_user_id)
    released = ledger.release_parked(platform, external_id, discord_user_id)
    _enqueue_released(ledger, broker, released)
    return released


def _enqueue_released(ledger: Ledger, broker: dramatiq.Broker, grant_ids: list[str]) -> None:
    for grant_id in grant_ids:
        enqueue_grant(broker, grant_id)
        ledger.mark_enqueued(grant_id)
