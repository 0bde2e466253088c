"""A WetBot profile, read strictly: the inventory as documented, or a problem saying what was not.

WetBot documents the profile's inventory as ``inventory: [{itemID: String,
amount: Number, fav: Boolean}]``, one entry per item, entries kept even at
amount 0. A read-back (``worker.verify``) decides "applied" or "not applied"
from those amounts, so a body in any other shape must never read as "no
entry": an inventory under another name, an ``itemId`` for ``itemID``, an
amount sent as a string, two entries for one item. Each of those is a
``ProfileProblem``, and the verdict is "cannot tell".

Fields beside the documented ones (in the profile or in an entry) are allowed:
a field WetBot adds one day changes nothing we read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Inventory", "ProfileProblem", "parse_inventory"]


@dataclass(frozen=True)
class Inventory:
    """The amounts of a profile's inventory entries, by item id (an item without an entry is absent)."""

    amounts: Mapping[str, float]

    def of(self, item_ids: Iterable[str]) -> dict[str, float | None]:
        """The amount of each of ``item_ids``; None where the inventory has no entry for it."""
        return {item: self.amounts.get(item) for item in dict.fromkeys(item_ids)}


@dataclass(frozen=True)
class ProfileProblem:
    """Why a body is not a profile in the documented shape (one line, no values that could be secret)."""

    what: str


def parse_inventory(profile: object) -> Inventory | ProfileProblem:
    """The inventory of ``profile`` (the ``response`` of WetBot's envelope), or what is wrong with it."""
    if not isinstance(profile, Mapping):
        return ProfileProblem(f"the profile is {_kind(profile)}, not an object")
    if "inventory" not in profile:
        others = ", ".join(sorted(str(key) for key in profile)[:8]) or "none"
        return ProfileProblem(f"the profile has no 'inventory' field (fields: {others})")
    entries = profile["inventory"]
    if not isinstance(entries, list):
        return ProfileProblem(f"'inventory' is {_kind(entries)}, not a list")
    amounts: dict[str, float] = {}
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            return ProfileProblem(f"inventory[{index}]: {problem}")
        item_id, amount = entry["itemID"], entry["amount"]
        if item_id in amounts:
            return ProfileProblem(f"inventory[{index}]: a second entry for item {item_id!r}")
        amounts[item_id] = float(amount)
    return Inventory(amounts)


def _entry_problem(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return f"the entry is {_kind(entry)}, not an object"
    if "itemID" not in entry:
        fields = ", ".join(sorted(str(key) for key in entry)[:8]) or "none"
        return f"no 'itemID' field (fields: {fields})"
    item_id = entry["itemID"]
    if not isinstance(item_id, str) or not item_id:
        return f"'itemID' is {_kind(item_id)}, not a non-empty string"
    if "amount" not in entry:
        return f"no 'amount' field for item {item_id!r}"
    amount = entry["amount"]
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
        return f"'amount' of item {item_id!r} is {_kind(amount)}, not a finite number"
    if "fav" in entry and not isinstance(entry["fav"], bool):
        return f"'fav' of item {item_id!r} is {_kind(entry['fav'])}, not a boolean"
    return ""


def _kind(value: object) -> str:
    """How a JSON value reads in a problem: its type, never its content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
