"""A Dramatiq middleware that enqueues grants whose requeue was cut short between ledger and queue.

New grants get their queue message in the same script as their ledger entry
(``worker.creation``). Replays, resolutions and released parked grants set an
outbox marker with the state change, enqueue, then drop the marker
(``Keys.outbox``). A marker older than ``STALE_AFTER_S`` means the enqueue may
never have happened; the sweeper enqueues such grants again.
A duplicate message is harmless: the ledger's state checks and the per-grant
lease make the second one a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import dramatiq
from redis import Redis, RedisError

from worker.keys import Keys
from worker.ledger import GrantState, Ledger

logger = logging.getLogger("wetbot_rewards.sweeper")

#: Seconds between sweeps.
SWEEP_INTERVAL_S = 5.0
#: Seconds an outbox marker may stand before the grant counts as not enqueued.
#: A producer enqueues within milliseconds; 30 s leaves room for a slow Redis.
STALE_AFTER_S = 30.0


class OutboxSweeper(dramatiq.Middleware):
    """Runs ``sweep_once`` every ``interval_s`` in each worker process."""

    def __init__(
        self, redis: Redis, keys: Keys, enqueue: Callable[[str], None], *, interval_s: float = SWEEP_INTERVAL_S
    ) -> None:
        self._ledger = Ledger(redis, keys)
        self._redis = redis
        self._lock_key = f"{keys.prefix}:sweeper:lock"
        self._enqueue = enqueue
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-sweeper", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sweep_once()
            except RedisError as exc:
                logger.warning("outbox sweep skipped: Redis unavailable (%s)", exc)

    def sweep_once(self, *, older_than_s: float = STALE_AFTER_S) -> int:
        """Enqueue every grant whose outbox marker is stale. Returns how many were enqueued."""
        # One sweeper at a time across processes; the lock expires on its own.
        if not self._redis.set(self._lock_key, "1", nx=True, px=int(self._interval_s * 1000)):
            return 0
        enqueued = 0
        for grant_id in self._ledger.stale_outbox(older_than_s):
            grant = self._ledger.get(grant_id)
            if grant is not None and grant.state in (GrantState.QUEUED, GrantState.RETRYING):
                self._enqueue(grant_id)
                enqueued += 1
                logger.warning("grant %s had no queue message (producer stopped mid-way); enqueued", grant_id)
            self._ledger.mark_enqueued(grant_id)
        return enqueued
