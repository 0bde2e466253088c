"""Durably queue a grant: ledger entry (idempotent) and queue message, in that order.

Every producer (grants API, CLI, webhooks) goes through ``submit_grant`` and
answers 2xx only after it returns. A failure part-way leaves either nothing, or
a grant whose outbox marker makes the worker's sweeper enqueue it
(``worker.sweeper``) — never a lost grant.
"""

from __future__ import annotations

import dramatiq

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
