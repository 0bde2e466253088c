"""Producers answer 2xx only once enough replicas have the grant (``REDIS_WAIT_REPLICAS``, ``worker.replication``).

The shared test Redis has no replicas: asked for one confirmation, every producer answers 503 (its
source retries), and the grant it wrote waits on the primary for that retry. The chaos suite's
``failover`` scenario shows the same producers answering 2xx with a replica in sync.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from devtools.chaos.harness import PATREON_SECRET, TOKEN, TWITCH_SECRET, Delivery, Load, rewards_toml
from producers.patreon.members import WRITTEN_FIELD
from tests.conftest import SettingsFactory
from wetbot_rewards.app import create_app
from worker.keys import Keys
from worker.ledger import Ledger

#: One of each source: a cheer, a channel-point redemption, a Patreon pledge, a ``POST /grants``.
LOAD = Load(4)


@pytest.fixture
def chaos_rules(tmp_path: Path) -> Path:
    path = tmp_path / "chaos-rewards.toml"
    path.write_text(rewards_toml(LOAD.twitch_links()), encoding="utf-8")
    return path


@pytest.mark.parametrize("delivery", LOAD.deliveries, ids=[d.name for d in LOAD.deliveries])
@pytest.mark.parametrize(("replicas", "status"), [(0, "2xx"), (1, "503")])
def test_a_producer_answers_2xx_only_when_the_replicas_confirm(
    delivery: Delivery,
    replicas: int,
    status: str,
    make_settings: SettingsFactory,
    chaos_rules: Path,
    redis: Redis,
    keys: Keys,
) -> None:
    settings = make_settings(
        redis_wait_replicas=replicas,
        redis_wait_timeout_s=0.05,
        grants_api_token=TOKEN,
        twitch_webhook_secret=TWITCH_SECRET,
        patreon_webhook_secret=PATREON_SECRET,
        rewards_file=chaos_rules,
    )
    with TestClient(create_app(settings)) as client:
        answers = [client.post(delivery.path, content=delivery.body, headers=delivery.headers) for _ in range(2)]
    codes = [answer.status_code for answer in answers]
    if status == "503":
        assert codes == [503, 503], [a.text for a in answers]  # the source's retry is refused alike
        assert answers[0].headers["Retry-After"]
    else:
        assert all(200 <= code < 300 for code in codes), [a.text for a in answers]
    # Either way the grant is on the primary, once: the retry that a replica confirms finds it.
    assert len(Ledger(redis, keys).list_grants()) == 1
    if delivery.name.startswith("patreon") and replicas:
        members = list(redis.scan_iter(match=f"{keys.prefix}:*patreon-member*", count=1000))
        assert members and all(redis.hget(m, WRITTEN_FIELD) for m in members)


@pytest.mark.parametrize("replicas", [0, 1])
def test_readyz_warns_when_too_few_replicas_are_in_sync(replicas: int, make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(redis_wait_replicas=replicas))) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 200
    shortfall = [w for w in ready.json()["warnings"] if "REDIS_WAIT_REPLICAS" in w]
    assert len(shortfall) == replicas  # the shared test Redis has no replica
