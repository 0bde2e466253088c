"""``python -m simulator twitch``: run the Twitch simulator as a process until SIGINT/SIGTERM.

Demo mode (``make run``) and the chaos cluster use it: other processes drive it through ``/_sim/...`` (see
``simulator.twitch``). Each request is printed as one line (method, path, status; never a token).
``--eventsub-port`` also serves the EventSub WebSocket server (``simulator.eventsub_ws``) there, bound to
this simulator, so websocket subscriptions work and ``/_sim/redeem`` delivers over the socket;
``--auto-approve-after`` approves device codes by itself (demo mode: ``twitch connect`` finishes alone).
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from types import FrameType

from simulator.eventsub_ws import EventSubWebSocketServer
from simulator.twitch import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, RequestRecord, TwitchSimulator


def _print_record(record: RequestRecord) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(record.at))
    fault = f" fault={record.fault}" if record.fault else ""
    print(f"{stamp} {record.method} {record.path} {record.status}{fault}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator twitch", description="Serve a simulated Twitch (OAuth + Helix)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8098, help="0 picks a free port (printed at start)")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--public", action="store_true", help="a public client: no client secret")
    parser.add_argument(
        "--auto-approve-after", type=float, default=None, metavar="S", help="approve device codes after S seconds"
    )
    parser.add_argument(
        "--authorize",
        choices=("ask", "approve", "deny"),
        default="ask",
        help="what /oauth2/authorize does: a consent page (ask), or approve / deny at once",
    )
    parser.add_argument("--poll-interval", type=float, default=5.0, help="device-flow interval (seconds)")
    parser.add_argument("--token-lifetime", type=float, default=14_400.0, help="access-token expires_in (seconds)")
    parser.add_argument("--rate-limit", type=int, default=800, help="Helix points per minute per token")
    parser.add_argument(
        "--eventsub-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve the EventSub WebSocket server on PORT (0 picks a free one); default: none",
    )
    parser.add_argument("--no-control", action="store_true", help="do not serve /_sim/... endpoints")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sessions = None
    if args.eventsub_port is not None:
        sessions = EventSubWebSocketServer(host=str(args.host), port=int(args.eventsub_port)).start()
    sim = TwitchSimulator(
        client_id=str(args.client_id),
        client_secret=None if args.public else str(args.client_secret),
        access_token_lifetime_s=float(args.token_lifetime),
        device_poll_interval_s=float(args.poll_interval),
        auto_approve_after_s=args.auto_approve_after,
        authorize=str(args.authorize),
        rate_limit=int(args.rate_limit),
        host=str(args.host),
        port=int(args.port),
        control=not args.no_control,
        on_request=_print_record,
        sessions=sessions,
    ).start()
    eventsub = f" TWITCH_EVENTSUB_WS_URL={sim.ws_url}" if sessions is not None else ""
    print(
        f"Twitch simulator listening on {sim.root_url} (TWITCH_AUTH_URL={sim.auth_url} TWITCH_API_URL={sim.api_url}"
        f"{eventsub}; broadcaster {sim.broadcaster.login})",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        if sessions is not None:
            sessions.stop()
    print("Twitch simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
