"""Telling Twitch redemptions' fates: Helix calls per 100 redemptions, and how soon a dead grant's points are back.

Against the Twitch simulator over HTTP and the Redis at ``--redis-url`` (DB 15, a random prefix, deleted at the
end): ``--redemptions`` redemptions of one reward are made and their grants watched, as the webhook does; all are
delivered at once and one ``Fulfiller`` pass tells Twitch (the calls it made are counted). Then ``--refunds``
grants die one at a time while a ``Fulfiller`` loop runs every ``--interval-s`` seconds (the Twitch process's
pace), and the time from each grant's death to the simulator's refund is measured. The baseline, measured in
the same run, is one bare Update Redemption Status round trip. Run from the repository root:
``.venv/bin/python -m bench.twitch_fulfilment``. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence

from pydantic import SecretStr
from redis import Redis

from bench.rig import delete_prefixes, key_base, machine, percentile
from producers.twitch.broadcaster_api import BroadcasterHelix
from producers.twitch.fulfilment import Fulfiller
from producers.twitch.oauth import OAuthClient
from producers.twitch.redemptions import RedemptionBook
from producers.twitch.tokens import TokenVault
from simulator.twitch import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from worker.grant import GrantItem, GrantState, NewGrant
from worker.keys import Keys
from worker.ledger import Ledger

__all__ = ["main"]

GUILD = "222222222222222222"
SCOPES = ("channel:manage:redemptions", "channel:read:redemptions")
ENCRYPTION_KEY = SecretStr("bench-token-key-0123456789abcdef0123")


class Channel:
    """A connected channel with one reward our app owns, and the service's side of it."""

    def __init__(self, sim: TwitchSimulator, redis: Redis, keys: Keys) -> None:
        self.sim = sim
        self.ledger = Ledger(redis, keys)
        self.book = RedemptionBook(redis, keys)
        self.oauth = OAuthClient(
            auth_url=sim.auth_url, client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET
        )
        vault = TokenVault(redis, keys, ENCRYPTION_KEY, self.oauth)
        pair = self.oauth.poll_device_token(self.oauth.start_device_flow(SCOPES), SCOPES)
        vault.store(pair, self.oauth.validate(pair.access_token))
        self.helix = BroadcasterHelix(api_url=sim.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault)
        self.reward_id = str(sim.create_reward("Daily chest", 100)["id"])
        self.made = 0

    def redeemed(self) -> tuple[str, str]:
        """A viewer redeems; the grant is made and watched. (redemption id, grant id)."""
        self.made += 1
        event = self.sim.redeem(self.reward_id, "cooler_user")
        rid = str(event["id"])
        new = NewGrant(
            guild_id=GUILD,
            user_id=f"3333333333{self.made:08d}",
            items=(GrantItem("chest", 1.0),),
            source="twitch",
            idempotency_key=f"twitch:{rid}:bench",
        )
        grant_id = self.ledger.create(new).grant.id
        self.book.watch(
            rid,
            broadcaster_id=str(event["broadcaster_user_id"]),
            reward_id=self.reward_id,
            refund=True,
            grant_ids=[grant_id],
        )
        return rid, grant_id

    def helix_calls(self) -> int:
        return sum(
            1 for r in self.sim.requests() if r.path.startswith("/helix/channel_points/custom_rewards/redemptions")
        )

    def close(self) -> None:
        self.helix.close()
        self.oauth.close()


def bare_round_trip_s(channel: Channel, runs: int) -> float:
    """The median of ``runs`` single-redemption Update Redemption Status calls, nothing else around them."""
    times = []
    for _ in range(runs):
        rid = str(channel.sim.redeem(channel.reward_id, "viewer_two")["id"])
        started = time.perf_counter()
        channel.helix.update_redemptions(channel.helix.broadcaster_id, channel.reward_id, [rid], "FULFILLED")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def calls_per_batch(channel: Channel, count: int) -> tuple[int, float]:
    """(Helix calls, seconds) for one pass telling ``count`` delivered redemptions."""
    grants = [channel.redeemed()[1] for _ in range(count)]
    for grant_id in grants:
        channel.ledger.transition(grant_id, GrantState.DELIVERED, "applied")
    before = channel.helix_calls()
    started = time.perf_counter()
    Fulfiller(channel.book, channel.helix).run_once()
    return channel.helix_calls() - before, time.perf_counter() - started


def refund_latencies(channel: Channel, count: int, interval_s: float) -> list[float]:
    """Seconds from each grant's death to its refund on Twitch, a ``Fulfiller`` pass every ``interval_s``."""
    stop = threading.Event()
    fulfiller = Fulfiller(channel.book, channel.helix)

    def loop() -> None:
        while not stop.wait(interval_s):
            fulfiller.run_once()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    latencies = []
    try:
        for n in range(count):
            rid, grant_id = channel.redeemed()
            time.sleep((n % 7) * interval_s / 7)  # deaths spread over the loop's period
            died = time.perf_counter()
            channel.ledger.transition(grant_id, GrantState.DEAD, "refused by WetBot")
            while rid not in channel.sim.refunds():
                time.sleep(0.005)
            latencies.append(time.perf_counter() - died)
    finally:
        stop.set()
        thread.join(10)
    return latencies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--redemptions", type=int, default=100)
    parser.add_argument("--refunds", type=int, default=20)
    parser.add_argument("--interval-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    prefix = f"{key_base()}-fulfilment"
    redis = Redis.from_url(args.redis_url)
    sim = TwitchSimulator(device_poll_interval_s=0.01, auto_approve_after_s=0.0).start()
    channel = Channel(sim, redis, Keys(prefix))
    try:
        print(machine())
        baseline = bare_round_trip_s(channel, 20)
        calls, pass_s = calls_per_batch(channel, args.redemptions)
        latencies = refund_latencies(channel, args.refunds, args.interval_s)
        print(f"baseline: one Update Redemption Status round trip, median of 20: {baseline * 1000:.1f} ms")
        print(
            f"{args.redemptions} delivered redemptions told in one pass: {calls} Helix calls "
            f"({calls * 100 / args.redemptions:.0f} per 100), {pass_s * 1000:.0f} ms "
            f"({pass_s / baseline:.1f}x the baseline)"
        )
        print(
            f"dead grant -> points refunded, {args.refunds} grants, a pass every {args.interval_s:g} s: "
            f"median {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 95):.2f} s, "
            f"max {max(latencies):.2f} s"
        )
    finally:
        channel.close()
        sim.stop()
        delete_prefixes(args.redis_url, [prefix])
        redis.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
