"""Coalescing: when a rate slot comes up for one grant, send every grant pending for its (guild, user) too.

A key allows 10 requests a minute, so a backlog for one member (a gift bomb,
a burst of cheers) would otherwise spend one request per grant. A merged
request sums the same item ids (WetBot documents amounts within ±1e9) and
carries at most ``WETBOT_MAX_ITEMS_PER_REQUEST`` distinct items; a grant that
would break either bound waits for a later request.

Only grants nothing can have reached WetBot from join (not awaiting a
read-back, not a possible resend, not marked ``solo`` after a merged request
was refused for its content), with as many failures so far as the lead (an
outcome counts against all of them alike, so they run out of attempts
together), so each merged request is judged as a whole:
its outcome, or its read-back, moves every grant in it in one step
(``Ledger.transition_many``), and each grant keeps its own history and
resulting amounts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis import Redis

from config.domain import MAX_ABS_AMOUNT
from worker import redis_values as values
from worker.grant import SENDABLE_STATES, Grant, GrantItem, grant_from_hash
from worker.keys import Keys

__all__ = ["Merged", "merge", "pending_grants", "same_request"]


@dataclass(frozen=True)
class Merged:
    """The grants one request carries (the lead first) and its items, summed per item id."""

    members: tuple[Grant, ...]
    items: tuple[GrantItem, ...]

    @property
    def ids(self) -> list[str]:
        return [grant.id for grant in self.members]

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


def merge(lead: Grant, candidates: Iterable[Grant], *, max_items: int) -> Merged:
    """``lead`` and, oldest first, each candidate that fits: every summed amount within ±``MAX_ABS_AMOUNT`` and
    not 0, and at most ``max_items`` distinct items (the lead alone may exceed neither: producers check)."""
    totals: dict[str, float] = {item.item_id: item.amount for item in lead.items}
    members = [lead]
    for grant in sorted(candidates, key=lambda g: (g.created_at, g.id)):
        trial = dict(totals)
        for item in grant.items:
            trial[item.item_id] = trial.get(item.item_id, 0.0) + item.amount
        if len(trial) > max_items or any(abs(v) > MAX_ABS_AMOUNT or v == 0 for v in trial.values()):
            continue
        totals = trial
        members.append(grant)
    return Merged(tuple(members), tuple(GrantItem(item_id, amount) for item_id, amount in totals.items()))


def pending_grants(redis: Redis, keys: Keys, lead: Grant) -> list[Grant]:
    """The user's other grants that may join a merged request with ``lead`` (see the module docstring)."""
    ids = sorted(
        member
        for member in values.texts(redis.smembers(keys.pending(lead.guild_id, lead.user_id)))
        if member != lead.id
    )
    return [
        grant
        for grant in _load(redis, keys, ids)
        if grant.state in SENDABLE_STATES
        and (grant.guild_id, grant.user_id) == (lead.guild_id, lead.user_id)
        and not (grant.verify_pending or grant.maybe_applied or grant.solo)
        # One request, one failure budget: its outcome counts against every grant in it alike.
        and grant.failures == lead.failures
    ]


def same_request(redis: Redis, keys: Keys, lead: Grant) -> list[Grant]:
    """The grants that went out in ``lead``'s last request and wait, like ``lead``, for its outcome: those of
    its ``request_ids`` still carrying its run token in ``lead``'s state (``lead`` first).

    Used when that request's outcome is decided later (a worker died while
    sending it, a read-back judges it, an operator resolves it). A grant of the
    request that has moved on since (an operator resent it) is not judged again.
    """
    others = _load(redis, keys, [grant_id for grant_id in lead.request_ids if grant_id != lead.id])
    return [
        lead,
        *(
            g
            for g in others
            if g.attempt_token == lead.attempt_token
            and g.state == lead.state
            and g.verify_pending == lead.verify_pending
        ),
    ]


def _load(redis: Redis, keys: Keys, ids: Sequence[str]) -> list[Grant]:
    """The grants of ``ids`` that exist, in one round trip."""
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for grant_id in ids:
        pipe.hgetall(keys.grant(grant_id))
    return [grant_from_hash(raw) for raw in values.raw_maps(pipe.execute()) if raw]
