"""A Twitch simulator wired to its EventSub WebSocket server, and a way to run asyncio clients in a thread.

The simulator binds websocket subscriptions to the server's sessions, ends them with their session and sends
a ``revocation`` when a subscription is revoked (``sessions=``), as Twitch does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from simulator.eventsub_ws import EventSubWebSocketServer
from simulator.twitch import TwitchSimulator

#: Keepalive timeout the tests' sessions get (seconds): short, but a loaded machine still keeps up.
KEEPALIVE_S = 1.0


@dataclass
class WiredTwitch:
    sim: TwitchSimulator
    ws: EventSubWebSocketServer

    def session_subscriptions(self, session_id: str) -> list[dict[str, object]]:
        """The subscriptions the server holds for a session ([] for an unknown one)."""
        return self.ws.subscriptions(session_id) if session_id in self.ws.sessions() else []


def start_wired(**sim_options: object) -> WiredTwitch:
    ws = EventSubWebSocketServer(min_keepalive_s=0.2, default_keepalive_s=KEEPALIVE_S).start()
    sim = TwitchSimulator(sessions=ws, **sim_options).start()  # type: ignore[arg-type]
    return WiredTwitch(sim, ws)


@dataclass
class LoopThread:
    """Runs ``main(stop)`` on an event loop of its own thread until :meth:`stop`."""

    main: Callable[[asyncio.Event], Coroutine[object, object, None]]
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    error: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.main(self._stop))
        except Exception as exc:  # noqa: BLE001 -- handed to the test thread by stop()
            self.error.append(exc)
        finally:
            self.loop.close()

    def stop(self, timeout_s: float = 15.0) -> float:
        """Set the stop event and wait for ``main`` to end; returns the seconds it took."""
        import time

        started = time.monotonic()
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "did not stop in time"
        if self.error:
            raise self.error[0]
        return time.monotonic() - started

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
