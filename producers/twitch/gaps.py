"""Gaps in Twitch delivery: the periods for which cheers, subs and follows may have been missed.

A gap (a restart, a WebSocket drop, a revoked subscription) is recorded by ``record_gap``, whichever process
saw it: the Twitch process (``producers.twitch.runner``) for its own, the web process for a webhook
``revocation`` (``producers.twitch.webhook``). Each is one step in Redis: the period joins
``Keys.twitch_missed_periods`` (the newest ``MISSED_PERIODS_KEPT``) and ``Keys.twitch_gap_requested`` is set,
so the Twitch process, which looks at that flag every loop (``take_gap_request``), sweeps the subscriptions
and catches up soon. Each is logged and sent to Sentry: Helix has no history of those events
(docs/sources-sync.md §2).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from redis import Redis
from redis.exceptions import RedisError

from worker import redis_values as values
from worker.keys import Keys
from worker.observability import capture
from worker.scripts import load_script

__all__ = ["MISSED_PERIODS_KEPT", "MissedPeriod", "missed_periods", "record_gap", "take_gap_request"]

logger = logging.getLogger("wetbot_rewards.twitch.gaps")

#: Missed periods kept in Redis (the newest).
MISSED_PERIODS_KEPT: Final = 100


@dataclass(frozen=True)
class MissedPeriod:
    """A period for which cheers, subs and follows may have been missed."""

    reason: str
    #: Epoch seconds (None: unknown, e.g. no message was ever seen).
    since: float | None
    until: float

    def describe(self) -> str:
        start = _iso(self.since) if self.since is not None else "an unknown time"
        return f"from {start} to {_iso(self.until)} ({self.reason})"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def missed_periods(redis: Redis, keys: Keys) -> list[MissedPeriod]:
    """The recorded missed periods, oldest first (the console reads them)."""
    periods = []
    for raw in values.texts(redis.zrange(keys.twitch_missed_periods(), 0, -1)):
        data = json.loads(raw)
        since = data.get("since")
        periods.append(MissedPeriod(str(data["reason"]), None if since is None else float(since), float(data["until"])))
    return periods


def record_gap(redis: Redis, keys: Keys, reason: str, since: float | None = None) -> MissedPeriod:
    """Events may have been missed from ``since`` until now: record, log and report the period, and ask the
    Twitch process to catch up. A Redis failure is logged, not raised (the warning is still given)."""
    period = MissedPeriod(reason, since, time.time())
    member = json.dumps({"reason": period.reason, "since": period.since, "until": period.until})
    text = f"Twitch: cheers, subs and follows may have been missed {period.describe()}"
    logger.warning("%s", text)
    capture(text, level="warning", tags={"kind": "twitch-missed-period"})
    try:
        load_script(redis, "twitch_gap")(
            keys=[keys.twitch_missed_periods(), keys.twitch_gap_requested()],
            args=[member, repr(period.until), MISSED_PERIODS_KEPT],
        )
    except RedisError as exc:
        logger.warning("the missed period was not recorded (%s)", type(exc).__name__)
    return period


def take_gap_request(redis: Redis, keys: Keys) -> bool:
    """Whether a gap was recorded since the last call (the flag is taken: one caller acts on it)."""
    return redis.getdel(keys.twitch_gap_requested()) is not None
