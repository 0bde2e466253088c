"""The grant ledger in Redis: every grant, its state, and every transition with its reason.

A grant is created at most once per idempotency key (``lua/create_grants.lua``
claims the key and writes the grant in one step: never check-then-insert), and
each state change writes state, history and the per-state index together
(``lua/transition.lua``). Only the caller whose transition succeeded acts on it,
which is what makes duplicate queue messages harmless.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from redis import Redis
from redis.client import Pipeline

from worker import redis_values as values
from worker.coalesce import same_request
from worker.creation import BatchResult, Mode, Planned, create_grants
from worker.effects import JsonObject, StepEffects, encode_effects
from worker.grant import (
    CANCELLABLE_STATES,
    MAYBE_APPLIED_FLAGS,
    CreateResult,
    Grant,
    GrantState,
    NewGrant,
    grant_from_hash,
)
from worker.keys import PROFILE_TTL_S, Keys
from worker.replication import NO_ACKS, NotReplicated, ReplicaAcks, confirm_read, run_confirmed
from worker.scripts import load_script


@dataclass(frozen=True)
class Transition:
    """One recorded state change."""

    at: float
    from_state: str
    to_state: str
    reason: str
    #: the operator's action the step was (``StepEffects.action``); "" for any other step.
    action: str = ""


@dataclass(frozen=True)
class ProfileSnapshot:
    """What is known of a (guild, user)'s profile: the last one WetBot returned, and when.

    ``seq`` moves whenever that knowledge changes (a new profile, an outcome
    left uncertain); ``stale`` says the inventory may differ from ``profile``
    in a way we cannot know (a grant ended ``unknown``). ``profile`` is None
    when no profile was ever recorded.
    """

    profile: JsonObject | None
    at: float
    seq: int = 0
    stale: bool = False


class Ledger:
    """Grant records in Redis under ``keys``.

    ``acks`` says how many replicas must confirm the writes a promise rests on (``worker.replication``):
    every create, and the transitions and releases called with ``confirm=True``; ``confirmed`` reads a
    grant as the replicas have it.
    """

    def __init__(self, redis: Redis, keys: Keys, *, acks: ReplicaAcks = NO_ACKS) -> None:
        self._redis = redis
        self._keys = keys
        self._acks = acks
        self._transition = load_script(redis, "transition")
        self._release = load_script(redis, "release_parked")

    @property
    def redis(self) -> Redis:
        """The Redis client the ledger writes to (for readers of its indexes: ``worker.grant_search``)."""
        return self._redis

    @property
    def keys(self) -> Keys:
        return self._keys

    # --- create & read -------------------------------------------------------
    def create(self, new: NewGrant) -> CreateResult:
        """Create the grant unless its idempotency key is taken; then return the existing one.

        A new grant is ``queued`` and due now: a worker's reconciler dispatches
        it within a second (``worker.schedule``). Producers use ``create_many``
        with ``worker.creation`` modes, which also write the queue message in
        the same step (no wait) or park the grant.
        """
        return self.create_many([Planned(new, Mode.SCHEDULE)]).results[0]

    def create_many(self, planned: Sequence[Planned], *, seen_key: str = "", counter: str = "") -> BatchResult:
        """Create a batch in one atomic step (see ``worker.creation``)."""
        return create_grants(self._redis, self._keys, planned, seen_key=seen_key, counter=counter, acks=self._acks)

    def get(self, grant_id: str) -> Grant | None:
        """The grant, or None when no grant has that id."""
        raw = values.raw_map(self._redis.hgetall(self._keys.grant(grant_id)))
        return grant_from_hash(raw) if raw else None

    def get_by_key(self, idempotency_key: str) -> Grant | None:
        """The grant that claimed ``idempotency_key``, if any."""
        grant_id = values.optional_raw(self._redis.get(self._keys.idempotency(idempotency_key)))
        return None if grant_id is None else self.get(values.text(grant_id))

    def history(self, grant_id: str) -> list[Transition]:
        """Every transition of the grant, oldest first."""
        entries = values.texts(self._redis.lrange(self._keys.history(grant_id), 0, -1))
        out: list[Transition] = []
        for raw in entries:
            data = json.loads(raw)
            out.append(Transition(data["at"], data["from"], data["to"], data["reason"], action=data.get("action", "")))
        return out

    def list_grants(
        self, state: GrantState | None = None, *, limit: int = 50, newest_first: bool = True
    ) -> list[Grant]:
        """Grants in ``state`` (or all), by time entered into that state."""
        index = self._keys.all_grants() if state is None else self._keys.state_index(state.value)
        ids = values.texts((self._redis.zrevrange if newest_first else self._redis.zrange)(index, 0, limit - 1))
        grants = (self.get(values.text(grant_id)) for grant_id in ids)
        return [grant for grant in grants if grant is not None]

    def counts(self) -> dict[GrantState, int]:
        """How many grants are in each state."""
        pipe = self._redis.pipeline(transaction=False)
        for state in GrantState:
            pipe.zcard(self._keys.state_index(state.value))
        return dict(zip(GrantState, (int(n) for n in pipe.execute()), strict=True))

    # --- change ----------------------------------------------------------------
    def transition(
        self,
        grant_id: str,
        to: GrantState,
        reason: str,
        *,
        expect: Collection[GrantState] = (),
        add_attempt: bool = False,
        add_failure: bool = False,
        reset_failures: bool = False,
        last_error: str | None = None,
        result: Mapping[str, float] | None = None,
        effects: StepEffects | None = None,
        confirm: bool = False,
    ) -> bool:
        """Move the grant to ``to`` if its state is one of ``expect`` (any when empty), in one atomic step.

        The step also keeps the grant's schedule (``Keys.due``): ``queued``,
        ``retrying`` and ``sending`` grants stay on it, every other state leaves
        it; ``effects`` adds what else changes with it. Returns True when the
        change is in place (made by this call, or by an earlier run of the same
        guarded step); False when the grant was missing or in another state
        (someone else acted first).

        ``confirm`` waits for the ledger's replicas to have the step (``worker.replication``).

        Raises:
          NotReplicated: with ``confirm``, the step moved the grant (or found it moved by an earlier run of
            the same step) but too few replicas confirmed it. A step that moved nothing returns False
            unconfirmed: nothing of it can be lost.
        """
        per_grant = None if result is None else {grant_id: {"result": json.dumps(dict(result))}}
        moved = self.transition_many(
            [grant_id],
            to,
            reason,
            expect=expect,
            add_attempt=add_attempt,
            add_failure=add_failure,
            reset_failures=reset_failures,
            last_error=last_error,
            per_grant=per_grant,
            effects=effects,
            confirm=confirm,
        )
        return grant_id in moved

    def transition_many(
        self,
        grant_ids: Sequence[str],
        to: GrantState,
        reason: str,
        *,
        expect: Collection[GrantState] = (),
        add_attempt: bool = False,
        add_failure: bool = False,
        reset_failures: bool = False,
        last_error: str | None = None,
        per_grant: Mapping[str, Mapping[str, str]] | None = None,
        effects: StepEffects | None = None,
        confirm: bool = False,
    ) -> list[str]:
        """``transition`` for every grant of one merged request (one guild and user), in one atomic step.

        Each grant is checked on its own; the shared effects (lease, slot,
        profile, hold) happen once when any grant moved. ``per_grant`` adds
        fields for single grants. Returns the ids whose change is in place
        (``StepEffects.all_or_nothing``: every id, or none). ``confirm`` as in ``transition``.
        """
        if not grant_ids:
            return []
        now = time.time()
        extra = effects or StepEffects()
        fields = dict(extra.fields)
        if last_error is not None:
            fields["last_error"] = last_error
        entry: dict[str, object] = {"from": "%FROM%", "to": to.value, "at": now, "reason": reason}
        if extra.action:
            entry["action"] = extra.action
        request: JsonObject = {
            **encode_effects(replace(extra, fields=fields)),
            "prefix": self._keys.prefix,
            "ids": list(grant_ids),
            "expect": [state.value for state in expect],
            "to": to.value,
            "now": repr(now),
            "entry": json.dumps(entry),
            "add_attempt": 1 if add_attempt else 0,
            "failures": "reset" if reset_failures else ("1" if add_failure else "0"),
            "profile_ttl": PROFILE_TTL_S,
        }
        if per_grant:
            request["per_grant"] = {grant_id: dict(values) for grant_id, values in per_grant.items()}
        first = grant_ids[0]
        acks = self._acks if confirm else NO_ACKS
        script_keys = [self._keys.grant(first), self._keys.history(first)]
        barrier = self._keys.replication_barrier()
        try:
            reply = values.items(
                run_confirmed(
                    self._redis, self._transition, acks, keys=script_keys, args=[json.dumps(request)], barrier=barrier
                )
            )
        except NotReplicated as exc:
            answered = values.items(exc.reply)
            if values.integer(answered[0]) in (1, 2) or len(answered) > 2:
                # The step is in place on the primary only; ``reply`` names the grants it moved there.
                raise NotReplicated(str(exc), values.texts(answered[2:])) from exc
            return []  # nothing moved: there is nothing to confirm
        return values.texts(reply[2:])

    def same_request_ids(self, grant: Grant) -> list[str]:
        """``grant`` and every other grant its last (merged) request carried that still waits in its state for
        that request's outcome (``worker.coalesce.same_request``): what an operator's decision moves together.
        """
        return [member.id for member in same_request(self._redis, self._keys, grant)]

    def cancel(self, grant_id: str, reason: str, *, version: int = -1, confirm: bool = False) -> bool:
        """Withdraw a grant nothing of which can have reached WetBot (``Grant.cancellable``); True when this
        call cancelled it.

        A grant ``retrying`` after an outcome that may have been applied (a read-back
        pending, or a resend under ``AMBIGUOUS_POLICY=retry``) is not cancellable:
        WetBot may hold its items. A queue message still on its way finds a final
        state and does nothing; a parked grant stays in its parked index, which
        ``release_parked`` skips. ``version`` as in ``StepEffects.expect_history``; ``confirm`` as in
        ``transition``.
        """
        return self.transition(
            grant_id,
            GrantState.CANCELLED,
            reason,
            expect=CANCELLABLE_STATES,
            effects=StepEffects(unless_flagged=MAYBE_APPLIED_FLAGS, expect_history=version),
            confirm=confirm,
        )

    def confirmed(self, grant_id: str) -> tuple[Grant | None, int]:
        """The grant and its version (history length) as ``acks.replicas`` replicas have them too
        (``worker.replication.confirm_read``): what an answer that writes nothing may rest on.

        Raises:
          NotReplicated: too few replicas confirmed; what the primary holds may not survive a failover.
        """

        def read(pipe: Pipeline) -> None:
            pipe.hgetall(self._keys.grant(grant_id))
            pipe.llen(self._keys.history(grant_id))

        found, version = confirm_read(self._redis, self._acks, self._keys.replication_barrier(), read)
        raw = values.raw_map(found)
        return (grant_from_hash(raw) if raw else None), values.integer(version)

    def release_parked(self, platform: str, external_id: str, user_id: str, *, confirm: bool = False) -> list[str]:
        """Move every grant parked for ``external_id`` to ``queued`` for ``user_id``; returns their ids.

        Atomic and once: a grant released by one caller is not released again by
        another. Released grants are due at once: a worker's reconciler dispatches them.

        Raises:
          NotReplicated: with ``confirm``, too few replicas confirmed the release — or, when it released
            nothing, the state it found (an earlier, unconfirmed run may have released them).
        """
        reason = f"{platform} user {external_id} linked to Discord user {user_id}"
        return self._release_index(self._keys.parked(platform, external_id), user_id, reason, confirm=confirm)

    def release_key_parked(self, guild_id: str, key_id: str) -> list[str]:
        """Move every grant parked because ``guild_id`` had no API key back to ``queued``; returns their ids.

        A worker that has the guild's key (fingerprint ``key_id``) calls it at start and then now and then,
        so grants resume whichever worker got the key first. Atomic and once, like ``release_parked``.
        """
        reason = f"an API key ({key_id}) for guild {guild_id} is configured; delivering"
        registry = (self._keys.key_parked_guilds(), guild_id)
        return self._release_index(self._keys.parked_for_key(guild_id), "", reason, registry=registry)

    def key_parked_guilds(self) -> list[str]:
        """Guilds with grants parked for want of a key (``release_key_parked`` empties the list)."""
        return sorted(
            values.text(guild) for guild in values.texts(self._redis.smembers(self._keys.key_parked_guilds()))
        )

    def _release_index(
        self,
        index: str,
        user_id: str,
        reason: str,
        *,
        registry: tuple[str, str] | None = None,
        confirm: bool = False,
    ) -> list[str]:
        now = time.time()
        entry = json.dumps(
            {"from": GrantState.PARKED.value, "to": GrantState.QUEUED.value, "at": now, "reason": reason}
        )
        keys = [index, self._keys.due()]
        args = [self._keys.prefix, user_id, repr(now), entry]
        if registry is not None:
            keys.append(registry[0])
            args.append(registry[1])
        acks = self._acks if confirm else NO_ACKS
        barrier = self._keys.replication_barrier()
        released = run_confirmed(self._redis, self._release, acks, keys=keys, args=args, barrier=barrier)
        return values.texts(released)

    # --- profiles -------------------------------------------------------------------
    def get_profile(self, guild_id: str, user_id: str) -> ProfileSnapshot | None:
        """What is known of the user's profile (``ProfileSnapshot``), None when nothing is."""
        raw = values.raw_map(self._redis.hgetall(self._keys.profile(guild_id, user_id)))
        if not raw:
            return None
        return ProfileSnapshot(
            profile=json.loads(raw[b"profile"]) if b"profile" in raw else None,
            at=float(raw.get(b"at", b"0")),
            seq=int(raw.get(b"seq", b"0")),
            stale=raw.get(b"stale") == b"1",
        )
