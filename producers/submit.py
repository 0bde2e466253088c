"""Durably queue grants: ledger entry and queue message in one atomic step, once per idempotency key.

Every producer (grants API, CLI, webhooks) goes through here and answers 2xx
only after it returns (``worker.creation`` writes the ledger entry and the
Dramatiq message together). A grant that still carries an outbox marker (its
requeue was cut short) is enqueued here when its key is submitted again, or by
the worker's sweeper (``worker.sweeper``) — never lost.
"""

from __future__ import annotations

import dramatiq

from producers.links import LinkStore
from worker.broker import enqueue_grant
from worker.creation import Mode, Planned
from worker.ledger import CreateResult, Ledger, NewGrant


def submit_grant(ledger: Ledger, broker: dramatiq.Broker, new: NewGrant) -> CreateResult:
    """Create ``new`` and its queue message unless its idempotency key is taken (then return that grant).

    Raises whatever Redis raises; the caller answers 503 then and the source
    retries with the same idempotency key.
    """
    return finish_enqueue(ledger, broker, ledger.create_many([Planned(new, Mode.ENQUEUE)]).results[0])


def planned_for_identity(links: LinkStore, new: NewGrant) -> Planned:
    """``new`` for the Discord user linked to ``new.platform``/``new.external_id`` — or parked until one is."""
    return Planned(new, Mode.RESOLVE, links.static_user(new.platform, new.external_id) or "")


def finish_enqueue(ledger: Ledger, broker: dramatiq.Broker, result: CreateResult) -> CreateResult:
    """Enqueue a grant that the key named but whose queue message may be missing (its outbox marker stands)."""
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
    the link appears. The link is looked up inside the same atomic step that
    parks, so a link added at the same moment cannot leave the grant parked.
    """
    return finish_enqueue(ledger, broker, ledger.create_many([planned_for_identity(links, new)]).results[0])


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
