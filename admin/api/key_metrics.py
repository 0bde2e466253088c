"""``/metrics`` lines per API key: its rate window, 429 block, 401/403 pauses and request outcomes.

Each key is shown by its fingerprint (never the key) and the guilds it serves.
Everything is read in two pipelined round trips from what the worker keeps in
Redis (``worker.keys``: the limiter's window and block, the outcome counts;
``worker.key_health``: the pauses).
"""

from __future__ import annotations

from redis import Redis

from config.keyring import Keyring
from config.settings import RateLimit
from worker import redis_values as values
from worker.client import CallOutcome
from worker.key_health import read_key_healths
from worker.keys import Keys

__all__ = ["key_metric_lines"]


def key_metric_lines(redis: Redis, keys: Keys, keyring: Keyring, rate: RateLimit) -> list[str]:
    """Prometheus text lines for every key of ``keyring`` (none when the web was given no keys)."""
    served: dict[str, list[str]] = {}
    for guild, key_id in keyring.fingerprints().items():  # guild "*" for the fallback key
        served.setdefault(key_id, []).append(guild)
    if not served:
        return []
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    for key_id in served:
        pipe.zrange(keys.rate_window(key_id), 0, -1, withscores=True)
        pipe.get(keys.rate_block(key_id))
        pipe.hgetall(keys.key_outcomes(key_id))
    replies = iter(pipe.execute())
    healths = read_key_healths(redis, keys, [(key_id, guild) for key_id, guilds in served.items() for guild in guilds])
    now_us = values.redis_time_of(next(replies)).us
    window_us = int(rate.window_s * 1_000_000)
    used: list[str] = []
    blocked: list[str] = []
    outcomes: list[str] = []
    paused: list[str] = []
    for key_id, guilds in served.items():
        label = f'key="{key_id}"'
        slots = values.scored(next(replies))
        used.append(
            f"wetbot_rewards_key_requests_in_window{{{label}}} {sum(1 for _, at in slots if at > now_us - window_us)}"
        )
        block = values.optional_raw(next(replies))
        blocked_s = max(0.0, (int(block) - now_us) / 1_000_000) if block else 0.0
        blocked.append(f"wetbot_rewards_key_blocked_seconds{{{label}}} {blocked_s:.3f}")
        counted = {name.decode(): int(n) for name, n in values.raw_map(next(replies)).items()}
        outcomes.extend(
            f'wetbot_rewards_key_requests_total{{{label},outcome="{outcome.value}"}} {counted.get(outcome.value, 0)}'
            for outcome in CallOutcome
        )
        for guild in guilds:
            health = healths[(key_id, guild)]
            state = 1 if health.paused or health.refused else 0
            paused.append(f'wetbot_rewards_key_paused{{{label},guild="{guild}"}} {state}')
    return [
        f"# HELP wetbot_rewards_key_requests_in_window Requests of the key in its last window ({rate}).",
        "# TYPE wetbot_rewards_key_requests_in_window gauge",
        *used,
        "# HELP wetbot_rewards_key_blocked_seconds Seconds the key stays blocked after a 429 (0 = not blocked).",
        "# TYPE wetbot_rewards_key_blocked_seconds gauge",
        *blocked,
        "# HELP wetbot_rewards_key_paused 1 while WetBot refuses the key for the guild (401/403, no success since).",
        "# TYPE wetbot_rewards_key_paused gauge",
        *paused,
        "# HELP wetbot_rewards_key_requests_total Requests of the key by outcome.",
        "# TYPE wetbot_rewards_key_requests_total counter",
        *outcomes,
    ]
