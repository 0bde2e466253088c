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

**Backpressure: a backlog of any size drains at its key's pace.** The queue is
FIFO and shared; were every due grant dispatched, a backlog that takes longer
than ``DISPATCH_TTL_S`` to read would have each grant's live message replaced
by a copy before a thread reached it, and the queue would only grow (20,000
grants for one key: 235 runs per delivered grant, 11 % of the key's rate).
Three rules, each inside the dispatch script (``lua/dispatch_due.lua``):

- **A cap per guild** (a guild has one key): at most ``Backpressure.cap``
  grants in flight, ``INFLIGHT_PER_SLOT`` x the larger of the key's limit and
  the worker's threads. In flight (``Keys.inflight``, ``lua/inflight.lua``)
  is from a dispatch until the grant settles: its message waiting to be read,
  its run waiting for a turn in the key's line (a hand-back), its request
  out, a wait to be sent again (a 429, a backoff, a read-back). A grant in
  flight comes back whatever the cap, so it keeps its place in the backlog
  (a killed worker's grant too), and the cap bounds the queue and the line
  together. A producer writes a message itself only below
  ``CREATE_INFLIGHT_CAP``.
- **Overflow comes due at the key's pace**: a new due grant over the cap is
  not dispatched but given a seat in the guild's frontier (``Keys.overflow``):
  the key's next window with a seat free (``rate.limit`` seats a window,
  ``Backpressure.window_ms`` apart: the limiter's window, ``OVERFLOW_WINDOW_MARGIN_S``
  longer) after the windows the grants in flight take, never further than the
  guild's moving grants could take. A window's grants come due together, when
  the key's slots free together, and go up to twice the cap (the last window's
  grants may still wait for their turns; beyond, a seated grant is seated
  again, at the back). With coalescing a member needs one seat: its
  other grants come due with the seated one (or, when one is already in flight,
  a TTL later, by when it has carried them). One write per grant, not a look
  per pass, so the reconciler's passes stay small however long the backlog.
