"""What one ledger step changes besides the grants' state: one typed value per kind of effect.

A step (``Ledger.transition_many``, run by ``lua/transition.lua``) may also release or set the user's
lease, re-stamp a rate slot, store a profile snapshot, set or clear the user's verify hold, and add the
grants to a parked index. Each of those is a frozen dataclass here, and ``StepEffects`` gathers them;
``encode_effects`` turns them into the JSON members the script reads (``decode_effects`` reads them back,
so a test can check that nothing is lost on the way).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "HoldChange",
    "JsonObject",
    "LeaseRelease",
    "LeaseSet",
    "Park",
    "ProfileWrite",
    "SlotSettle",
    "StepEffects",
    "decode_effects",
    "encode_effects",
]

#: A JSON object as WetBot sends it (a profile) or as a script reads it.
JsonObject = dict[str, object]


class HoldChange(StrEnum):
    """What a step does to the user's verify hold (the grant whose read-back the user's others wait for)."""

    #: leave it (a step out of the moving states still drops a hold its grant had).
    KEEP = ""
    #: give it to the first grant the step moved.
    SET = "set"
    #: drop it if a grant the step moved has it.
    CLEAR = "clear"


@dataclass(frozen=True)
class LeaseRelease:
    """Delete the user's lease ``key`` if it still holds ``value`` (the run's own)."""

    key: str
    value: str


@dataclass(frozen=True)
class LeaseSet:
    """(Re)set the user's lease ``key`` to ``value`` for ``px`` ms; the step happens only while it holds ``value``."""

    key: str
    value: str
    px: int


@dataclass(frozen=True)
class SlotSettle:
    """A rate slot whose answer is back: ``member`` of window ``key`` counts from now and leaves ``pending``.

    ``pending`` is "" when the request got no answer: the slot stays pending, since WetBot may still count
    the request (``SlidingWindowLimiter.settle_ref``). ``ttl_ms`` is the window's expiry when it has none
    (``worker.limiter``).
    """

    key: str
    member: str
    pending: str
    ttl_ms: int


@dataclass(frozen=True)
class ProfileWrite:
    """A profile snapshot to store: the profile's JSON, read at ``at`` (epoch seconds), kept ``ttl`` seconds.

    ``key`` is informational: the script derives the snapshot's key from the grants' guild and user. ``at``
    travels as text: a Lua number keeps only 14 digits (cjson), less than a timestamp's microseconds.
    """

    key: str
    json: str
    at: float
    ttl: int


@dataclass(frozen=True)
class Park:
    """The parked index (``set``) the grants join, and the registry set its ``name`` is added to."""

    set: str
    registry: str
    name: str


@dataclass(frozen=True)
class StepEffects:
    """What else one grant step changes in the same atomic script (``lua/transition.lua``)."""

    #: the run token the grant's last request must carry; a second run of the step is then a no-op.
    attempt: str = ""
    #: flags (fields set to "1") that forbid the step.
    unless_flagged: tuple[str, ...] = ()
    #: the run token of the request this step starts (it becomes the grant's attempt; a resent step is a no-op).
    begin: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    del_fields: tuple[str, ...] = ()
    #: seconds until the reconciler looks at a queued/retrying/sending grant again.
    due_in_s: float = 0.0
    lease_release: LeaseRelease | None = None
    lease_set: LeaseSet | None = None
    slot: SlotSettle | None = None
    profile: ProfileWrite | None = None
    hold: HoldChange = HoldChange.KEEP
    park: Park | None = None
    #: move none of the grants unless all can move (a merged request starting: all its grants go, or none).
    all_or_nothing: bool = False
    possible_duplicate: bool = False
    #: -1, or how many history entries the (first) grant must have for the step to happen: an operator's
    #: action names the grant as they saw it, so the same form sent again after it moved does nothing.
    expect_history: int = -1
    #: the operator's action this step is ("" for none), kept in its history entry (``Transition.action``) so
    #: a repeat of the action can tell it was done without reading the entry's text.
    action: str = ""


