"""Ledger retention: final grants are deleted ``LEDGER_RETENTION_S`` after they got there.

Without it every grant stays forever: about 1.45 KB of ledger per delivered
grant (hash, history, index entries; BENCHMARKS.md), 7.6 GB a year at 10 grants
a minute. Kept 90 days, that levels off near 1.9 GB. The rule, and why it
weakens no dedupe:

* Only ``delivered`` and ``cancelled`` grants are trimmed — nothing more can
  happen to them. ``dead`` and ``unknown`` grants wait for an operator
  (``grants replay``, ``grants resolve``) and stay until one acts; they are few (one per
  failure, each reported to Sentry). Non-final grants are never touched: the
  script walks only the two final states' indexes.
* Age counts from the time the grant entered its state (the state index's
  score), so a grant parked for months is still kept a full period after it
  was delivered.
* Dedupe rests on the idempotency claim (``idem:<key>`` → grant id, 40 days,
  ``worker.keys.IDEMPOTENCY_TTL_S``). ``LEDGER_RETENTION_S`` must be at
  least 41 (``config.settings``), so a claim made when the grant was created
  has expired long before the grant is old enough. The script also checks it:
  a grant whose claim still lives and names it is kept, whatever the clocks
  say, so a repeated event can never find its claim but no grant
  (``worker.creation.MissingGrant``). Once the claim is gone, the same key
  would make a new grant whether or not the old one had been trimmed. A
  claim made to last (``NewGrant.keep_claim``: a follow rewarded once per
  viewer) never goes, so its grant is never trimmed: about 1.5 KB per
  rewarded follower, kept for good.
* Profile snapshots (``profile:<g>:<u>``) carry their own TTL and are shared
  by a user's grants, so they are left to it. Leases expire within seconds.

Consequence: a Patreon take-back (``revoke_on``) of a grant trimmed already
finds no original and takes nothing back (``producers.patreon.members._revoke``
skips a missing original silently).

Each batch is one script (``lua/trim_grants.lua``), so no grant is ever half
deleted, and a resent script trims nothing twice. The worker runs
``LedgerRetention`` in a background thread, like the reconciler (``worker.schedule``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from redis import Redis, RedisError

from worker import redis_values as values
from worker.grant import GrantState
from worker.grant_index import backfill
from worker.keys import Keys
from worker.scripts import load_script

logger = logging.getLogger("wetbot_rewards.retention")

#: The states whose grants are trimmed (see the module docstring for why not ``dead``/``unknown``).
TRIMMED_STATES = (GrantState.DELIVERED, GrantState.CANCELLED)
#: Grants examined per script call. A call of 200 takes 1-2 ms, round trip included (BENCHMARKS.md).
BATCH_SIZE = 200
#: Seconds between batches, so a large backlog leaves Redis to the service's real work.
BATCH_PAUSE_S = 0.01
#: Seconds between runs.
RUN_INTERVAL_S = 3600.0
#: Inbox events deleted per script call (``lua/inbox_trim.lua``).
EVENT_BATCH_SIZE = 200
#: Seconds after worker start before the first run.
FIRST_RUN_DELAY_S = 60.0

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class TrimReport:
    """What one run did: grants ``examined``, ``trimmed``, and ``kept`` (old, but still claimed)."""

    examined: int = 0
    trimmed: int = 0
    kept: int = 0

    def __add__(self, other: TrimReport) -> TrimReport:
        return TrimReport(self.examined + other.examined, self.trimmed + other.trimmed, self.kept + other.kept)


class GrantTrimmer:
    """Deletes ``delivered``/``cancelled`` grants older than ``retention_s`` seconds, in bounded batches.

    Raises:
      ValueError: on a retention that is not positive, or a batch size below 1.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        retention_s: float,
        batch_size: int = BATCH_SIZE,
        pause_s: float = BATCH_PAUSE_S,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if retention_s <= 0 or batch_size < 1:
            raise ValueError("retention_s must be positive and batch_size at least 1")
        self._keys = keys
        self._script = load_script(redis, "trim_grants")
        self._retention_s = retention_s
        self._batch_size = batch_size
        self._pause_s = pause_s
        self._sleep = sleep

    def trim_batch(self, state: GrantState, *, cutoff: float, offset: int = 0) -> TrimReport:
        """One script call: up to ``batch_size`` grants of ``state`` that entered it at or before ``cutoff``."""
        examined, trimmed, kept = self._script(
            args=[self._keys.prefix, state.value, repr(cutoff), offset, self._batch_size]
        )
        return TrimReport(int(examined), int(trimmed), int(kept))

    def trim(self, *, now: float | None = None, stop: Callable[[], bool] = lambda: False) -> TrimReport:
        """Trim every state in ``TRIMMED_STATES`` until no old grant is left (or ``stop()`` says so).

        ``now`` (epoch seconds, default the clock) sets the cutoff ``now - retention_s``.
        """
        cutoff = (time.time() if now is None else now) - self._retention_s
        total = TrimReport()
        for state in TRIMMED_STATES:
            offset = 0  # kept grants stay at the front of the old range; step over them
            while not stop():
                batch = self.trim_batch(state, cutoff=cutoff, offset=offset)
                total += batch
                offset += batch.kept
                if batch.examined < self._batch_size:
                    break
                self._sleep(self._pause_s)
        return total


