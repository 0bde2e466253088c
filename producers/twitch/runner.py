"""``wetbot-rewards twitch run``: the Twitch process (Procfile ``eventsub``, compose service ``eventsub``).

One process at a time works, across hosts: the leader holds a lease in Redis (``Keys.twitch_runner_lease``)
and renews it; another waits and takes over once the lease runs out (the leader died or lost Redis). Two
leaders would open two EventSub sessions (Twitch allows three per user) and tell Twitch every fate twice.

The leader, once a channel is connected, runs periodic tasks (the reward sync: ``[[twitch.rewards]]``
created or updated and titles resolved, ``producers.twitch.reward_catalogue``; token validation as Twitch
requires, the fulfilment of redemptions, with ``TWITCH_TRANSPORT=webhook`` the subscription sweep
(``producers.twitch.subscription_sweep``), catch-up: at start, every few minutes and soon after a gap) and, with
``TWITCH_TRANSPORT=websocket``, the EventSub WebSocket session (``producers.twitch.eventsub_ws``). Without
a connected channel it idles, says so once and looks again every ``IDLE_CHECK_S``: a Procfile process must
not exit by itself. SIGTERM (and SIGINT) stop it within a few seconds, the lease released so a successor
need not wait for it to expire.

A gap in delivery (a restart, a drop, a revocation) is ``TwitchRunner.gap``: tasks marked ``after_gap``
(the sweep, catch-up) run soon, and the period for which cheers, subs and follows may have been missed is
recorded (``producers.twitch.gaps.record_gap``), logged and sent to Sentry: Helix has no history of those
events (docs/sources-sync.md §2). A gap recorded by another process (a webhook revocation reaches the web
process) sets ``Keys.twitch_gap_requested``, which the leader looks at every ``GAP_FLAG_CHECK_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from redis import Redis
from redis.exceptions import RedisError

from config.keyring import Keyring
from config.rewards import RewardsConfig
from config.settings import Settings
from producers.state import AppState, checked_rewards, close_state, open_state
from producers.twitch.broadcaster_api import BroadcasterHelix
from producers.twitch.catchup import CatchUp
from producers.twitch.eventsub_ws import EventSubClient, GapSink, deliver_to
from producers.twitch.fulfilment import Fulfiller
from producers.twitch.gaps import record_gap, take_gap_request
from producers.twitch.helix import HelixClient
from producers.twitch.redemptions import RedemptionBook
from producers.twitch.reward_catalogue import SYNC_EVERY_S, RewardCatalogue, RewardSync
from producers.twitch.subscription_status import SubscriptionStatusBook
from producers.twitch.subscription_sweep import SWEEP_EVERY_S, SweepPass, webhook_callback
from producers.twitch.subscriptions import wanted_subscriptions
from producers.twitch.tokens import AuthState, TokenVault
from worker import redis_values as values
from worker.connections import connect_redis
from worker.keys import Keys
from worker.observability import configure_logging, init_sentry
from worker.scripts import load_script

__all__ = [
    "PeriodicTask",
    "RunnerLease",
    "TwitchRunner",
    "run_from_settings",
]

logger = logging.getLogger("wetbot_rewards.twitch.runner")

#: Seconds the leader's lease lasts unless renewed (renewed every third of it).
LEASE_S: Final = 15.0
#: Seconds between looks at whether a channel is connected while idle.
IDLE_CHECK_S: Final = 10.0
#: Seconds between fulfilment passes.
FULFIL_EVERY_S: Final = 2.0
#: Seconds between catch-up passes (also run soon after each gap).
CATCH_UP_EVERY_S: Final = 300.0
#: Seconds between asking the vault whether a validation is due (it validates hourly, docs/sources-sync.md §4).
VALIDATE_CHECK_S: Final = 60.0
#: Seconds between looks at ``Keys.twitch_gap_requested`` (a webhook revocation asks for catch-up through it).
GAP_FLAG_CHECK_S: Final = 1.0
#: Seconds between writes of the last message's time (a restart's gap starts there).
SEEN_WRITE_EVERY_S: Final = 5.0


@dataclass(frozen=True)
class PeriodicTask:
    """A pass run every ``every_s`` seconds by the leader (in a thread: passes may block on Helix; a ``run``
    that returns an awaitable has it awaited on the runner's loop, where the service's asyncio Redis lives).

    ``after_gap``: also run soon after a gap in delivery (catch-up). A pass's error is logged and the next
    pass tries again.
    """

    name: str
    every_s: float
    run: Callable[[], object]
    after_gap: bool = False


class RunnerLease:
    """The leader's lease: SET NX PX with a token of its own, renewed and released only while it is ours."""

    def __init__(self, redis: Redis, keys: Keys, lease_s: float) -> None:
        self._redis = redis
        self._key = keys.twitch_runner_lease()
        self._ms = max(1, round(lease_s * 1000))
        self._token = secrets.token_hex(16)
        self._extend = load_script(redis, "extend_lease")
        self._release = load_script(redis, "release_lock")

    def acquire(self) -> bool:
        return bool(self._redis.set(self._key, self._token, nx=True, px=self._ms))

    def renew(self) -> bool:
        """False when the lease is no longer ours (it expired and another runner may have it)."""
        return bool(self._extend(keys=[self._key], args=[self._token, self._ms]))

    def release(self) -> None:
        self._release(keys=[self._key], args=[self._token])