- **Only a lost message is written again**: the grant keeps its live
  message's id (``dispatch_msg``). Past ``DISPATCH_TTL_S`` unclaimed, a message
  still in Dramatiq's messages hash and in no worker's fetched set
  (``__acks__``) is unread, behind others in the queue: the grant is looked at
  again a TTL later, with no copy (for ``UNREAD_TRUST_S`` at most). A message
  gone from the hash (lost with Redis, acked without running) or fetched and
  not claimed (a killed worker's prefetch) is written again, as before.

Another guild's grant waits behind at most the caps of the guilds ahead of it,
so isolation holds whatever one guild has queued (``bench/backlog.py``).

A reconciler sleeps until the earliest entry is due, at most
``RECONCILE_INTERVAL_S``; a hand-back made in its own process for sooner wakes
it (``Wakeup``). So a grant handed back for its turn at a rate slot (the key's
line, ``worker.limiter``) is dispatched within milliseconds of that turn, and no
worker thread sleeps through another key's traffic.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import dramatiq
from redis import Redis, RedisError

from config.settings import RateLimit
from worker import redis_values as values
from worker.broker import DISPATCH_TTL_S, QUEUE_NAME, encoded_message
from worker.grant import MOVING_STATES
from worker.keys import WAKE_TOKENS_MAX, Keys, wake_key
from worker.limiter import effective_window_s
from worker.scripts import load_script

logger = logging.getLogger("wetbot_rewards.schedule")

#: Seconds between reconciler passes in each worker process.
RECONCILE_INTERVAL_S = 1.0
#: Shortest gap between two reconciler passes, in seconds (a grant due "now" again is not a busy loop).
MIN_PASS_GAP_S = 0.002
#: Grants looked at per script call (a pass loops while a batch comes back full).
BATCH = 200
#: Seconds between checks that every moving grant is on the schedule (``Schedule.adopt_unscheduled``).
ADOPT_INTERVAL_S = 300.0
#: Grants a guild may have in flight (dispatched, not settled), per request its key allows in a window or per
#: worker thread, whichever is more (``Backpressure.cap``): two rounds of either, so neither the key nor the
#: threads wait for a pass, a queue that holds them is read in milliseconds (far within ``DISPATCH_TTL_S``) and
#: the key's line holds at most two windows of turns.
INFLIGHT_PER_SLOT = 2
#: Worker threads a ``Backpressure`` assumes until its reconciler's worker says (the Procfile's ``--threads``).
DEFAULT_WORKER_THREADS = 4
#: Grants of a guild in flight up to which a producer writes a new grant's message itself
#: (``worker.creation``, ``Mode.ENQUEUE``): the cap of the default 10 per 60 s. Beyond, the grant is due at
#: once without one, and a reconciler dispatches it within its own cap or pushes it to its key's pace.
CREATE_INFLIGHT_CAP = INFLIGHT_PER_SLOT * 10
#: Seconds an unread message (still queued, in no worker's fetched set) is trusted to be read before the
#: reconciler writes a copy anyway: a net under the message-id check, for a message that is in Dramatiq's
#: messages hash but in neither its queue nor a fetched set (nothing known leaves one so).
UNREAD_TRUST_S = 300.0
#: Seconds a key's windows of overflow seats are apart beyond its limiter's window. A slot frees a window after
#: its answer came back, and a window's requests answer over some milliseconds; a window's grants coming due
#: before their slots free would drift earlier window by window, until each took a turn in the key's line and
#: ran twice (one a little early only sleeps: ``worker.timings.Timings.max_inline_wait_s``).
OVERFLOW_WINDOW_MARGIN_S = 0.02


@dataclass(frozen=True)
class Backpressure:
    """How many grants in flight the reconciler lets one guild have, and the pace its overflow comes due at.

    ``rate`` is the key's ``WETBOT_RATE_LIMIT`` (each guild has one key, every key the same limit);
    ``threads`` the worker threads of the reconciler's process.
    """

    rate: RateLimit
    threads: int = DEFAULT_WORKER_THREADS
    #: ``WETBOT_COALESCE``: a member's pending grants share one request, so they share one overflow seat.
    coalesce: bool = True

    @property
    def cap(self) -> int:
        return INFLIGHT_PER_SLOT * max(self.rate.limit, self.threads)

    @property
    def window_ms(self) -> float:
        """Milliseconds between two windows of overflow seats (``rate.limit`` seats each): the limiter's window,
        ``OVERFLOW_WINDOW_MARGIN_S`` longer."""
        return (effective_window_s(self.rate) + OVERFLOW_WINDOW_MARGIN_S) * 1000


@dataclass(frozen=True)
class Dispatched:
    """One ``Schedule.dispatch_batch``: the ``(grant id, token)`` pairs dispatched, the seconds until the
    earliest entry that was not due (None: nothing else is scheduled), and whether the batch was full."""

    dispatched: list[tuple[str, str]]
    next_due_in_s: float | None
    full: bool


class Wakeup:
    """Wakes this process's reconciler early when a grant handed back here is due before its next pass.

    The reconciler sleeps until the earliest entry on the schedule is due (at
    most ``RECONCILE_INTERVAL_S``); a hand-back made meanwhile for sooner than
    that would otherwise wait for the pass. Hand-backs made by other processes
    wake those processes' reconcilers; any reconciler dispatches any due grant.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        # inf while a pass runs: a hand-back then may not be in what the pass read, so it wakes the next sleep.
        self._next_pass_at = math.inf

    def due_in(self, delay_s: float) -> None:
        """Something is due in ``delay_s``: wake the reconciler if it would sleep past that."""
        with self._lock:
            if time.monotonic() + delay_s < self._next_pass_at:
                self._event.set()

    def sleep(self, seconds: float) -> None:
        """Sleep until the next pass: ``seconds``, or less when ``due_in`` says so (or ``wake`` is called)."""
        with self._lock:
            self._next_pass_at = time.monotonic() + seconds
        self._event.wait(seconds)
        with self._lock:
            self._event.clear()
            self._next_pass_at = math.inf

    def wake(self) -> None:
        self._event.set()


@dataclass(frozen=True)
class Claim:
    """What ``Schedule.claim`` found: ``status`` is claimed, stale, final, missing or busy."""

    status: str

    @property
    def claimed(self) -> bool:
        return self.status == "claimed"


class Schedule:
    """Reads and changes ``Keys.due`` through its scripts.

    ``backpressure`` caps each guild's grants in flight (see the module docstring); None dispatches every
    due grant (tests that drive the deliverer themselves).
    """

    def __init__(self, redis: Redis, keys: Keys, *, backpressure: Backpressure | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self.backpressure = backpressure
        #: wakes the reconciler sharing this schedule when a hand-back is due before its next pass.
        self.wakeup = Wakeup()
        self._due_ids = load_script(redis, "due_ids")
        self._dispatch = load_script(redis, "dispatch_due")
        self._claim = load_script(redis, "claim")
        self._reschedule = load_script(redis, "reschedule")
        self._adopt = load_script(redis, "adopt")

    def now_ms(self) -> int:
        """Redis' clock in milliseconds."""
        return values.redis_time(self._redis).ms

    def _due(self, limit: int) -> tuple[list[str], float | None]:
        """Ids of grants due now (Redis' clock), earliest first (``lua/due_ids.lua``), and the seconds until the
        earliest entry not due yet (None: there is none)."""
        ids, next_ms = values.items(self._due_ids(keys=[self._keys.due()], args=[limit]))
        after_ms = values.integer(next_ms)
        return values.texts(ids), None if after_ms < 0 else after_ms / 1000

    def dispatch_batch(self, *, limit: int = BATCH) -> Dispatched:
        """Give each of up to ``limit`` due grants a new dispatch token and its queue message; returns the
        ``(grant id, token)`` pairs with what the reconciler needs to plan its next pass."""
        due_ids, next_due_in_s = self._due(limit)
        dispatched = self._dispatch_ids(due_ids)
        return Dispatched(dispatched, next_due_in_s, full=len(due_ids) >= limit)

    def _dispatch_ids(self, due_ids: list[str]) -> list[tuple[str, str]]:
        candidates = []
        for grant_id in due_ids:
            token = uuid.uuid4().hex
            message_id, body = encoded_message(grant_id, token)
            candidates.append({"id": grant_id, "token": token, "msg_id": message_id, "body": body})
        if not candidates:
            return []
        pressure = self.backpressure
        request = {
            "prefix": self._keys.prefix,
            "queue": f"{self._keys.dramatiq_namespace}:{QUEUE_NAME}",
            "namespace": self._keys.dramatiq_namespace,
            "queue_name": QUEUE_NAME,
            "wake": wake_key(self._keys.dramatiq_namespace, QUEUE_NAME),
            "wake_max": WAKE_TOKENS_MAX,
            "ttl_ms": int(DISPATCH_TTL_S * 1000),
            "lost_ms": int(UNREAD_TRUST_S * 1000),
            "cap": 0 if pressure is None else pressure.cap,
            "limit": 1 if pressure is None else pressure.rate.limit,
            "window_ms": 0 if pressure is None else pressure.window_ms,
            "coalesce": 1 if pressure is not None and pressure.coalesce else 0,
            "candidates": candidates,
        }
        out = values.items(self._dispatch(keys=[self._keys.due()], args=[json.dumps(request)]))
        return [(grant_id, token) for grant_id, token in (values.texts(pair) for pair in out)]

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
        reply = values.items(
            self._claim(keys=[self._keys.grant(grant_id), self._keys.due()], args=[json.dumps(request)])
        )
        return Claim(values.text(reply[0]))

    def adopt_unscheduled(self) -> int:
        """Put every queued, retrying or sending grant that is missing from the schedule on it, due now.

        The schedule holds every moving grant by construction; this is the net
        under that promise (grants queued by an older version, a key restored by
        hand). Returns how many were adopted.
        """
        adopted = 0
        for state in sorted(MOVING_STATES):
            index = self._keys.state_index(state)
            start = 0
            while start < values.integer(self._redis.zcard(index)):
                adopted += values.integer(
                    self._adopt(
                        keys=[index, self._keys.due()], args=[self._keys.prefix, state, start, start + BATCH - 1]
                    )
                )
                start += BATCH
        return adopted

    def reschedule(
        self, grant_id: str, lease_key: str, lease_value: str, delay_s: float, *, due_at_us: int = 0
    ) -> bool:
        """Hand a claimed grant back: due again in ``delay_s`` — or at ``due_at_us`` on Redis' clock when given
        (a rate-limit turn: a run delayed since it was told its turn keeps it) — the run's lease released
        (``lua/reschedule.lua``)."""
        moved = self._reschedule(
            keys=[self._keys.grant(grant_id), self._keys.due(), lease_key],
            args=[grant_id, lease_value, max(0, int(delay_s * 1000)), max(0, due_at_us // 1000)],
        )
        self.wakeup.due_in(delay_s)
        return values.integer(moved) == 1


#: Seconds ``Reconciler.stop`` waits for a pass under way (one dispatch batch: milliseconds, unless Redis hangs).
STOP_WAIT_S = 5.0


class Reconciler(dramatiq.Middleware):
    """Dispatches due grants in a worker process's own thread: a pass when the earliest entry on the schedule
    is due, and at least every ``interval_s``.

    Passes timed by the schedule, not by the clock, matter for waits shorter
    than the interval: a grant handed back for its key's next rate slot is
    dispatched when that slot frees, not up to a second later (the slot would
    go unused for that long). A hand-back in this process wakes a sleeping pass
    (``Wakeup``); others are seen at the next pass.
    """

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
        self._adopt_failing = False

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        pressure = self._schedule.backpressure
        if pressure is not None:
            self._schedule.backpressure = replace(pressure, threads=worker.worker_threads)
        self.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.stop()

    def start(self) -> None:
        """Start the reconciler thread (a worker does this once it has booted)."""
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end, wake it from its sleep and wait (up to ``STOP_WAIT_S``) for a pass under way to
        finish: the worker closes its Redis connections next, and a pass still reading from one would fail."""
        self._stop.set()
        self._schedule.wakeup.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_WAIT_S)

    def _run(self) -> None:
        next_adopt = 0.0
        self._schedule.wakeup.sleep(self._interval_s)
        while not self._stop.is_set():
            if time.monotonic() >= next_adopt and self._adopt_once():
                next_adopt = time.monotonic() + ADOPT_INTERVAL_S
            self._schedule.wakeup.sleep(self.next_pass_in_s(self.reconcile_pass()))

    def next_pass_in_s(self, next_due_in_s: float | None) -> float:
        """Seconds to sleep after a pass that found the next entry due in ``next_due_in_s``."""
        if next_due_in_s is None:
            return self._interval_s
        return min(max(next_due_in_s, MIN_PASS_GAP_S), self._interval_s)

    def _adopt_once(self) -> bool:
        """``Schedule.adopt_unscheduled`` and the release of key-parked grants whose key this worker has, logged;
        False when Redis did not answer (try again next pass)."""
        try:
            adopted = self._schedule.adopt_unscheduled()
            if self._release_key_parked is not None:
                self._release_key_parked()
        except RedisError as exc:
            # Retried at every pass until it works: say so once per outage (the pass says when Redis is back).
            if not self._adopt_failing:
                logger.warning("reconciler: cannot check the schedule, Redis unavailable (%s)", exc)
            self._adopt_failing = True
            return False
        self._adopt_failing = False
        if adopted:
            logger.warning("reconciler: %d moving grant(s) were not on the schedule; they are now", adopted)
        return True

    def reconcile_pass(self) -> float | None:
        """Dispatch everything due now; the seconds until the next entry is due (None: none, or no Redis).

        Never raises for Redis."""
        try:
            while True:
                batch = self._schedule.dispatch_batch()
                if not batch.full:
                    break
        except RedisError as exc:
            if not self._failing:
                logger.warning("reconciler: Redis unavailable (%s); grants wait until it answers", exc)
            self._failing = True
            return None
        if self._failing:
            logger.warning("reconciler: Redis answers again; due grants dispatched")
            self._failing = False
        return batch.next_due_in_s
