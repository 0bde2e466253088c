"""Judging an outcome that may have been applied, by reading the user's profile back — from evidence only.

WetBot is an economy bot: members buy, sell and trade items between our
grants, so the last profile we recorded says nothing about their inventory
now. A read-back is therefore judged only against a **baseline read for this
request**: ``GET /guilds/:g/users/:u`` in the same run, holding the user's
lease, right before the ``POST`` (``Deliverer._send``), its amounts stored on
the grant with the Redis time of the read (``baseline``, ``baseline_at``).
Requests to one user never overlap (the user lease), and while a grant waits
for its read-back the user's other grants wait too (the verify hold), so
between the baseline and the read-back only this request — and whatever the
member or other bots did in that window — can have changed those amounts.

* every item at baseline + granted amount → applied (``delivered``, "verified by read-back");
* every item exactly at baseline (an entry that did not exist still does not) → not applied: send again;
* anything else → ``unknown``, for an operator;
* no baseline read for the request, a baseline older than ``VERIFY_WINDOW_S`` at the
  read-back, or a profile not in the documented shape (``worker.profile``) → ``unknown``:
  "cannot tell" is never turned into a guess.

**What a baseline costs.** A read is a request against the key's budget (10 a
minute). The worker reads one only with a spare slot (``SPARE_FRACTION``):
when nobody waits in the key's line, WetBot answered no 429 in the last ten
windows (its limit may be stricter than ours), and, after the request's own
slot and a slot for every grant of the guild already queued, a fifth of the
window is still free. A quiet key therefore gets a baseline for every
request at no cost in throughput; a key with a backlog spends every slot on
grants, and a maybe-applied outcome of a request sent without a baseline is
held ``unknown`` (``bench/verify_cost.py`` measures both). With coalescing one
read serves the member's whole merged request.

**How it can still be fooled**: only by a change inside the window, from the
baseline read to the read-back (about ``WETBOT_TIMEOUT_S`` plus a second, at most
``VERIFY_WINDOW_S``), by exactly the granted amount of every item: the member
spends exactly what was granted (an applied request looks not applied and is
sent again), or gains exactly that much while the request was lost (it looks
applied). A request WetBot applies only after the read-back (it held it longer
than ``WETBOT_TIMEOUT_S``) also looks not applied.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum

from worker.grant import GrantItem

#: Amounts are compared with this tolerance (WetBot adds with decimals; JSON carries floats).
TOLERANCE = 1e-9
#: Longest time, in seconds, from the baseline read to the read-back for the read-back to decide: beyond
#: it (read-backs that kept failing, an operator's late "check by read-back") the member has had too long
#: to change the items for the comparison to mean anything, and the verdict is "cannot tell".
VERIFY_WINDOW_S = 600.0
#: Part of a key's window that must still be free, after the request's own slot and one slot for each grant
#: of its guild already queued, for the worker to spend one more slot on reading the request's baseline.
SPARE_FRACTION = 0.2

#: item id -> amount in the inventory, None when the inventory has no entry for it.
Amounts = Mapping[str, float | None]


class Verdict(StrEnum):
    """What a read-back shows about the last request."""

    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    UNDECIDED = "undecided"


def judge(items: Iterable[GrantItem], baseline: Amounts | None, now: Amounts) -> Verdict:
    """Compare the amounts read back (``now``) with the ``baseline`` read for the request, for ``items``.

    Without a baseline (none was read for the request) nothing can be decided.
    """
    if baseline is None:
        return Verdict.UNDECIDED
    granted: dict[str, float] = {}
    for item in items:
        granted[item.item_id] = granted.get(item.item_id, 0.0) + item.amount
    if any(item not in baseline or item not in now for item in granted):
        return Verdict.UNDECIDED
    if all(_same(now[i], baseline[i]) for i in granted):
        return Verdict.NOT_APPLIED
    if all(_close(_or_zero(now[i]), _or_zero(baseline[i]) + g) and now[i] is not None for i, g in granted.items()):
        return Verdict.APPLIED
    return Verdict.UNDECIDED


def _or_zero(amount: float | None) -> float:
    return 0.0 if amount is None else amount


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return _close(a, b)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=TOLERANCE)