class TwitchRunner(GapSink):
    """The leader's work; see the module docstring.

    Parameters:
      redis, keys: the service's Redis and key layout.
      tasks: the periodic passes.
      ready: None when a channel is connected and the work can start, else why not (said once while idle).
      eventsub: makes the EventSub WebSocket client, told of gaps through this runner (None: webhook transport).
      lease_s: how long the lease lasts unless renewed.
      idle_check_s: seconds between looks at ``ready`` while idle.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        tasks: Sequence[PeriodicTask],
        ready: Callable[[], str | None],
        eventsub: Callable[[GapSink], EventSubClient] | None = None,
        lease_s: float = LEASE_S,
        idle_check_s: float = IDLE_CHECK_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._tasks = tuple(tasks)
        self._ready = ready
        self._eventsub = eventsub
        self._lease_s = lease_s
        self._idle_check_s = idle_check_s
        self._lease = RunnerLease(redis, keys, lease_s)
        self._catch_up_soon = threading.Event()
        self._seen_written = 0.0
        #: True while this runner holds the lease and works.
        self.leading = False
        #: The EventSub client of the current leadership (None: none).
        self.client: EventSubClient | None = None

    # -- gaps ---------------------------------------------------------------------------------------
    def gap(self, reason: str, since: float | None = None) -> None:
        """Events may have been missed from ``since`` until now: catch up soon, record and report the period."""
        self._catch_up_soon.set()
        record_gap(self._redis, self._keys, reason, since)

    def seen(self, at: float) -> None:
        """A message arrived: written now and then, so a restart knows where its gap starts."""
        if at - self._seen_written < SEEN_WRITE_EVERY_S:
            return
        self._seen_written = at
        try:
            self._redis.hset(self._keys.twitch_delivery(), "last_seen_at", repr(at))
        except RedisError as exc:
            logger.warning("the last EventSub message's time was not recorded (%s)", type(exc).__name__)

    def _last_seen(self) -> float | None:
        raw = values.optional_text(self._redis.hget(self._keys.twitch_delivery(), "last_seen_at"))
        return float(raw) if raw is not None else None

    # -- running ------------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (the CLI's way in)."""
        asyncio.run(_until_signalled(self.serve))

    async def serve(self, stop: asyncio.Event) -> None:
        """Wait for the lease, work while it is ours, again after losing it, until ``stop``."""
        said_waiting = False
        while not stop.is_set():
            try:
                got = await asyncio.to_thread(self._lease.acquire)
            except RedisError as exc:
                logger.warning("Twitch runner: Redis unavailable (%s); trying again", type(exc).__name__)
                got = False
            if not got:
                if not said_waiting:
                    logger.info("Twitch runner: another one is at work; this one takes over if it stops")
                    said_waiting = True
                await _wait(stop, self._lease_s / 3)
                continue
            said_waiting = False
            logger.info("Twitch runner: this process is the one at work")
            try:
                await self._lead(stop)
            except Exception:  # a bug must not end a Procfile process: logged, then a fresh start
                logger.exception("Twitch runner: the work failed; starting again")
                await _wait(stop, 1.0)
            finally:
                self.leading = False
                self.client = None
                with contextlib.suppress(RedisError):
                    await asyncio.to_thread(self._lease.release)

    async def _lead(self, stop: asyncio.Event) -> None:
        self.leading = True
        halt = asyncio.Event()
        keeper = asyncio.ensure_future(self._keep_lease(stop, halt))
        try:
            await self._work(halt)
        finally:
            halt.set()
            await keeper

    async def _keep_lease(self, stop: asyncio.Event, halt: asyncio.Event) -> None:
        """Renew the lease every third of it; halt the work when ``stop`` is set or the lease was lost.

        A lease that could not be renewed for as long as it lasts counts as lost: another runner may hold it.
        """
        renewed = time.monotonic()
        while not halt.is_set():
            await _wait_any((stop, halt), self._lease_s / 3)
            if stop.is_set():
                halt.set()
                return
            if halt.is_set():
                return
            try:
                ours = await asyncio.to_thread(self._lease.renew)
            except RedisError as exc:
                logger.warning("Twitch runner: the lease was not renewed (%s)", type(exc).__name__)
                ours = time.monotonic() - renewed < self._lease_s
            else:
                renewed = time.monotonic() if ours else renewed
            if not ours:
                logger.warning("Twitch runner: the lease was lost (another runner may work now); stopping")
                halt.set()

    async def _work(self, halt: asyncio.Event) -> None:
        said: str | None = None
        while not halt.is_set():
            reason = await asyncio.to_thread(self._ready)
            if reason is None:
                break
            if reason != said:
                logger.warning("Twitch: %s; idle, looking again every %.0f s", reason, self._idle_check_s)
                said = reason
            await _wait(halt, self._idle_check_s)
        if halt.is_set():
            return
        logger.info("Twitch: a channel is connected; the Twitch work starts")
        jobs = [asyncio.ensure_future(self._periodic(halt))]
        if self._eventsub is not None:
            client = self.client = self._eventsub(self)
            last = await asyncio.to_thread(self._last_seen)
            if last is not None:
                client.down_since("the Twitch process was not running", last)
            jobs.append(asyncio.ensure_future(client.run(halt)))
        try:
            await asyncio.gather(*jobs)
        finally:
            for job in jobs:
                job.cancel()

    async def _periodic(self, halt: asyncio.Event) -> None:
        due = dict.fromkeys(range(len(self._tasks)), 0.0)
        next_flag_look = 0.0
        while not halt.is_set():
            if time.monotonic() >= next_flag_look:
                next_flag_look = time.monotonic() + GAP_FLAG_CHECK_S
                await self._take_gap_request()
            if self._catch_up_soon.is_set():
                self._catch_up_soon.clear()
                for index, task in enumerate(self._tasks):
                    if task.after_gap:
                        due[index] = 0.0
            for index, task in enumerate(self._tasks):
                if halt.is_set() or time.monotonic() < due[index]:
                    continue
                await _run_task(task)
                due[index] = time.monotonic() + task.every_s
            wake = min(due.values(), default=time.monotonic() + 1.0) - time.monotonic()
            await _wait(halt, min(max(wake, 0.05), 0.5))

    async def _take_gap_request(self) -> None:
        """A gap recorded elsewhere (a webhook revocation, ``producers.twitch.gaps``): the after-gap passes soon."""
        try:
            if await asyncio.to_thread(take_gap_request, self._redis, self._keys):
                logger.info("Twitch runner: a gap was recorded; sweeping and catching up now")
                self._catch_up_soon.set()
        except RedisError as exc:
            logger.warning("Twitch runner: the gap flag was not read (%s)", type(exc).__name__)


