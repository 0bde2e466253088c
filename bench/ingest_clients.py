"""HTTP load from client threads in this process: a closed loop, or paced (open loop), with every latency.

Used by ``bench/ingest.py`` against both of its servers. Each client thread keeps one keep-alive
HTTP/1.1 connection (``http.client``: no pool, no retries, so what is timed is one request and its
answer). In the paced run every request has a scheduled start and its latency counts from that start,
so a stalled server cannot hide its queueing behind a waiting client.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.rig import CpuMeter, percentile

#: The status that counts as success (a webhook receiver answers 200 with what it did).
OK_STATUS = 200


@dataclass
class RunResult:
    """What one run's clients saw: statuses, latencies, wall time and (set by the caller) CPU spent."""

    name: str
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu: CpuMeter | None = None

    @property
    def ok(self) -> int:
        return self.statuses.get(OK_STATUS, 0)

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def record(self, outcomes: list[tuple[int, float]]) -> None:
        """Add one client thread's (status, latency) pairs; the caller holds the run's lock."""
        for status, latency in outcomes:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies_s.append(latency)
        self.sent += len(outcomes)

    def percentile_ms(self, p: float) -> float:
        return 1000 * percentile(self.latencies_s, p)


@dataclass(frozen=True)
class Endpoint:
    """Where the load goes: ``POST <path>`` on a loopback port, request ``n`` built by ``make_request(n)``."""

    port: int
    path: str
    #: ``n`` -> (body, headers); called in the client thread just before the request is due.
    make_request: Callable[[int], tuple[bytes, dict[str, str]]]


class Sender:
    """One keep-alive HTTP/1.1 connection; reconnects after an error."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status; 0 when the request failed (the connection is then replaced)."""
        try:
            self.conn.request("POST", self.endpoint.path, body=body, headers=headers)
            response = self.conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.endpoint.port, timeout=10)
            return 0

    def close(self) -> None:
        self.conn.close()


#: The next request of a run, ``(n, due)``, or None when the run is over; called under the run's lock.
NextRequest = Callable[[], tuple[int, float | None] | None]


def drive(name: str, endpoint: Endpoint, threads: int, next_request: NextRequest) -> RunResult:
    """``threads`` client threads sending ``next_request()`` until it says the run is over.

    A request with a ``due`` time waits for it, and its latency counts from it (open loop); one without is
    sent at once and timed from then (closed loop).
    """
    result = RunResult(name)
    lock = threading.Lock()

    def worker() -> None:
        sender = Sender(endpoint)
        local: list[tuple[int, float]] = []
        while True:
            with lock:
                job = next_request()
            if job is None:
                break
            n, due = job
            body, headers = endpoint.make_request(n)
            if due is None:
                due = time.perf_counter()
            elif (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            status = sender.post(body, headers)
            local.append((status, time.perf_counter() - due))
        sender.close()
        with lock:
            result.record(local)

    clients = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    return result


def closed_loop(name: str, endpoint: Endpoint, concurrency: int, duration_s: float) -> RunResult:
    """``concurrency`` threads sending back to back for ``duration_s``."""
    counter = itertools.count()
    start = time.perf_counter()
    stop_at = start + duration_s
    result = drive(
        name, endpoint, concurrency, lambda: (next(counter), None) if time.perf_counter() < stop_at else None
    )
    result.elapsed_s = time.perf_counter() - start
    return result


def paced(name: str, endpoint: Endpoint, rate: float, duration_s: float, threads: int) -> RunResult:
    """Open loop: request i is due at start + i / rate; latency counts from when it was due."""
    counter = iter(range(int(rate * duration_s)))
    start = time.perf_counter() + 0.2

    def next_request() -> tuple[int, float | None] | None:
        n = next(counter, None)
        return None if n is None else (n, start + n / rate)

    result = drive(name, endpoint, threads, next_request)
    result.elapsed_s = time.perf_counter() - start
    return result
