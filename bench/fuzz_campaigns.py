"""Fuzzing benchmark: every POST route and schemathesis over the app's OpenAPI document, against a real web process.

``wetbot_rewards.app:app`` runs under uvicorn (one worker, as the Procfile's ``web``) with every token and webhook
secret set, a rules file that grants for cheers, follows and new pledges, and its own Redis key prefix; no
worker runs. ``bench.fuzz_routes`` then sends ``--examples`` hypothesis-generated requests to each POST route
(``/grants`` and ``/links`` with the token, without, with a wrong one; ``/webhooks/twitch`` and
``/webhooks/patreon`` signed, unsigned, signed with another secret, tampered with) and as many to each
operation of the OpenAPI document with schemathesis (positive and negative cases, each with one of the same
token modes). The OpenAPI document is the app's own, built in-process from the same settings with
``API_DOCS=true`` (the served app keeps its docs off).

Prints, per campaign: requests sent, 5xx answers, and grants (or links) created by a request without the right
token or signature. Targets: 0 and 0 (exit status 1 otherwise, with the first offending requests).

Run from the repository root: ``.venv/bin/python -m bench.fuzz_campaigns [--examples 500]``. Needs Redis at
127.0.0.1:6379 (DB 15; ``--redis-url``); every key lives under a random ``bench<hex>-fuzz`` prefix that is
deleted at the end (SCAN + DEL, never a flush).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis

from bench.fuzz_routes import RULES, Secrets, Target, fuzz_everything
from bench.rig import (
    DEFAULT_REDIS_URL,
    delete_prefixes,
    free_port,
    key_base,
    log_path,
    machine,
    service_env,
    uvicorn_server,
)
from config.settings import load_settings
from wetbot_rewards.app import create_app

SECRETS = Secrets(
    grants_token="bench-fuzz-grants-token-3f9a1c",
    twitch_secret="bench-fuzz-twitch-secret-8d2e",
    patreon_secret="bench-fuzz-patreon-secret-5b7c",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=500, help="requests per POST route and per operation")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    prefix = f"{key_base()}-fuzz"
    print(f"machine: {machine()}; {args.examples} examples per campaign; prefix {prefix}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rewards.toml"
        rules.write_text(RULES, encoding="utf-8")
        settings = {
            "GRANTS_API_TOKEN": SECRETS.grants_token,
            "TWITCH_WEBHOOK_SECRET": SECRETS.twitch_secret,
            "PATREON_WEBHOOK_SECRET": SECRETS.patreon_secret,
            "WETBOT_API_KEY": "bench-fuzz-wetbot-key",  # not demo mode; no worker runs, nothing is sent
            "WETBOT_API_URL": "http://127.0.0.1:9",
            "REWARDS_FILE": str(rules),
        }
        openapi = create_app(
            load_settings(
                _env_file=None,
                redis_url=args.redis_url,
                redis_key_prefix=prefix,
                api_docs=True,
                **{name.lower(): value for name, value in settings.items()},
            )
        ).openapi()
        port = free_port()
        redis = Redis.from_url(args.redis_url)
        try:
            with (
                log_path("fuzz").open("wb") as log,
                uvicorn_server("wetbot_rewards.app:app", port, service_env(args.redis_url, prefix, settings), log),
            ):
                started = time.monotonic()
                tallies = fuzz_everything(
                    Target(f"http://127.0.0.1:{port}", redis, prefix, SECRETS), openapi, args.examples
                )
                took = time.monotonic() - started
        finally:
            redis.close()
            print(f"deleted {delete_prefixes(args.redis_url, [prefix])} Redis keys under {prefix}:")
    print(f"\n{'campaign':<28} {'requests':>9} {'5xx':>5} {'unauthenticated grants':>23}")
    for name, tally in tallies.items():
        print(f"{name:<28} {tally.requests:>9} {tally.server_errors:>5} {tally.unauthenticated_grants:>23}")
    total = sum(t.requests for t in tallies.values())
    print(
        f"{'all':<28} {total:>9} {sum(t.server_errors for t in tallies.values()):>5} "
        f"{sum(t.unauthenticated_grants for t in tallies.values()):>23}   ({took:.0f} s)"
    )
    failed = {name: tally.examples for name, tally in tallies.items() if tally.examples}
    for name, examples in failed.items():
        print(f"\n{name}:", *examples, sep="\n  ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
