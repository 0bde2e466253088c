"""Ledger retention benchmark: Redis bytes per delivered grant, and how fast old grants are trimmed.

Two phases, in Redis DB 15 under a random ``bench<hex>-retention`` prefix that is deleted at the end
(SCAN + DEL, never a flush):

``per grant``
    ``--sample`` Twitch-like grants (key ``twitch:<event id>:<rule>``, a rule, a reason, platform and
    external id, one item) go through the real pipeline: ``producers.submit.submit_grant`` (ledger entry
    and queue message in one script), an in-process Dramatiq worker running ``deliver`` against the WetBot
    simulator (``simulator/wetbot.py``, limits raised so nothing waits), until every one is ``delivered``.
    Then ``MEMORY USAGE ... SAMPLES 0`` of each key a delivered grant leaves behind: its hash, its history
    list, its idempotency claim (40-day TTL), its share of the ``state:delivered`` and ``grants`` sorted
    sets, and the user's profile snapshot (one per user, shared by the user's grants, 90-day TTL).
``trim``
    ``--grants`` copies of a delivered grant (hash + history, entered ``delivered`` 100 days ago, claims
    expired) plus ``--young`` recent ones; keys and bytes under the prefix before and after
    ``worker.retention.GrantTrimmer.trim`` (no pause between batches), the wall time, and the time of each
    script call (one batch of ``--batch`` grants).

Run from the repository root: ``.venv/bin/python -m bench.retention [--sample 300 --grants 20000]``.
Exit status 1 when the trim leaves an old grant or removes a young one; 2 on a setup error.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import dramatiq
from redis import Redis

from bench.rig import DEFAULT_REDIS_URL, GUILD, delete_prefixes, key_base, wetbot_simulator
from config.settings import load_settings
from producers.submit import submit_grant
from worker import redis_values as values
from worker.broker import build_broker, declare_deliver
from worker.connections import connect_redis
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger
from worker.retention import SECONDS_PER_DAY, GrantTrimmer, TrimReport
from worker.runtime import add_worker_middleware, build_deliverer

API_KEY = secrets.token_hex(16)  # fresh per run: no credential is written down
RETENTION_DAYS = 90
#: Grants per minute the yearly figure assumes (the issue's figure).
GRANTS_PER_MINUTE = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=300, help="grants sent through the real pipeline")
    parser.add_argument("--grants", type=int, default=20_000, help="old delivered grants to trim")
    parser.add_argument("--young", type=int, default=1_000, help="recent delivered grants that must stay")
    parser.add_argument("--batch", type=int, default=200, help="grants per trim script call")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    prefix = f"{key_base()}-retention"
    redis = Redis.from_url(args.redis_url)
    keys = Keys(prefix)
    try:
        sample = deliver_sample(args.redis_url, prefix, args.sample)
        per_grant = measure_grant(redis, keys, sample)
        print_per_grant(per_grant, args.sample)
        return trim_phase(redis, keys, sample[0], args.grants, args.young, args.batch)
    finally:
        delete_prefixes(args.redis_url, [prefix])
        redis.close()


def deliver_sample(redis_url: str, prefix: str, count: int) -> list[str]:
    """``count`` grants through submit_grant and a real worker; returns their ids once all are delivered."""
    sim = wetbot_simulator(API_KEY, limit=100_000, window_s=1.0).start()
    settings = load_settings(
        _env_file=None,
        redis_url=redis_url,
        redis_key_prefix=prefix,
        wetbot_api_url=sim.url,
        wetbot_api_key=API_KEY,
        wetbot_rate_limit="100000/1s",
    )
    broker = build_broker(settings)
    worker_redis = connect_redis(settings)
    deliverer = build_deliverer(settings, worker_redis)
    declare_deliver(broker, deliverer.deliver, timeout_s=settings.wetbot_timeout_s)
    add_worker_middleware(broker, worker_redis, Keys(prefix), schedule=deliverer.schedule)
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    ledger = Ledger(worker_redis, Keys(prefix))
    try:
        ids = [submit_grant(ledger, twitch_like(n)).grant.id for n in range(count)]
        deadline = time.monotonic() + 120
        while ledger.counts()[GrantState.DELIVERED] < count:
            if time.monotonic() > deadline:
                raise SystemExit("bench/retention.py: the sample was not delivered within 120 s")
            time.sleep(0.1)
        return ids
    finally:
        worker.stop()
        broker.close()
        worker_redis.close()
        sim.stop()


def twitch_like(n: int) -> NewGrant:
    """A grant as a Twitch cheer rule makes it: event-id key, rule, reason, Twitch identity, one item."""
    event_id = str(uuid.uuid4())
    return NewGrant(
        guild_id=GUILD,
        user_id=str(200_000_000_000_000_000 + n),
        items=(GrantItem("gem", 5.0),),
        source="twitch",
        idempotency_key=f"twitch:{event_id}:cheer-gems",
        source_ref=str(uuid.uuid4()),
        rule="cheer-gems",
        reason="Thanks for the bits!",
        platform="twitch",
        external_id=str(40_000_000 + n),
    )


def measure_grant(redis: Redis, keys: Keys, ids: list[str]) -> dict[str, float]:
    """Mean bytes per grant of each key a delivered grant leaves behind."""

    def usage(key: str) -> int:
        return int(cast(int | None, redis.memory_usage(key, samples=0)) or 0)

    ledger = Ledger(redis, keys)
    grants = [ledger.get(grant_id) for grant_id in ids]
    claims = [keys.idempotency(grant.idempotency_key) for grant in grants if grant is not None]
    profiles = [keys.profile(grant.guild_id, grant.user_id) for grant in grants if grant is not None]
    n = len(ids)
    return {
        "grant hash": sum(usage(keys.grant(g)) for g in ids) / n,
        "history list": sum(usage(keys.history(g)) for g in ids) / n,
        "idempotency claim (40-day TTL)": sum(usage(k) for k in claims) / n,
        "state:delivered entry": usage(keys.state_index(GrantState.DELIVERED.value)) / n,
        "grants entry": usage(keys.all_grants()) / n,
        "profile snapshot (per user, 90-day TTL)": sum(usage(k) for k in profiles) / n,
    }


def print_per_grant(per_grant: dict[str, float], sample: int) -> None:
    print(f"bytes per delivered grant (MEMORY USAGE, mean of {sample}):")
    for name, value in per_grant.items():
        print(f"  {name:<42} {value:8.0f}")
    ledger_only = sum(v for k, v in per_grant.items() if not k.startswith(("idempotency", "profile")))
    with_claim = ledger_only + per_grant["idempotency claim (40-day TTL)"]
    per_year = GRANTS_PER_MINUTE * 60 * 24 * 365
    print(f"  {'ledger (hash, history, index entries)':<42} {ledger_only:8.0f}")
    print(f"  {'ledger + claim':<42} {with_claim:8.0f}")
    print(
        f"without retention, at {GRANTS_PER_MINUTE}/min: {ledger_only * per_year / 1e9:.1f} GB a year of ledger;"
        f" kept {RETENTION_DAYS} days: {ledger_only * GRANTS_PER_MINUTE * 60 * 24 * RETENTION_DAYS / 1e9:.2f} GB"
        f" (+ claims: {per_grant['idempotency claim (40-day TTL)'] * GRANTS_PER_MINUTE * 60 * 24 * 40 / 1e9:.2f} GB)"
    )


def trim_phase(redis: Redis, keys: Keys, template_id: str, old: int, young: int, batch: int) -> int:
    """Clone a delivered grant ``old`` + ``young`` times, trim, and report."""
    ledger = Ledger(redis, keys)
    delivered_before = ledger.counts()[GrantState.DELIVERED]
    fields = values.raw_map(redis.hgetall(keys.grant(template_id)))
    history = values.texts(redis.lrange(keys.history(template_id), 0, -1))
    now = time.time()
    old_at = now - (RETENTION_DAYS + 10) * SECONDS_PER_DAY
    young_ids: list[str] = []
    for created in chunks(old + young, 1000):
        pipe = redis.pipeline(transaction=False)
        for i in created:
            grant_id = uuid.uuid4().hex
            at = old_at + i if i < old else now - 60
            if i >= old:
                young_ids.append(grant_id)
            pipe.hset(keys.grant(grant_id), mapping={**fields, b"id": grant_id.encode(), b"updated_at": repr(at)})
            pipe.rpush(keys.history(grant_id), *history)
            pipe.zadd(keys.state_index(GrantState.DELIVERED.value), {grant_id: at})
            pipe.zadd(keys.all_grants(), {grant_id: at})
        pipe.execute()
    before_keys, before_bytes = prefix_usage(redis, keys.prefix)
    trimmer = TimedTrimmer(redis, keys, retention_s=RETENTION_DAYS * SECONDS_PER_DAY, batch_size=batch, pause_s=0)
    start = time.perf_counter()
    report = trimmer.trim()
    elapsed = time.perf_counter() - start
    times = trimmer.times
    after_keys, after_bytes = prefix_usage(redis, keys.prefix)
    print(f"\ntrim: {old} old + {young} recent delivered grants, batches of {batch}")
    print(f"  keys under the prefix   {before_keys:>9} -> {after_keys}")
    freed = (before_bytes - after_bytes) / max(old, 1)
    print(f"  bytes (MEMORY USAGE)    {before_bytes:>9} -> {after_bytes}  ({freed:.0f} freed per trimmed grant)")
    print(
        f"  trimmed {report.trimmed}, kept {report.kept}, in {elapsed:.2f} s ({report.trimmed / elapsed:.0f} grants/s)"
    )
    if times:
        print(
            f"  per script call: median {statistics.median(times) * 1000:.2f} ms,"
            f" max {max(times) * 1000:.2f} ms, {len(times)} calls"
        )
    young_left = sum(1 for grant_id in young_ids if ledger.get(grant_id) is not None)
    ok = (
        report.trimmed == old
        and young_left == young
        and ledger.counts()[GrantState.DELIVERED] == delivered_before + young
    )
    if not ok:
        print(f"FAIL: trimmed {report.trimmed} of {old} old; {young_left} of {young} recent left", file=sys.stderr)
        return 1
    return 0


class TimedTrimmer(GrantTrimmer):
    """``GrantTrimmer`` that records the wall time of each script call (a round trip on loopback)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.times: list[float] = []

    def trim_batch(self, state: GrantState, *, cutoff: float, offset: int = 0) -> TrimReport:
        start = time.perf_counter()
        report = super().trim_batch(state, cutoff=cutoff, offset=offset)
        if report.examined:
            self.times.append(time.perf_counter() - start)
        return report


def chunks(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(start + size, total))


def prefix_usage(redis: Redis, prefix: str) -> tuple[int, int]:
    """Keys under ``prefix:`` and the sum of their MEMORY USAGE."""
    names = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
    return len(names), sum(int(v or 0) for v in pipe.execute())


if __name__ == "__main__":
    sys.exit(main())
