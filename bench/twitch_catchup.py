"""Twitch catch-up: time from a service restart to the redemptions missed while it was down granted.

Each run starts from nothing: the Twitch simulator (``simulator/twitch.py``, real HTTP on loopback) is
reset, a broadcaster connects (device flow, approved by the simulator), a reward ``Daily chest`` is created
by our app and ``--redemptions`` viewers' redemptions wait UNFULFILLED, as if made while the service was
down. Then the clock starts and the service "restarts" in-process: it reads the rules file, opens its state
(``producers.state.open_state``), loads the broadcaster's tokens and makes one ``CatchUp.run_once`` pass;
the clock stops when the pass returns with every redemption granted (queued for WetBot: delivery is the
worker's part, measured by the other benchmarks). Python's own start-up and imports are not in the figure
(``bench.cli_startup`` measures those).

Redis DB 15, one random ``bench<hex>-twitch-catchup-<run>`` prefix per run, deleted at the end (SCAN + DEL,
never a flush). Run from the repository root:
``.venv/bin/python -m bench.twitch_catchup [--redemptions 100 --runs 5]``.
Exit status 1 when a pass grants fewer than the redemptions made; 2 on a setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr
from redis import Redis

from bench.rig import DEFAULT_REDIS_URL, GUILD, delete_prefixes, key_base
from config.settings import Settings, load_settings
from producers.state import checked_rewards, close_state, open_state
from producers.twitch.broadcaster_api import BroadcasterHelix
from producers.twitch.catchup import CatchUp, CatchUpPass
from producers.twitch.oauth import OAuthClient
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_VIEWERS, TwitchSimulator
from worker.keys import Keys

__all__ = ["main"]

#: The guild's WetBot key (nothing is sent to WetBot: the grants only wait in the queue). Fresh per run.
API_KEY = secrets.token_hex(16)
SCOPES = ("channel:manage:redemptions", "channel:read:redemptions")
RULES = f"""
guild_id = "{GUILD}"

[[twitch.rules]]
name = "chest"
event = "channel.channel_points_custom_reward_redemption.add"
reward = "Daily chest"
items = [{{ id = "chest", amount = 1 }}]

[twitch.links]
{chr(10).join(f'"{viewer.id}" = "2222222222222222{n:02d}"' for n, viewer in enumerate(DEFAULT_VIEWERS))}
"""


def one_run(twitch: TwitchSimulator, settings: Settings, redemptions: int) -> tuple[float, CatchUpPass, int]:
    """(seconds from the restart to the grants made, the pass, Helix calls the restart made)."""
    twitch.reset()
    redis = Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_key_prefix)
    oauth = OAuthClient(auth_url=twitch.auth_url, client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET)
    vault = TokenVault(redis, keys, settings.token_encryption_key, oauth)
    try:
        pair = oauth.poll_device_token(oauth.start_device_flow(SCOPES), SCOPES)
        vault.store(pair, oauth.validate(pair.access_token))
        reward = twitch.create_reward("Daily chest", 100)
        for n in range(redemptions):
            twitch.redeem(str(reward["id"]), DEFAULT_VIEWERS[n % len(DEFAULT_VIEWERS)].login)
        calls_before = len(twitch.requests())
        started = time.perf_counter()
        done = asyncio.run(restart(settings, vault))
        elapsed = time.perf_counter() - started
        helix_calls = sum(1 for r in twitch.requests()[calls_before:] if r.path.startswith("/helix"))
        return elapsed, done, helix_calls
    finally:
        oauth.close()
        redis.close()


async def restart(settings: Settings, vault: TokenVault) -> CatchUpPass:
    """What a restarted process does before its first pass is over."""
    rewards, keyring = checked_rewards(settings)
    state = open_state(settings, rewards, keyring)
    helix = BroadcasterHelix(api_url=settings.twitch_api_url, client_id=DEFAULT_CLIENT_ID, vault=vault)
    try:
        return await CatchUp(state, helix).run_once()
    finally:
        helix.close()
        await close_state(state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redemptions", type=int, default=100, help="redemptions missed while down, per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    base = key_base()
    prefixes = [f"{base}-twitch-catchup-{run}" for run in range(args.runs)]
    times: list[float] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.toml"
        rules.write_text(RULES, encoding="utf-8")
        twitch = TwitchSimulator(device_poll_interval_s=0.01, auto_approve_after_s=0.0).start()
        try:
            for prefix in prefixes:
                settings = load_settings(
                    _env_file=None,
                    redis_url=args.redis_url,
                    redis_key_prefix=prefix,
                    wetbot_api_key=API_KEY,
                    rewards_file=rules,
                    twitch_client_id=DEFAULT_CLIENT_ID,
                    twitch_api_url=twitch.api_url,
                    twitch_auth_url=twitch.auth_url,
                    token_encryption_key=SecretStr(secrets.token_urlsafe(32)),
                )
                elapsed, done, calls = one_run(twitch, settings, args.redemptions)
                times.append(elapsed)
                failed |= done.granted != args.redemptions
                print(
                    f"{prefix}: {elapsed * 1000:7.1f} ms, {done.granted}/{args.redemptions} granted, "
                    f"{calls} Helix calls"
                )
        finally:
            twitch.stop()
            delete_prefixes(args.redis_url, prefixes)
    print(
        f"restart -> {args.redemptions} missed redemptions granted: median {statistics.median(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms over {args.runs} runs"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
