"""Fast pickup: Dramatiq's Redis broker whose idle consumers wait for a wake token instead of sleeping.

Stock Dramatiq's Redis consumer polls: after an empty fetch it sleeps a
growing backoff, up to the worker timeout (1 s), so an idle worker finds a new
message 0.5-1 s late (docs/dramatiq.md §4). Here whatever writes a message
also pushes a token onto the queue's wake list (``worker.keys.wake_key``, at
most ``WAKE_TOKENS_MAX`` kept): the create and dispatch scripts in the same
atomic step as the message, ``WakingRedisBroker.enqueue`` right after
Dramatiq's, and a stopping worker after putting its prefetched messages back.
An idle consumer waits on that list with BLPOP (the worker timeout at most,
below the client's socket timeout), so a message written to an idle worker is
fetched one round trip later.

**The queue stays the truth; a token is only a hint.** A consumer fetches
after a token, after a message (there may be more), and at least every
``POLL_INTERVAL_S`` whatever the tokens say. So a token lost (Redis restarted,
taken by a consumer that died, trimmed) only delays a message until the next
poll, and several processes never lose one: one is woken per token, the others
still poll. A consumer whose prefetch is full takes no token (it could not
fetch); it backs off as stock Dramatiq does. An idle consumer costs one BLPOP
per worker timeout plus one fetch per poll interval, against stock's ~1.4
fetches per second. The delay queue's consumer gets no tokens and only polls
(sleeping, not blocking, in between): this service sends no delayed messages
(``worker.broker``), so it stays as quiet as it can; a delayed message someone
else sends is fetched within ``POLL_INTERVAL_S`` and then waits for its eta in
memory as Dramatiq's always do.

**The override is small, on purpose.** ``_WakingConsumer`` runs the stock
``__next__`` with its idle timeout set to 0 (its backoff is then 0 ms: it
returns None at once after an empty fetch) and waits itself; prefetch, acks,
nacks, requeues (only followed by tokens) and heartbeats stay Dramatiq's. The coupling (``timeout``,
``message_cache``, ``outstanding_message_count``, ``prefetch``, the
``consumer_class`` property, ``None`` for a miss) is pinned by
``tests/worker/test_pickup.py``; dramatiq is pinned below 3. Connection errors
in the wait surface as Dramatiq's ``ConnectionClosed``, as a failed fetch's do:
the consumer thread logs, waits its restart delay and starts a new consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, q_name
from dramatiq.errors import ConnectionClosed

from worker.keys import WAKE_TOKENS_MAX, wake_key

logger = logging.getLogger("wetbot_rewards.pickup")

#: Seconds an idle consumer goes at most without fetching, whatever the wake list says: the longest a
#: message whose token was lost waits. Well below the heartbeat timeout (``worker.broker``), since a
#: fetch is what stamps an idle worker's heartbeat.
POLL_INTERVAL_S = 5.0
#: Longest single wait on the wake list, in seconds (the worker timeout when shorter). It must stay
#: below the Redis client's socket timeout (``worker.connections.REDIS_SOCKET_TIMEOUT_S``), or a quiet
#: wait would read as a dead connection.
MAX_WAIT_S = 2.0
#: Shortest wait (BLPOP's timeout 0 would mean "forever").
MIN_WAIT_S = 0.01
#: Longest sleep of a consumer whose prefetch is full, in seconds. Its thread also hands finished messages
#: acks to Redis between two looks, and only then may it fetch again: stock Dramatiq sleeps up to the
#: worker timeout (1 s) here, leaving threads idle with messages queued. A look costs no Redis call.
FULL_BACKOFF_MAX_S = 0.02
#: What a wake token says: nothing; only its presence counts.
WAKE_SIGNAL = "1"


class WakingRedisBroker(RedisBroker):
    """``RedisBroker`` whose consumers wait on their queue's wake list when idle (see the module docstring)."""

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Dramatiq's enqueue, then a wake token for the queue (none for a delayed message: that queue polls).

        The message is enqueued when this returns; a token that cannot be
        pushed is logged and only delays its pickup until the next poll.
        """
        enqueued: dramatiq.Message[Any] = super().enqueue(message, delay=delay)
        if delay is not None:
            return enqueued
        try:
            push_wake(self.client, wake_key(self.namespace, enqueued.queue_name))
        except redis.RedisError as exc:
            logger.warning("enqueued %s, but no wake token (%s): picked up at the next poll", enqueued.message_id, exc)
        return enqueued


def push_wake(client: redis.Redis, key: str, tokens: int = 1) -> None:
    """Push ``tokens`` wake tokens onto ``key``, keeping at most ``WAKE_TOKENS_MAX`` (the scripts do the same)."""
    pipe = client.pipeline(transaction=False)
    pipe.lpush(key, *([WAKE_SIGNAL] * min(tokens, WAKE_TOKENS_MAX)))
    pipe.ltrim(key, 0, WAKE_TOKENS_MAX - 1)
    pipe.execute()


class _WakingConsumer(_RedisConsumer):
    """The stock consumer with its idle sleep replaced by a wait on the wake list."""

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        # timeout=0: the stock __next__ then backs off 0 ms after an empty fetch, and we wait instead.
        super().__init__(broker, queue_name, prefetch, 0)  # type: ignore[no-untyped-call]
        self.wait_s = min(max(timeout / 1000, MIN_WAIT_S), MAX_WAIT_S)
        self.wake_key = wake_key(broker.namespace, queue_name)
        self.delay_queue = q_name(queue_name) != queue_name
        self._client: redis.Redis = broker.client
        self._fetch_next = True
        self._poll_at = 0.0
        self._full_misses = 0

    def __next__(self) -> dramatiq.MessageProxy | None:
        if self._fetch_next or self.message_cache or time.monotonic() >= self._poll_at:
            message: dramatiq.MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
            if message is not None:
                self._fetch_next = True  # a message came: there may be more, fetch again before waiting
                self._full_misses = 0
                return message
            if self.outstanding_message_count >= self.prefetch:
                # Prefetch full: nothing could be fetched, so leave the tokens to consumers that can.
                self._full_misses, backoff_ms = compute_backoff(
                    self._full_misses, max_backoff=int(min(self.wait_s, FULL_BACKOFF_MAX_S) * 1000)
                )
                time.sleep(backoff_ms / 1000)
                return None
            self._fetch_next = False
            self._poll_at = time.monotonic() + POLL_INTERVAL_S
        self._wait()
        return None

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        """Dramatiq's requeue (a stopping worker's prefetched messages), then a token each for the other workers.

        Without the tokens another worker would find them only at its next poll.
        """
        messages = list(messages)  # Dramatiq may pass a generator; it is read twice here
        super().requeue(messages)  # type: ignore[no-untyped-call]
        if not messages or self.delay_queue:
            return
        try:
            push_wake(self._client, self.wake_key, len(messages))
        except redis.RedisError as exc:
            logger.warning(
                "requeued %d messages, but no wake token (%s): picked up at the next poll", len(messages), exc
            )

    def _wait(self) -> None:
        """Block until a wake token arrives or ``wait_s`` passes (then the consumer thread looks around)."""
        if self.delay_queue:
            time.sleep(self.wait_s)
            return
        try:
            woken = self._client.blpop([self.wake_key], timeout=self.wait_s)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        if woken is not None:
            self._fetch_next = True
