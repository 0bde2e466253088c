"""Judging an outcome that may have been applied, by reading the user's profile back.

Before each request the worker stores the granted items' amounts from the
user's last recorded profile (the *baseline*; ``Grant.baseline``) and the
snapshot's ``seq``. The baseline is used only while it is still the last thing
known of the member: an outcome left ``unknown`` marks the snapshot stale (the
request may or may not be in it) and any newer profile moves ``seq``; then a
read-back cannot decide (``Deliverer._judged``). Requests to
one user never overlap (the user lease), and while a grant waits for its
read-back the user's other grants wait too (the verify hold), so between the
baseline and the read-back only this grant's request — and whatever the member
or other bots did meanwhile — can have changed those amounts.

* every item at baseline + granted amount → applied (``delivered``, "verified by read-back");
* every item exactly at baseline (an entry that did not exist still does not) → not applied: send again;
* anything else → ``unknown``, for an operator.

Without a baseline (no profile of the user recorded yet) the member is taken
to have had no entry for the items: WetBot keeps inventory entries even at
amount 0, so an entry that does not exist was never touched, and one that
holds exactly the granted amount was made by this grant.

How it can be fooled, and so what it cannot promise: if between the request
and the read-back the member (or someone else) changed one of these items by
exactly the granted amount in the other direction — spent exactly what was
granted — an applied grant looks not applied and is sent again (a duplicate);
if they gained exactly the granted amount of every item while the request was
not applied, a lost grant looks delivered. A request WetBot applies only after
the read-back (it held it longer than ``WETBOT_TIMEOUT`` and a verify delay)
also looks not applied. Without a baseline, a member who already held exactly
the granted amount of every item from elsewhere makes a request that was not
applied look applied. It costs one rate slot per ambiguous outcome.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from worker.grant import GrantItem

#: Amounts are compared with this tolerance (WetBot adds with decimals; JSON carries floats).
TOLERANCE = 1e-9

#: item id -> amount in the inventory, None when the inventory has no entry for it.
Amounts = dict[str, float | None]


class Verdict(StrEnum):
    """What a read-back shows about the last request."""

    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    UNDECIDED = "undecided"


def inventory_amounts(profile: Mapping[str, Any] | None, item_ids: Iterable[str]) -> Amounts | None:
    """The amount of each item in ``profile``'s inventory (None = no entry); None without a profile."""
    if profile is None:
        return None
    wanted = list(dict.fromkeys(item_ids))
    found: Amounts = dict.fromkeys(wanted)
    inventory = profile.get("inventory")
    if isinstance(inventory, list):
        for entry in inventory:
            if isinstance(entry, Mapping) and entry.get("itemID") in found:
                amount = entry.get("amount")
                if isinstance(amount, int | float) and not isinstance(amount, bool):
                    item = str(entry["itemID"])
                    found[item] = (found[item] or 0.0) + float(amount)
    return found


def judge(items: Iterable[GrantItem], baseline: Amounts | None, now: Amounts) -> Verdict:
    """Compare the amounts read back (``now``) with ``baseline`` for the granted ``items``."""
    granted: dict[str, float] = {}
    for item in items:
        granted[item.item_id] = granted.get(item.item_id, 0.0) + item.amount
    if baseline is None:
        baseline = dict.fromkeys(granted)
    if all(_same(now.get(i), baseline.get(i)) for i in granted):
        return Verdict.NOT_APPLIED
    if all(now.get(i) is not None and _close(now[i] or 0.0, (baseline.get(i) or 0.0) + g) for i, g in granted.items()):
        return Verdict.APPLIED
    return Verdict.UNDECIDED


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return _close(a, b)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=TOLERANCE)
