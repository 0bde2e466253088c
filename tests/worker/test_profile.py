"""The profile is read strictly: the documented inventory, or a problem that says what is not."""

from __future__ import annotations

import math
from typing import Any

import pytest

from worker.profile import Inventory, ProfileProblem, parse_inventory


def entry(item: Any = "gem", amount: Any = 5, **extra: Any) -> dict[str, Any]:
    return {"itemID": item, "amount": amount, "fav": False, **extra}


def test_the_documented_shape_gives_each_entry_and_none_for_no_entry() -> None:
    parsed = parse_inventory({"userID": "1", "inventory": [entry(), entry("coin", 0), entry("x", -2.5)]})
    assert isinstance(parsed, Inventory)
    assert parsed.of(["gem", "coin", "x", "absent"]) == {"gem": 5.0, "coin": 0.0, "x": -2.5, "absent": None}


def test_fields_beside_the_documented_ones_change_nothing() -> None:
    parsed = parse_inventory({"inventory": [entry(note="new field")], "badge": {"a": 1}})
    assert isinstance(parsed, Inventory) and parsed.amounts == {"gem": 5.0}


def test_an_empty_inventory_is_a_real_answer() -> None:
    parsed = parse_inventory({"inventory": []})
    assert isinstance(parsed, Inventory) and parsed.of(["gem"]) == {"gem": None}


@pytest.mark.parametrize(
    ("profile", "says"),
    [
        ([entry()], "not an object"),
        ({"items": [entry()]}, "no 'inventory' field (fields: items)"),
        ({"inventory": {"gem": 5}}, "'inventory' is an object, not a list"),
        ({"inventory": [{"itemId": "gem", "amount": 5}]}, "inventory[0]: no 'itemID' field (fields: amount, itemId)"),
        ({"inventory": [entry(item="")]}, "'itemID' is a string, not a non-empty string"),
        ({"inventory": [entry(item=7)]}, "'itemID' is a number"),
        ({"inventory": [{"itemID": "gem"}]}, "no 'amount' field"),
        ({"inventory": [entry(amount="5")]}, "'amount' of item 'gem' is a string"),
        ({"inventory": [entry(amount=True)]}, "is a boolean"),
        ({"inventory": [entry(amount=math.nan)]}, "a non-finite number"),
        ({"inventory": [entry(amount=None)]}, "is null"),
        ({"inventory": [entry(fav="yes")]}, "'fav' of item 'gem' is a string"),
        ({"inventory": [entry(), entry(amount=1)]}, "inventory[1]: a second entry for item 'gem'"),
        ({"inventory": ["gem"]}, "inventory[0]: the entry is a string"),
        (None, "the profile is null"),
    ],
)
def test_any_other_shape_is_a_problem_never_no_entry(profile: Any, says: str) -> None:
    parsed = parse_inventory(profile)
    assert isinstance(parsed, ProfileProblem), parsed
    assert says in parsed.what


def test_a_problem_names_types_never_values() -> None:
    parsed = parse_inventory({"inventory": [entry(amount="secret-looking-value")]})
    assert isinstance(parsed, ProfileProblem) and "secret-looking-value" not in parsed.what
