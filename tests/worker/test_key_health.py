"""A key's 401/403 health: one object, one reader, one writer module, one scope string."""

from __future__ import annotations

import re
from pathlib import Path

from redis import Redis

from tests.conftest import GUILD
from worker import key_health
from worker.key_health import KeyHealth, read_key_health, read_key_healths
from worker.keys import Keys, scope

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("worker", "producers", "admin", "wetbot_rewards", "config", "simulator")
OTHER_GUILD = "444444444444444444"


def test_the_scope_is_one_key_for_one_guild() -> None:
    assert scope("k1", GUILD) == f"k1:{GUILD}"
    assert Keys("p").key_paused(scope("k1", GUILD)) == f"p:key:k1:{GUILD}:paused"


def test_a_key_nobody_refused_is_healthy(redis: Redis, keys: Keys) -> None:
    assert read_key_health(redis, keys, "k1", GUILD) == KeyHealth("k1", GUILD)
    assert read_key_healths(redis, keys, []) == {}


def test_a_refusal_pauses_the_key_for_that_guild_only_until_it_works_again(redis: Redis, keys: Keys) -> None:
    assert key_health.pause(redis, keys, "k1", GUILD, "HTTP 401: bad key", 300)
    assert not key_health.pause(redis, keys, "k1", GUILD, "HTTP 401: bad key", 300), "alerted once"
    both = read_key_healths(redis, keys, [("k1", GUILD), ("k1", OTHER_GUILD)])
    health = both[("k1", GUILD)]
    assert health.paused and 0 < health.pause_left_s <= 300 and health.pause_reason == "HTTP 401: bad key"
    assert health.refused and health.refusal == "HTTP 401: bad key"
    assert both[("k1", OTHER_GUILD)] == KeyHealth("k1", OTHER_GUILD)
    assert key_health.clear(redis, keys, "k1", GUILD)
    assert read_key_health(redis, keys, "k1", GUILD) == KeyHealth("k1", GUILD)
    assert not key_health.clear(redis, keys, "k1", GUILD), "nothing left to clear"


def test_once_the_pause_ends_one_probe_tests_the_refused_key(redis: Redis, keys: Keys) -> None:
    key_health.pause(redis, keys, "k1", GUILD, "HTTP 403", 60)
    redis.delete(keys.key_paused(scope("k1", GUILD)))  # the pause ran out
    health = read_key_health(redis, keys, "k1", GUILD)
    assert not health.paused and health.refused and health.pause_reason == ""
    assert key_health.claim_probe(redis, keys, "k1", GUILD, "run-a", 30) is None
    waiting = key_health.claim_probe(redis, keys, "k1", GUILD, "run-b", 30)
    assert waiting is not None and 0 < waiting <= 30
    assert 0 < read_key_health(redis, keys, "k1", GUILD).probe_left_s <= 30
    key_health.pause(redis, keys, "k1", GUILD, "HTTP 403", 60)
    assert read_key_health(redis, keys, "k1", GUILD).probe_left_s == 0, "a new refusal drops the probe"


def test_only_key_health_names_the_health_keys_or_builds_a_scope() -> None:
    """Every reader and writer of a key's health goes through ``worker.key_health``, and the scope
    string is built by ``worker.keys.scope`` alone."""
    names = re.compile(r"\.key_(paused|unauthorised|probe)\(")
    scope_string = re.compile(r"""f["']\{[a-z_.]*key_id\}:\{""")
    allowed = {ROOT / "worker" / "key_health.py", ROOT / "worker" / "keys.py"}
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
        if path not in allowed
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if names.search(line) or scope_string.search(line)
    ]
    assert offenders == []