async def _run_task(task: PeriodicTask) -> None:
    """A pass in a thread; a pass that is a coroutine (it works on the loop's Redis client) on the loop."""
    try:
        result = await asyncio.to_thread(task.run)
        if inspect.isawaitable(result):
            await result
    except Exception:  # one failed pass must not stop the others; the next pass tries again
        logger.exception("Twitch runner: %s failed", task.name)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def _wait_any(events: Sequence[asyncio.Event], seconds: float) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def _until_signalled(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(stop)


# -- the process as the settings describe it ---------------------------------------------------------------


def _ready(settings: Settings, vault: TokenVault | None) -> Callable[[], str | None]:
    def ready() -> str | None:
        if vault is None:
            return "TWITCH_CLIENT_ID is not set"
        if settings.token_encryption_key is None:
            return "TOKEN_ENCRYPTION_KEY is not set: the stored tokens cannot be read"
        state = vault.state()
        if state.state is AuthState.NOT_CONNECTED:
            return "no channel is connected (run wetbot-rewards twitch connect)"
        return None

    return ready


def standard_tasks(redis: Redis, keys: Keys, vault: TokenVault, helix: BroadcasterHelix) -> list[PeriodicTask]:
    """The passes every Twitch process runs once a channel is connected."""
    return [
        PeriodicTask("token validation", VALIDATE_CHECK_S, vault.validate_if_due),
        PeriodicTask("redemption fulfilment", FULFIL_EVERY_S, Fulfiller(RedemptionBook(redis, keys), helix).run_once),
    ]


def _app_helix(settings: Settings) -> HelixClient | None:
    """Helix with the app access token (webhook subscriptions need it); None without the client secret."""
    if settings.twitch_client_id is None or settings.twitch_client_secret is None:
        return None
    return HelixClient(
        api_url=settings.twitch_api_url,
        auth_url=settings.twitch_auth_url,
        client_id=settings.twitch_client_id,
        client_secret=settings.twitch_client_secret.get_secret_value(),
    )


def _sweep_pass(
    settings: Settings,
    rewards: RewardsConfig,
    helix: HelixClient | None,
    vault: TokenVault,
    status: SubscriptionStatusBook,
) -> SweepPass:
    """The webhook subscription sweep for the connected broadcaster, to ``PUBLIC_URL``'s callback."""
    secret = settings.twitch_webhook_secret
    return SweepPass(
        helix=helix,
        section=rewards.twitch,
        broadcaster_id=lambda: vault.state().user_id,
        callback=webhook_callback(settings.public_url),
        secret=None if secret is None else secret.get_secret_value(),
        status=status,
    )


def _client_factory(
    url: str, state: AppState, helix: BroadcasterHelix, status: SubscriptionStatusBook | None = None
) -> Callable[[GapSink], EventSubClient]:
    """The EventSub client of one leadership: its own Helix session (the passes use another, in their thread)."""
    section = state.rewards.twitch

    def make(gaps: GapSink) -> EventSubClient:
        return EventSubClient(
            url=url,
            helix=helix,
            wanted=lambda: wanted_subscriptions(section, helix.broadcaster_id),
            deliver=deliver_to(state),
            gaps=gaps,
            status=status,
        )

    return make


def run_from_settings(settings: Settings) -> int:
    """Build the process from the settings and serve until a signal; returns the exit status (0)."""
    configure_logging(settings)
    init_sentry(settings)
    rewards, keyring = checked_rewards(settings)
    asyncio.run(_until_signalled(lambda stop: _serve_settings(settings, rewards, keyring, stop)))
    return 0


async def _serve_settings(settings: Settings, rewards: RewardsConfig, keyring: Keyring, stop: asyncio.Event) -> None:
    redis = connect_redis(settings)
    keys = Keys(settings.redis_key_prefix)
    client_id = settings.twitch_client_id
    vault = TokenVault.from_settings(settings, redis) if client_id is not None else None
    helices: list[BroadcasterHelix] = []
    tasks: list[PeriodicTask] = []
    state: AppState | None = None
    eventsub: Callable[[GapSink], EventSubClient] | None = None
    app_helix: HelixClient | None = None
    if vault is not None and client_id is not None:
        helices = [BroadcasterHelix(api_url=settings.twitch_api_url, client_id=client_id, vault=vault) for _ in "abc"]
        state = open_state(settings, rewards, keyring)
        sync = RewardSync(helices[0], rewards.twitch, RewardCatalogue(redis, keys))
        tasks = [
            PeriodicTask("reward sync", SYNC_EVERY_S, sync.run_once),  # first: catch-up lists the rewards it made
            *standard_tasks(redis, keys, vault, helices[0]),
        ]
        if settings.twitch_transport == "webhook":
            app_helix = _app_helix(settings)
            sweep = _sweep_pass(settings, rewards, app_helix, vault, SubscriptionStatusBook(redis, keys))
            # Before catch-up: after a revocation the subscription comes back first, then the poll covers the gap.
            tasks.append(PeriodicTask("subscription sweep", SWEEP_EVERY_S, sweep.run_once, after_gap=True))
        tasks.append(PeriodicTask("catch-up", CATCH_UP_EVERY_S, CatchUp(state, helices[1]).run_once, after_gap=True))
        if settings.twitch_transport == "websocket":
            eventsub = _client_factory(
                settings.twitch_eventsub_ws_url, state, helices[2], SubscriptionStatusBook(redis, keys)
            )
    runner = TwitchRunner(redis, keys, tasks=tasks, ready=_ready(settings, vault), eventsub=eventsub)
    try:
        await runner.serve(stop)
    finally:
        for made in helices:
            made.close()
        if app_helix is not None:
            app_helix.close()
        if vault is not None:
            vault.oauth.close()
        if state is not None:
            await close_state(state)
        redis.close()