def trim_events(redis: Redis, keys: Keys, *, retention_s: float, now: float | None = None) -> int:
    """Delete every event-inbox entry (``producers.inbox``) received more than ``retention_s`` ago.

    Each batch is one script, so an entry never loses its hash but keeps its index entries (or back).
    Returns how many entries went.
    """
    cutoff_ms = int(((time.time() if now is None else now) - retention_s) * 1000)
    script = load_script(redis, "inbox_trim")
    deleted = 0
    while True:
        batch = values.integer(script(args=[keys.prefix, cutoff_ms, EVENT_BATCH_SIZE]))
        deleted += batch
        if batch < EVENT_BATCH_SIZE:
            return deleted


class LedgerRetention(dramatiq.Middleware):
    """Runs ``GrantTrimmer.trim`` in each worker process's background thread, one process at a time.

    A Redis lock that lives ``interval_s`` makes it one run per interval across
    every worker; two runs at once would still be safe (each batch is atomic),
    only wasteful. A Redis error skips the run until the next interval.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        retention_s: float,
        event_retention_s: float | None = None,
        interval_s: float = RUN_INTERVAL_S,
        first_run_delay_s: float = FIRST_RUN_DELAY_S,
    ) -> None:
        self._redis = redis
        self._trimmer = GrantTrimmer(redis, keys, retention_s=retention_s)
        self._retention_s = retention_s
        self._event_retention_s = event_retention_s
        self._keys = keys
        self._lock_key = f"{keys.prefix}:retention:lock"
        self._interval_s = interval_s
        self._first_run_delay_s = first_run_delay_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-retention", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _run(self) -> None:
        self._index_older_grants()
        delay_s = self._first_run_delay_s
        while not self._stop.wait(delay_s):
            delay_s = self._interval_s
            self._index_older_grants()
            try:
                self.run_once()
            except RedisError as exc:
                logger.warning("ledger retention skipped: Redis unavailable (%s)", exc)

    def _index_older_grants(self) -> None:
        """Put grants an older version wrote into the search indexes (``worker.grant_index.backfill``): at
        start, then once an interval for what an older process still running may have written since."""
        try:
            backfill(self._redis, self._keys, stop=self._stop.is_set)
        except RedisError as exc:
            logger.warning("search index backfill postponed: Redis unavailable (%s)", exc)

    def run_once(self, *, now: float | None = None) -> TrimReport | None:
        """One run, unless another process ran within the interval (then None)."""
        if not self._redis.set(self._lock_key, "1", nx=True, px=int(self._interval_s * 1000)):
            return None
        report = self._trimmer.trim(now=now, stop=self._stop.is_set)
        if self._event_retention_s is not None:
            events = trim_events(self._redis, self._keys, retention_s=self._event_retention_s, now=now)
            if events:
                days = self._event_retention_s / SECONDS_PER_DAY
                logger.info("event inbox: %d events older than %g days deleted", events, days)
        if report.trimmed or report.kept:
            logger.info(
                "ledger retention: %d final grants older than %g days deleted, %d old ones kept (claim still alive)",
                report.trimmed,
                self._retention_s / SECONDS_PER_DAY,
                report.kept,
            )
        return report
