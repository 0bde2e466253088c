"""Replica confirmation: ``WAIT`` after the writes a promise rests on, when Redis has replicas.

Redis replicates asynchronously: a write the primary acknowledged may not have
reached any replica when the primary dies, and Sentinel then promotes a replica
without it. Every write someone was told about and will not repeat waits for
``REDIS_WAIT_REPLICAS`` replicas (default 1 under Sentinel, 0 = off otherwise),
for at most ``REDIS_WAIT_TIMEOUT_S``:

* a producer's **create** (``worker.creation``): the webhook or API caller got
  a 2xx and will not send again, so a lost grant is lost for good. Short of
  replicas: 503, the source retries (the create is idempotent, and its second
  run waits for the same confirmation);
* a worker's **step into sending** (``Ledger.transition(..., confirm=True)``):
  lost, the grant is back to ``queued`` and is sent again — a double grant if
  WetBot applied the first request. Short of replicas, the worker does not send
  yet;
* every **operator action**, from the console, the API and the CLI
  (``admin.grant_actions``: cancel, replay, bulk replay, resolve;
  ``producers.link_actions``: link, unlink; ``admin.reprocess``'s grants):
  lost, a cancelled grant goes out after all, a replayed or resolved one stays
  dead or unknown, and the operator, told "done", never looks again. Short of
  replicas the action raises ``ActionUnconfirmed`` (``producers.unconfirmed``):
  503 from the API, a "could not be confirmed" page in the console, exit status
  1 from the CLI, and "not confirmed" in the audit log; nothing is claimed done.
  Its write stays on the primary: it reaches the replicas later, or a failover
  drops it with the primary. Either way the action is one guarded step, so the
  repeat the message asks for is safe: it does what is not done yet, finds done
  what is, and never does anything twice. An answer that writes nothing (a
  cancel of a cancelled grant, a refusal saying what the grant is now) rests on
  a state the replicas must have too (``confirm_read``, ``Ledger.confirmed``);
* **links** and the **release** of the grants parked for them (``LinkStore``
  built with ``acks``, ``Ledger.release_parked(confirm=True)``), whoever makes
  them: an operator, a viewer's link reward, a Patreon payload; lost, the
  member's grants park again, or stay parked;
* **Patreon facts** (``producers.patreon.members``): grants and member memory
  in one MULTI (confirmed by the fence below), a take-back's cancel
  (``Ledger.cancel(confirm=True)``) and the payload's link, each on its own.

A worker's outcome steps (delivered, dead, unknown, a retry, a 429 or 401
answer: ``Deliverer._step``) are confirmed too: a lost one would turn a known
answer into a maybe-applied one. Short of replicas the worker retries the
guarded step in place for up to 90 s (a repeat answers "already recorded" and
waits for the replicas again).

Not confirmed, because a failover that loses them loses nothing promised: the
worker's step back after an unconfirmed step into sending (nothing was sent),
its takeover of an abandoned request and its step into a read-back (both are
decided the same way again), queue messages,
claims and schedule entries (hints the reconciler rewrites), the worker's
release of grants parked for an API key (released again on its next pass), the
audit log, console sessions and flash messages, the event inbox's record (a
re-process finds its grants again), counters and metrics.

``WAIT`` counts the replicas that have the *connection's* last write, so it
travels in one pipeline with the script, on the same connection; a pipeline
resent after a connection error reruns the script on the new primary, which is
safe (every script is). A step that may write nothing (an action found done
already, a refusal) adds an ``INCR`` of ``Keys.replication_barrier`` before the
``WAIT`` (``run_confirmed(barrier=...)``): replication is one ordered stream, so
a replica that has the barrier has everything the primary had when the step
read its state. ``WAIT`` also catches a split brain: a primary that Sentinel has
replaced but that still accepts our connections has no replica left, so it
confirms nothing (a ``SENTINEL FAILOVER`` leaves the old primary writable until
Sentinel reconfigures it, about ten seconds later). With two replicas or more,
though, one not yet moved to the new primary still confirms the old one's
writes, and drops them when it moves: so the clients leave the old primary at
once (``worker.connections``: the sentinels are asked for the promoted replica
before every operator action, every ``MASTER_RECHECK_S`` otherwise, and after
every shortfall). ``WAIT`` is not consensus: a write in the instant between the
sentinel's choice and that question can still be confirmed and lost.

Where a transaction cannot carry the ``WAIT`` (Patreon's WATCH/MULTI), a
**fence** stands in: the transaction writes a fresh token, then one pipeline
runs ``lua/fence.lua`` (rewrite the token only if it is still there, i.e. this
primary has the transaction) and ``WAIT``. A new primary without the
transaction fails the fence instead of confirming.

**The cost**: one replica round trip (well under a millisecond on a LAN; at
most ``REDIS_WAIT_TIMEOUT_S``) per create batch, per send, per operator action
(a link two: the link and its release; a bulk replay one per grant), plus a
sentinel round trip per operator action and per client every second; and while
fewer than ``REDIS_WAIT_REPLICAS`` replicas are connected, no intake, no
sending and no operator action succeeds — run one replica more than that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis import Redis, RedisError
from redis.asyncio import Redis as AsyncRedis
from redis.client import Pipeline
from redis.commands.core import AsyncScript, Script

from config.errors import WetbotRewardsError
from config.settings import Settings
from worker import redis_values
from worker.connections import follow_failover
from worker.scripts import load_script

__all__ = [
    "NO_ACKS",
    "NotReplicated",
    "ReplicaAcks",
    "confirm_fence",
    "confirm_read",
    "run_confirmed",
    "run_confirmed_async",
]


#: What a script's ARGV may be given: redis-py sends each as a string.
ScriptArg = str | bytes | int | float


class NotReplicated(RedisError, WetbotRewardsError):
    """Raised when fewer replicas than ``REDIS_WAIT_REPLICAS`` confirmed a write in time (it is on the primary only).

    ``reply`` is the script's answer, for callers whose write turned out to change nothing.
    """

    def __init__(self, message: str, reply: object = None) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class ReplicaAcks:
    """How many replicas must confirm a write, and how long to wait for them (0 replicas: no ``WAIT``)."""

    replicas: int = 0
    timeout_ms: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaAcks:
        return cls(settings.wait_replicas, max(1, int(settings.redis_wait_timeout_s * 1000)))

    @property
    def wanted(self) -> bool:
        return self.replicas > 0

    def check(self, acked: object, reply: object = None) -> None:
        """Raise ``NotReplicated`` when ``acked`` (``WAIT``'s answer) is short of ``replicas``."""
        confirmed = redis_values.integer(acked)
        if confirmed < self.replicas:
            raise NotReplicated(
                f"{confirmed} of {self.replicas} Redis replicas confirmed the write within {self.timeout_ms} ms",
                reply,
            )


#: ``ReplicaAcks()``: never wait (a single Redis, tests).
NO_ACKS = ReplicaAcks()


def run_confirmed(
    redis: Redis,
    script: Script,
    acks: ReplicaAcks,
    *,
    keys: Sequence[str] = (),
    args: Sequence[ScriptArg] = (),
    barrier: str = "",
) -> object:
    """``script(keys, args)``, then ``WAIT`` on the same connection when ``acks`` asks for replicas.

    ``barrier`` (a key, ``Keys.replication_barrier``) adds an ``INCR`` of it between the script and the
    ``WAIT``: the ``WAIT`` then covers everything the primary had when the script ran, also when the script
    wrote nothing (an action found done already, a refusal), not only the script's own writes.

    Raises:
      NotReplicated: the write reached fewer replicas than asked (``reply`` holds the script's answer).
      RedisError: as the script would.
    """
    if not acks.wanted:
        return script(keys=list(keys), args=list(args))
    pipe = redis.pipeline(transaction=False)
    script(keys=list(keys), args=list(args), client=pipe)
    if barrier:
        pipe.incr(barrier)
    pipe.wait(acks.replicas, acks.timeout_ms)
    answers = pipe.execute()
    _check(redis, acks, answers[-1], answers[0])
    return answers[0]


def confirm_read(redis: Redis, acks: ReplicaAcks, barrier: str, read: Callable[[Pipeline], object]) -> list[object]:
    """The answers of the reads ``read`` queues on a pipeline, confirmed: every write the primary had when they
    ran is on ``acks.replicas`` replicas, so what they answered survives a failover.

    The reads, an ``INCR`` of ``barrier`` and ``WAIT`` go in one pipeline on one connection; a pipeline resent
    after a connection error reads again on the new primary. For an answer that rests on a state without
    writing (an action found done already, a refusal saying what a grant is now).

    Raises:
      NotReplicated: fewer replicas confirmed (the answers may not survive a failover).
    """
    pipe = redis.pipeline(transaction=False)
    read(pipe)
    if not acks.wanted:
        return list(pipe.execute())
    pipe.incr(barrier)
    pipe.wait(acks.replicas, acks.timeout_ms)
    answers = pipe.execute()
    _check(redis, acks, answers[-1])
    return list(answers[:-2])


def _check(redis: Redis, acks: ReplicaAcks, acked: object, reply: object = None) -> None:
    """``acks.check``; short of replicas, the client asks the sentinels for the master before its next command."""
    try:
        acks.check(acked, reply)
    except NotReplicated:
        follow_failover(redis)
        raise


async def run_confirmed_async(
    redis: AsyncRedis, script: AsyncScript, acks: ReplicaAcks, *, args: Sequence[ScriptArg] = (), barrier: str = ""
) -> object:
    """``run_confirmed`` for asyncio code (``script`` registered on ``redis``)."""
    if not acks.wanted:
        return await script(args=list(args))
    pipe = redis.pipeline(transaction=False)
    await script(args=list(args), client=pipe)
    if barrier:
        pipe.incr(barrier)
    pipe.wait(acks.replicas, acks.timeout_ms)
    answers = await pipe.execute()
    try:
        acks.check(answers[-1], answers[0])
    except NotReplicated:
        follow_failover(redis)
        raise
    return answers[0]


def confirm_fence(redis: Redis, acks: ReplicaAcks, key: str, field: str, token: str) -> None:
    """Confirm an earlier write that set ``key``'s ``field`` to ``token`` reached ``acks.replicas`` replicas.

    Raises:
      NotReplicated: the current primary does not have the write (a failover lost it), or too few
        replicas confirmed it.
    """
    if not acks.wanted:
        return
    pipe = redis.pipeline(transaction=False)
    load_script(redis, "fence")(keys=[key], args=[field, token], client=pipe)
    pipe.wait(acks.replicas, acks.timeout_ms)
    present, acked = pipe.execute()
    if int(present) != 1:
        follow_failover(redis)
        raise NotReplicated("the write is not on the current Redis primary (lost in a failover)")
    _check(redis, acks, acked)