def encode_effects(effects: StepEffects) -> JsonObject:
    """The members of ``lua/transition.lua``'s JSON request that ``effects`` sets (absent parts are left out)."""
    out: JsonObject = {
        "attempt": effects.attempt,
        "begin": effects.begin,
        "unless_flagged": list(effects.unless_flagged),
        "fields": dict(effects.fields),
        "del_fields": list(effects.del_fields),
        "due_ms": max(0, int(effects.due_in_s * 1000)),
        "hold": effects.hold.value,
        "possible_duplicate": 1 if effects.possible_duplicate else 0,
        "all_or_nothing": 1 if effects.all_or_nothing else 0,
        "expect_history": effects.expect_history,
        "action": effects.action,
    }
    if effects.lease_release is not None:
        out["lease_release"] = {"key": effects.lease_release.key, "value": effects.lease_release.value}
    if effects.lease_set is not None:
        lease = effects.lease_set
        out["lease_set"] = {"key": lease.key, "value": lease.value, "px": lease.px}
    if effects.slot is not None:
        slot = effects.slot
        out["slot"] = {"key": slot.key, "member": slot.member, "pending": slot.pending, "ttl_ms": slot.ttl_ms}
    if effects.profile is not None:
        profile = effects.profile
        out["profile"] = {"key": profile.key, "json": profile.json, "at": repr(profile.at), "ttl": profile.ttl}
    if effects.park is not None:
        out["park"] = {"set": effects.park.set, "registry": effects.park.registry, "name": effects.park.name}
    return out


def decode_effects(request: Mapping[str, object]) -> StepEffects:
    """The ``StepEffects`` a request (as ``encode_effects`` wrote it, possibly through Lua's cjson) carries.

    Strict: a member of the wrong type raises ``TypeError``. cjson writes an empty Lua table as ``{}``, so an
    empty object stands for an empty list too.
    """
    fields = _part(request, "fields") or {}
    lease_release = _part(request, "lease_release")
    lease_set = _part(request, "lease_set")
    slot = _part(request, "slot")
    profile = _part(request, "profile")
    park = _part(request, "park")
    return StepEffects(
        attempt=_str_of(request, "attempt"),
        unless_flagged=_strs_of(request, "unless_flagged"),
        begin=_str_of(request, "begin"),
        fields={name: _str_of(fields, name) for name in fields},
        del_fields=_strs_of(request, "del_fields"),
        due_in_s=_number(request, "due_ms") / 1000,
        lease_release=None
        if lease_release is None
        else LeaseRelease(_str_of(lease_release, "key"), _str_of(lease_release, "value")),
        lease_set=None
        if lease_set is None
        else LeaseSet(_str_of(lease_set, "key"), _str_of(lease_set, "value"), int(_number(lease_set, "px"))),
        slot=None
        if slot is None
        else SlotSettle(
            _str_of(slot, "key"),
            _str_of(slot, "member"),
            _str_of(slot, "pending"),
            int(_number(slot, "ttl_ms")),
        ),
        profile=None
        if profile is None
        else ProfileWrite(
            _str_of(profile, "key"),
            _str_of(profile, "json"),
            float(_str_of(profile, "at")),
            int(_number(profile, "ttl")),
        ),
        hold=HoldChange(_str_of(request, "hold")),
        park=None if park is None else Park(_str_of(park, "set"), _str_of(park, "registry"), _str_of(park, "name")),
        all_or_nothing=_number(request, "all_or_nothing") == 1,
        possible_duplicate=_number(request, "possible_duplicate") == 1,
        expect_history=int(_number(request, "expect_history")),
        action=_str_of(request, "action"),
    )


def _str_of(data: Mapping[str, object], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is {type(value).__name__}, not a string")
    return value


def _number(data: Mapping[str, object], name: str) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} is {type(value).__name__}, not a number")
    return float(value)


def _strs_of(data: Mapping[str, object], name: str) -> tuple[str, ...]:
    value = data[name]
    if value == {}:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{name} is not a list of strings")
    return tuple(str(item) for item in value)


def _part(data: Mapping[str, object], name: str) -> Mapping[str, object] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} is {type(value).__name__}, not an object")
    return {str(key): item for key, item in value.items()}
