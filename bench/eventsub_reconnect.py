"""EventSub WebSocket reconnect time: a ``session_reconnect`` handoff, and a fresh session after a drop.

Against the Twitch simulator's EventSub WebSocket server and Helix (real sockets on loopback) and the Redis at
``--redis-url`` (DB 15, a random prefix, deleted at the end): the Twitch process's ``EventSubClient`` holds a
session with the rules' subscriptions. Then ``--handoffs`` times the server sends ``session_reconnect``; the
figure is the client's own measure, from the reconnect URL's connection opening to the old socket closed
(the new welcome in between; no subscription is created again). Then ``--drops`` times the server closes the
socket with 4000; the figure is the time from the close to a new session holding its subscriptions again
(the client's first backoff, 1 s, included). The baseline, measured in the same run, is a bare WebSocket
connection to the same server until its welcome. Run from the repository root:
``.venv/bin/python -m bench.eventsub_reconnect``. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import SecretStr
from redis import Redis
from websockets.sync.client import connect

from bench.rig import delete_prefixes, key_base, machine, percentile
from producers.inbox import EventOutcome, Outcome
from producers.twitch.broadcaster_api import BroadcasterHelix
from producers.twitch.eventsub_ws import EventSubClient
from producers.twitch.oauth import OAuthClient
from producers.twitch.subscriptions import WantedSubscription
from producers.twitch.tokens import TokenVault
from simulator.eventsub_ws import CLOSE_INTERNAL_ERROR, EventSubWebSocketServer
from simulator.twitch import DEFAULT_BROADCASTER, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TwitchSimulator
from worker.keys import Keys

__all__ = ["main"]

SCOPES = ("bits:read", "channel:read:redemptions")
ENCRYPTION_KEY = SecretStr("bench-token-key-0123456789abcdef0123")
BROADCASTER = {"broadcaster_user_id": DEFAULT_BROADCASTER.id}
WANTED = (
    WantedSubscription("channel.cheer", "1", BROADCASTER),
    WantedSubscription("channel.channel_points_custom_reward_redemption.add", "1", BROADCASTER),
)
WAIT_S = 30.0


class Gaps:
    """Counts gaps (a handoff must report none)."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def gap(self, reason: str, since: float | None = None) -> None:
        self.reasons.append(reason)

    def seen(self, at: float) -> None:
        del at


async def ignore(
    message_id: str, message_type: str, payload: dict[str, Any], headers: Mapping[str, str], body: bytes
) -> EventOutcome:
    """No notification is sent here; whatever arrives is not the figure's business."""
    return EventOutcome(Outcome.IGNORED, ignored="benchmark")


def wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.002)


def bare_welcome_s(url: str, runs: int) -> float:
    """The median of ``runs`` bare connections until the welcome (each closed at once; none subscribes)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with connect(url) as ws:
            ws.recv(timeout=10)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def describe(values: Sequence[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"median {statistics.median(ms):.1f} ms, p95 {percentile(ms, 95):.1f} ms, max {max(ms):.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--handoffs", type=int, default=20)
    parser.add_argument("--drops", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args(argv)
    prefix = f"{key_base()}-eventsub"
    redis = Redis.from_url(args.redis_url)
    ws = EventSubWebSocketServer().start()
    sim = TwitchSimulator(sessions=ws, device_poll_interval_s=0.01, auto_approve_after_s=0.0).start()
    oauth = OAuthClient(auth_url=sim.auth_url, client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET)
    vault = TokenVault(redis, Keys(prefix), ENCRYPTION_KEY, oauth)
    pair = oauth.poll_device_token(oauth.start_device_flow(SCOPES), SCOPES)
    vault.store(pair, oauth.validate(pair.access_token))
    helix = BroadcasterHelix(api_url=sim.api_url, client_id=DEFAULT_CLIENT_ID, vault=vault)
    gaps = Gaps()
    client = EventSubClient(url=ws.url, helix=helix, wanted=lambda: WANTED, deliver=ignore, gaps=gaps)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(client.run(stop),), daemon=True)
    thread.start()

    def subscribed() -> bool:
        session = client.session_id
        return bool(session) and session in ws.sessions() and len(ws.subscriptions(session)) == len(WANTED)

    try:
        print(machine())
        baseline_ms = bare_welcome_s(ws.url, 20) * 1000
        print(f"baseline: a bare connection until its welcome, median of 20: {baseline_ms:.1f} ms")
        wait_until(subscribed, "the first session")
        handoffs = []
        for _ in range(args.handoffs):
            before = client.last_handoff_s
            ws.reconnect(client.session_id)
            wait_until(lambda before=before: client.last_handoff_s not in (None, before), "a handoff")
            handoffs.append(client.last_handoff_s or 0.0)
        created = client.created
        print(
            f"WebSocket reconnect time after session_reconnect ({args.handoffs} handoffs): {describe(handoffs)}; "
            f"subscriptions created again: {created - len(WANTED)}, gaps: {len(gaps.reasons)}"
        )
        fresh = []
        for _ in range(args.drops):
            old = client.session_id
            started = time.perf_counter()
            ws.close(old, CLOSE_INTERNAL_ERROR)
            wait_until(lambda old=old: client.session_id not in ("", old) and subscribed(), "a new session")
            fresh.append(time.perf_counter() - started)
        print(
            f"after a 4000 close, until a new session holds its subscriptions ({args.drops} drops, 1 s backoff "
            f"included): {describe(fresh)}; gaps reported: {len(gaps.reasons)}"
        )
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        helix.close()
        oauth.close()
        sim.stop()
        ws.stop()
        redis.close()
        delete_prefixes(args.redis_url, [prefix])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
