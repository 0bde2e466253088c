"""The typed step effects reach ``lua/transition.lua`` as they were meant: encoding them, and reading the
encoding back after Lua's cjson decoded and re-encoded it (what the script sees), gives the same effects."""

from __future__ import annotations

import json

import pytest
from redis import Redis

from worker.effects import (
    HoldChange,
    LeaseRelease,
    LeaseSet,
    Park,
    ProfileWrite,
    SlotSettle,
    StepEffects,
    decode_effects,
    encode_effects,
)

EVERY_PART = StepEffects(
    attempt="run-1",
    unless_flagged=("verify", "maybe_applied"),
    begin="run-2",
    fields={"verify": "1", "baseline": '{"gem": 2.5}'},
    del_fields=("solo",),
    due_in_s=26.05,
    lease_release=LeaseRelease("p:lease:g:u", "grant:run-1"),
    lease_set=LeaseSet("p:lease:g:u", "grant:run-2", 25_000),
    slot=SlotSettle("p:rate:k", "slot-1", "p:rate:k:pending", 61_000),
    profile=ProfileWrite("p:profile:g:u", '{"inventory": []}', 1_765_111_111.123456, 90 * 24 * 3600),
    hold=HoldChange.SET,
    park=Park("p:parked-key:g", "p:parked-key-guilds", "g"),
    all_or_nothing=True,
    possible_duplicate=True,
    expect_history=3,
    action="replay",
)

CASES = [
    pytest.param(StepEffects(), id="none"),
    pytest.param(EVERY_PART, id="every-part"),
    pytest.param(StepEffects(hold=HoldChange.CLEAR, due_in_s=0.5, expect_history=0), id="clear-hold"),
]


@pytest.mark.parametrize("effects", CASES)
def test_effects_survive_their_json_encoding(effects: StepEffects) -> None:
    assert decode_effects(json.loads(json.dumps(encode_effects(effects)))) == effects


@pytest.mark.parametrize("effects", CASES)
def test_effects_survive_lua_cjson_as_the_script_reads_them(redis: Redis, effects: StepEffects) -> None:
    # What lua/transition.lua decodes, written back out by Lua itself.
    echoed = redis.eval("return cjson.encode(cjson.decode(ARGV[1]))", 0, json.dumps(encode_effects(effects)))
    assert isinstance(echoed, bytes)
    assert decode_effects(json.loads(echoed)) == effects


def test_a_member_of_the_wrong_type_is_refused() -> None:
    encoded = encode_effects(EVERY_PART)
    encoded["lease_set"] = {"key": "p:lease:g:u", "value": "x", "px": "25000"}
    with pytest.raises(TypeError, match="px"):
        decode_effects(encoded)
