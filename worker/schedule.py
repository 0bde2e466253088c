"""The ledger's schedule: which grant should move when, and the reconciler that keeps them moving.

Every grant that should move (``queued``, ``retrying``, ``sending``) has an entry
in ``Keys.due``: milliseconds on Redis' clock when it is looked at next. Queue
messages are only hints. A message carries a dispatch token; the grant keeps
the token of its one live message, so an older copy (a Dramatiq redelivery, a
duplicate from a retried command) finds a mismatch and does nothing, before it
takes a lease or a rate slot.

The reconciler (one thread per worker process, all safe to run at once) turns
due entries into fresh messages: a wait that ended (backoff, rate slot, key
pause), a message lost with Redis, a delay queue dropped by Dramatiq, a killed
worker whose lease ran out, an operator command that died half-way. Times are
Redis' own, so skew between hosts changes nothing. A grant gets at most one
message per ``DISPATCH_TTL_S`` unless it moved in between: no message storms.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import dramatiq
from redis import Redis, RedisError

from worker.broker import DISPATCH_TTL_S, QUEUE_NAME, encoded_message
from worker.keys import WAKE_TOKENS_MAX, Keys, wake_key
from worker.scripts import load_script

logger = logging.getLogger("wetbot_rewards.schedule")

#: Seconds between reconciler passes in each worker process.
RECONCILE_INTERVAL_S = 1.0
#: Grants looked at per script call (a pass loops while a batch comes back full).
BATCH = 200
#: Seconds between checks that every moving grant is on the schedule (``Schedule.adopt_unscheduled``).
ADOPT_INTERVAL_S = 300.0
#: States whose grants must be on the schedule.
MOVING_STATES = ("queued", "retrying", "sending")


@dataclass(frozen=True)
class Claim:
    """What ``Schedule.claim`` found: ``status`` is claimed, stale, final, missing or busy."""

    status: str

    @property
    def claimed(self) -> bool:
        return self.status == "claimed"


class Schedule:
    """Reads and changes ``Keys.due`` through its scripts."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._due_ids = load_script(redis, "due_ids")
        self._dispatch = load_script(redis, "dispatch_due")
        self._claim = load_script(redis, "claim")
        self._reschedule = load_script(redis, "reschedule")
        self._adopt = load_script(redis, "adopt")

    def now_ms(self) -> int:
        """Redis' clock in milliseconds."""
        seconds, micros = cast(tuple[int, int], self._redis.time())
        return int(seconds) * 1000 + int(micros) // 1000

    def due_ids(self, *, limit: int = BATCH) -> list[str]:
        """Ids of grants due now (Redis' clock), earliest first (``lua/due_ids.lua``)."""
        ids = cast(list[bytes], self._due_ids(keys=[self._keys.due()], args=[limit]))  # one round trip
        return [grant_id.decode() for grant_id in ids]

    def due_in_s(self, grant_id: str) -> float | None:
        """Seconds until ``grant_id`` is due (negative when overdue), None when it is not scheduled."""
        score = cast(float | None, self._redis.zscore(self._keys.due(), grant_id))
        return None if score is None else (float(score) - self.now_ms()) / 1000

    def next_due_in_s(self) -> float | None:
        """Seconds until the earliest entry is due, None when nothing is scheduled."""
        first = cast(list[tuple[bytes, float]], self._redis.zrange(self._keys.due(), 0, 0, withscores=True))
        return None if not first else (float(first[0][1]) - self.now_ms()) / 1000

    def dispatch_due(self, *, write_messages: bool = True, limit: int = BATCH) -> list[tuple[str, str]]:
        """Give each due grant a new dispatch token (and its queue message); returns ``(grant id, token)``.

        ``write_messages=False`` only hands out the tokens, for tests that run
        ``Deliverer.deliver`` themselves.
        """
        candidates = []
        for grant_id in self.due_ids(limit=limit):
            token = uuid.uuid4().hex
            message_id, body = encoded_message(grant_id, token)
            candidates.append({"id": grant_id, "token": token, "msg_id": message_id, "body": body})
        if not candidates:
            return []
        request = {
            "prefix": self._keys.prefix,
            "queue": f"{self._keys.dramatiq_namespace}:{QUEUE_NAME}",
            "wake": wake_key(self._keys.dramatiq_namespace, QUEUE_NAME),
            "wake_max": WAKE_TOKENS_MAX,
            "ttl_ms": int(DISPATCH_TTL_S * 1000),
            "write": 1 if write_messages else 0,
            "candidates": candidates,
        }
        out = cast(list[list[bytes]], self._dispatch(keys=[self._keys.due()], args=[json.dumps(request)]))
        return [(grant_id.decode(), token.decode()) for grant_id, token in out]

    def claim(self, grant_id: str, token: str, run: str, *, lease_px: int, busy_ms: int) -> Claim:
        """Start a run of ``grant_id`` for the message carrying ``token``: see ``lua/claim.lua``."""
        request = {
            "prefix": self._keys.prefix,
            "id": grant_id,
            "token": token,
            "run": run,
            "lease_px": lease_px,
            "busy_ms": busy_ms,
        }
        reply = cast(list[Any], self._claim(keys=[self._keys.grant(grant_id), self._keys.due()],
                                            args=[json.dumps(request)]))  # fmt: skip
        return Claim(_text(reply[0]))

    def adopt_unscheduled(self) -> int:
        """Put every queued, retrying or sending grant that is missing from the schedule on it, due now.

        The schedule holds every moving grant by construction; this is the net
        under that promise (grants queued by an older version, a key restored by
        hand). Returns how many were adopted.
        """
        adopted = 0
        for state in MOVING_STATES:
            index = self._keys.state_index(state)
            start = 0
            while start < int(cast(int, self._redis.zcard(index))):
                adopted += int(cast(int, self._adopt(
                    keys=[index, self._keys.due()], args=[self._keys.prefix, state, start, start + BATCH - 1]
                )))  # fmt: skip
                start += BATCH
        return adopted

    def reschedule(self, grant_id: str, lease_key: str, lease_value: str, delay_s: float) -> bool:
        """Hand a claimed grant back: due again in ``delay_s``, the run's lease released (``lua/reschedule.lua``)."""
        moved = self._reschedule(
            keys=[self._keys.grant(grant_id), self._keys.due(), lease_key],
            args=[grant_id, lease_value, max(0, int(delay_s * 1000))],
        )
        return int(cast(int, moved)) == 1


