"""The typed readings of Redis replies: what a reply holds, or a TypeError naming what came instead."""

from __future__ import annotations

import pytest
from redis import Redis

from worker import redis_values as values


def test_replies_read_as_the_caller_expects(redis: Redis, prefix: str) -> None:
    redis.hset(f"{prefix}:h", mapping={"a": "1", "b": "x"})
    redis.zadd(f"{prefix}:z", {"m": 2.5})
    redis.sadd(f"{prefix}:s", "one", "two")
    assert values.text_map(redis.hgetall(f"{prefix}:h")) == {"a": "1", "b": "x"}
    assert values.raw_map(redis.hgetall(f"{prefix}:h")) == {b"a": b"1", b"b": b"x"}
    assert values.text_map(redis.hgetall(f"{prefix}:missing")) == {}
    assert values.scored(redis.zrange(f"{prefix}:z", 0, -1, withscores=True)) == [("m", 2.5)]
    assert sorted(values.texts(redis.smembers(f"{prefix}:s"))) == ["one", "two"]
    assert values.optional_texts(redis.mget([f"{prefix}:missing", f"{prefix}:h2"])) == [None, None]
    assert values.integer(redis.zcard(f"{prefix}:z")) == 1
    assert values.optional_text(redis.get(f"{prefix}:missing")) is None


def test_redis_time_reads_the_servers_clock_in_every_unit(redis: Redis) -> None:
    before = values.redis_time_of(redis.time())
    now = values.redis_time(redis)
    assert 0 <= now.us - before.us < 5_000_000
    assert now.ms == now.us // 1000 and now.s == pytest.approx(now.us / 1_000_000)
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    assert values.redis_time_of(pipe.execute()[0]).seconds >= now.seconds


@pytest.mark.parametrize(
    ("decode", "reply"),
    [(values.text, 3), (values.integer, True), (values.integer, None), (values.number, [1]), (values.items, b"x")],
)
def test_a_reply_of_another_shape_is_a_type_error(decode: object, reply: object) -> None:
    assert callable(decode)
    with pytest.raises(TypeError, match="expected a Redis"):
        decode(reply)
