"""One measured run of ``bench/limiter.py``: a backlog drained by worker processes against a strict simulator.

:class:`DrainRun` gives each run a fresh strict simulator (N per W, 429-answered requests counted), starts
the workers once the caller has queued its backlog, waits until the caller says the backlog is drained or
the cap (``Config.timeout_s`` after the first request) is reached, and stops them. Every figure of
:class:`RunResult` then comes from the simulator's own request log, with the arrival times its limiter
uses, so the two runs are measured the same way whatever drained them; :func:`print_report` puts them
side by side.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO

from bench.rig import BOOT_TIMEOUT_S, dramatiq_workers, format_pct, format_ratio, format_secs, stop, wetbot_simulator
from simulator.wetbot import RequestRecord, WetbotSimulator


@dataclass(frozen=True)
class Config:
    """One benchmark invocation's parameters."""

    limit: int
    window_s: float
    grants: int
    processes: int
    threads: int
    timeout_s: float
    redis_url: str
    http_timeout_s: float
    stock_min_backoff_ms: int
    stock_max_retries: int
    skip_stock: bool

    @property
    def ideal_drain_s(self) -> float:
        """Shortest first-to-last-accepted time a strict "N in any W" allows for the whole backlog."""
        return (math.ceil(self.grants / self.limit) - 1) * self.window_s


@dataclass
class RunResult:
    """What one run achieved, measured on the simulator's side."""

    name: str
    grants: int
    delivered: int
    accepted: int
    rejected_429: int
    other_errors: int
    total_requests: int
    elapsed_s: float | None
    utilisation: float | None
    drain_ratio: float | None
    max_accepted_in_window: int
    max_counted_in_window: int
    retries: int
    #: seconds from the first request to the end of measurement (drained, or the cap)
    measured_s: float
    timed_out: bool
    accepted_per_window: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def drained(self) -> bool:
        return self.delivered >= self.grants


