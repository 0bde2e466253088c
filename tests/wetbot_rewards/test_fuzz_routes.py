"""Fuzzing every POST route with and without its token or signature, and schemathesis over the OpenAPI document.

A short run of ``bench/fuzz_routes.py``'s campaigns (``bench/fuzz_campaigns.py`` runs them longer) against the real
app under uvicorn on Redis DB 15: no answer may be a 5xx, and no request without the right token or signature may
add a grant or a link.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from bench.fuzz_routes import RULES, Secrets, Target, fuzz_everything
from tests.conftest import TOKEN, SettingsFactory, serve_app
from wetbot_rewards.app import create_app

SECRETS = Secrets(grants_token=TOKEN, twitch_secret="twitch-fuzz-secret-7c2e", patreon_secret="patreon-fuzz-6b1d")
#: Requests per POST route and per schemathesis operation: about 15 s in all.
EXAMPLES = 60


@pytest.fixture
def target(make_settings: SettingsFactory, rewards_file: Path, redis: Redis, prefix: str) -> Iterator[Target]:
    rewards_file.write_text(RULES, encoding="utf-8")
    settings = make_settings(twitch_webhook_secret=SECRETS.twitch_secret, patreon_webhook_secret=SECRETS.patreon_secret)
    with serve_app(create_app(settings)) as base_url:
        yield Target(base_url, redis, prefix, SECRETS)


def test_no_route_answers_5xx_or_grants_without_its_token(make_settings: SettingsFactory, target: Target) -> None:
    openapi = create_app(make_settings(api_docs=True)).openapi()
    tallies = fuzz_everything(target, openapi, EXAMPLES)
    for name, tally in tallies.items():
        assert tally.requests >= EXAMPLES, name
        assert (tally.server_errors, tally.unauthenticated_grants) == (0, 0), (name, tally.examples)
    assert target.writes() > 0  # the right tokens and signatures did get through: the check can see a write