class Reconciler(dramatiq.Middleware):
    """Runs ``Schedule.dispatch_due`` every ``interval_s`` in a worker process's own thread."""

    def __init__(
        self,
        schedule: Schedule,
        *,
        interval_s: float = RECONCILE_INTERVAL_S,
        release_key_parked: Callable[[], int] | None = None,
    ) -> None:
        self._schedule = schedule
        self._release_key_parked = release_key_parked
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_adopt = 0.0
        while not self._stop.wait(self._interval_s):
            if time.monotonic() >= next_adopt and self._adopt_once():
                next_adopt = time.monotonic() + ADOPT_INTERVAL_S
            self.reconcile_once()

    def _adopt_once(self) -> bool:
        """``Schedule.adopt_unscheduled`` and the release of key-parked grants whose key this worker has, logged;
        False when Redis did not answer (try again next pass)."""
        try:
            adopted = self._schedule.adopt_unscheduled()
            if self._release_key_parked is not None:
                self._release_key_parked()
        except RedisError as exc:
            logger.warning("reconciler: cannot check the schedule, Redis unavailable (%s)", exc)
            return False
        if adopted:
            logger.warning("reconciler: %d moving grant(s) were not on the schedule; they are now", adopted)
        return True

    def reconcile_once(self) -> int:
        """Dispatch everything due now; returns how many messages were written. Never raises for Redis."""
        written = 0
        try:
            while True:
                batch = self._schedule.dispatch_due()
                written += len(batch)
                if len(batch) < BATCH:
                    break
        except RedisError as exc:
            if not self._failing:
                logger.warning("reconciler: Redis unavailable (%s); grants wait until it answers", exc)
            self._failing = True
            return written
        if self._failing:
            logger.warning("reconciler: Redis answers again; due grants dispatched")
            self._failing = False
        return written


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