class FirstRequest:
    """Notes when the simulator saw its first ``/api`` request (called from its handler threads)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.mono: float | None = None

    def __call__(self, record: RequestRecord) -> None:
        if self.mono is None:
            self.mono = record.mono
            self.event.set()


class DrainRun:
    """A context manager: the simulator runs inside the block; workers still running at its end are stopped."""

    def __init__(self, config: Config, api_key: str) -> None:
        self.config = config
        self.first = FirstRequest()
        self.sim = wetbot_simulator(api_key, limit=config.limit, window_s=config.window_s, on_request=self.first)
        self.timed_out = False
        self.end_mono = 0.0
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> DrainRun:
        self.sim.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        stop(self._processes)
        self.sim.stop()

    def drain(self, module: str, queue: str, env: Mapping[str, str], log: IO[bytes], done: Callable[[], bool]) -> None:
        """Run ``dramatiq <module>`` workers on ``queue`` until ``done()`` or the cap, then stop them.

        Raises:
          RuntimeError: when the workers die or never send anything.
        """
        config = self.config
        self._processes = dramatiq_workers(
            module, queue, processes=config.processes, threads=config.threads, env=env, log=log
        )
        self.timed_out, self.end_mono = wait_for_drain(self._processes, self.first, config, done)
        stop(self._processes)
        self._processes = []

    def measure(self, name: str, *, delivered: int, retries: int) -> RunResult:
        """The run's figures from the simulator's request log, once :meth:`drain` returned."""
        assert self.first.mono is not None  # drain() returns only after the first request
        return measure(
            name,
            self.config,
            self.sim,
            delivered=delivered,
            retries=retries,
            start_mono=self.first.mono,
            end_mono=self.end_mono,
            timed_out=self.timed_out,
        )


def wait_for_drain(
    processes: Sequence[subprocess.Popen[bytes]],
    first: FirstRequest,
    config: Config,
    done: Callable[[], bool],
) -> tuple[bool, float]:
    """Wait until ``done()`` or ``config.timeout_s`` after the first request.

    Returns (timed_out, end) with ``end`` a ``time.monotonic()`` value.
    Raises RuntimeError when the workers die or never send anything.
    """
    launched = time.monotonic()
    if not first.event.wait(BOOT_TIMEOUT_S):
        raise RuntimeError(f"no request reached the simulator within {BOOT_TIMEOUT_S:.0f}s of starting the workers")
    assert first.mono is not None
    deadline = first.mono + config.timeout_s
    while True:
        now = time.monotonic()
        if done():
            return False, now
        if now >= deadline:
            return True, now
        dead = [p for p in processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{len(dead)} worker process(es) exited early (status {dead[0].returncode})")
        if now - launched > BOOT_TIMEOUT_S + config.timeout_s + 30:
            return True, now
        time.sleep(0.05)


def measure(
    name: str,
    config: Config,
    sim: WetbotSimulator,
    *,
    delivered: int,
    retries: int,
    start_mono: float,
    end_mono: float,
    timed_out: bool,
) -> RunResult:
    """Compute a run's figures from the simulator's request log."""
    records = [r for r in sim.requests() if r.path.startswith("/api/")]
    accepted_times = [r.mono for r in records if r.status == 200]
    accepted = len(accepted_times)
    elapsed = accepted_times[-1] - accepted_times[0] if accepted_times else None
    utilisation = None
    if elapsed is not None:
        utilisation = accepted / (config.limit * (math.floor(elapsed / config.window_s) + 1))
    drain_ratio = None
    if elapsed is not None and delivered >= config.grants:
        drain_ratio = config.ideal_drain_s / elapsed if elapsed > 0 else 1.0
    per_window: list[int] = []
    if accepted_times:
        buckets = int((accepted_times[-1] - accepted_times[0]) // config.window_s) + 1
        per_window = [0] * buckets
        for t in accepted_times:
            per_window[int((t - accepted_times[0]) // config.window_s)] += 1
    return RunResult(
        name=name,
        grants=config.grants,
        delivered=delivered,
        accepted=accepted,
        rejected_429=sum(1 for r in records if r.status == 429),
        other_errors=sum(1 for r in records if r.status not in (200, 429)),
        total_requests=len(records),
        elapsed_s=elapsed,
        utilisation=utilisation,
        drain_ratio=drain_ratio,
        max_accepted_in_window=sim.max_in_window(config.window_s, statuses=[200]),
        max_counted_in_window=sim.max_in_window(config.window_s),
        retries=retries,
        measured_s=end_mono - start_mono,
        timed_out=timed_out,
        accepted_per_window=per_window,
    )


#: Rows of the table that get an ours/stock ratio.
RATIO_ROWS = ("accepted (200)", "utilisation", "drain ratio ideal/actual")


def print_report(config: Config, results: Sequence[RunResult]) -> None:
    """The comparison table, then per-run details."""
    ours = results[0]
    stock = results[1] if len(results) > 1 else None
    rows: list[tuple[str, Callable[[RunResult], str], Callable[[RunResult], float | None]]] = [
        ("delivered / grants", lambda r: f"{r.delivered}/{r.grants}", lambda r: r.delivered),
        ("accepted (200)", lambda r: str(r.accepted), lambda r: r.accepted),
        ("429 answers", lambda r: str(r.rejected_429), lambda r: r.rejected_429),
        ("other errors", lambda r: str(r.other_errors), lambda r: r.other_errors),
        ("total requests", lambda r: str(r.total_requests), lambda r: r.total_requests),
        ("first->last 200", lambda r: format_secs(r.elapsed_s), lambda r: r.elapsed_s),
        ("utilisation", lambda r: format_pct(r.utilisation), lambda r: r.utilisation),
        (
            "drain ratio ideal/actual",
            lambda r: format_pct(r.drain_ratio) if r.drained else f"not drained in {r.measured_s:.0f} s",
            lambda r: r.drain_ratio,
        ),
        (f"max 200s in any {config.window_s:g}s", lambda r: str(r.max_accepted_in_window), lambda r: None),
        (
            f"max requests in any {config.window_s:g}s",
            lambda r: str(r.max_counted_in_window),
            lambda r: None,
        ),
        ("retries spent", lambda r: str(r.retries), lambda r: None),
        ("measured (1st request->end)", lambda r: format_secs(r.measured_s), lambda r: None),
    ]
    width = max(len(label) for label, _, _ in rows) + 2
    header = f"{'':<{width}}{'ours':>22}"
    if stock is not None:
        header += f"{'stock':>26}{'ours/stock':>12}"
    print()
    print(
        f"limit {config.limit} per {config.window_s:g} s, {config.grants} grants, {config.processes} processes x "
        f"{config.threads} threads; ideal drain {config.ideal_drain_s:g} s; stock capped at {config.timeout_s:g} s"
    )
    print(header)
    print("-" * len(header))
    for label, show, value in rows:
        line = f"{label:<{width}}{show(ours):>22}"
        if stock is not None:
            line += f"{show(stock):>26}"
            versus = format_ratio(value(ours), value(stock)) if label in RATIO_ROWS else ""
            if label == "delivered / grants":
                versus = format_ratio(ours.delivered, stock.delivered)
            line += f"{versus:>12}"
        print(line)
    print()
    for result in results:
        print(f"{result.name}: 200s per {config.window_s:g}s window from the first 200: {result.accepted_per_window}")
        for note in result.notes:
            print(f"{result.name}: {note}")
