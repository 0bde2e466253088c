"""Memory: RSS of every Procfile process with 10,000 grants queued (worker <= 100 MB each, web <= 120 MB).

``uvicorn wetbot_rewards.app:app`` and ``dramatiq worker.actors --processes 1 --threads T --queues grants`` run
against the WetBot simulator at WetBot's real limit (10 per 60 s), on a private redis-server
(``bench/private_redis.py``; ``--redis-url`` for another). ``--grants`` grants go in through ``POST /grants``
from ``--clients`` keep-alive connections, so the web process has served them all; then everything runs for
``--hold`` seconds with the backlog queued. The worker claims each message it fetches (2 x threads at a
time) and hands a grant that waits for a rate slot back to the ledger's schedule, so the grants stay
``queued`` while their messages are consumed; with ``--worker-late`` it starts only once all the grants
and their messages are waiting. RSS (``VmRSS``) of each process (web, the worker's ``dramatiq`` master and
its worker process) is sampled every 0.5 s, with the queue's length; the report gives the last and the
largest sample and the kernel's peak (``VmHWM``), in MiB. Exit status 1 when a target is missed, 2 on a
setup error.

Run from the repository root: ``.venv/bin/python -m bench.memory [--grants 10000 --hold 30]`` (about a minute).
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from redis import Redis

from bench.private_redis import private_redis
from bench.rig import (
    GUILD,
    delete_prefixes,
    dramatiq_workers,
    free_port,
    key_base,
    log_path,
    machine,
    service_env,
    stop,
    uvicorn_server,
    wetbot_simulator,
)
from worker import redis_values as values
from worker.broker import QUEUE_NAME
from worker.keys import Keys

API_KEY = secrets.token_hex(16)  # fresh per run: no credential is written down
GRANTS_TOKEN = secrets.token_hex(16)
#: Targets, in MiB of resident memory per process.
TARGET_WORKER_MB = 100.0
TARGET_WEB_MB = 120.0
MB = 1024 * 1024


def status_kb(pid: int, field_name: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (``VmRSS``, ``VmHWM``); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/*/stat``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


@dataclass
class Sampled:
    """One process's RSS samples (MiB) and its peak as the kernel saw it."""

    name: str
    pid: int
    target_mb: float
    samples_mb: list[float] = field(default_factory=list)
    peak_mb: float = 0.0

    def sample(self) -> None:
        rss = status_kb(self.pid, "VmRSS")
        if rss:
            self.samples_mb.append(rss * 1024 / MB)
            self.peak_mb = max(self.peak_mb, status_kb(self.pid, "VmHWM") * 1024 / MB)

    @property
    def worst_mb(self) -> float:
        return max([*self.samples_mb, self.peak_mb], default=0.0)


@contextmanager
def sampling(processes: list[Sampled], also: Callable[[], None], interval_s: float = 0.5) -> Iterator[None]:
    """Sample every process (and call ``also``) every ``interval_s`` in a thread while the block runs."""
    done = threading.Event()

    def run() -> None:
        while not done.wait(interval_s):
            for process in list(processes):  # the caller may add processes meanwhile
                process.sample()
            also()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        for process in processes:
            process.sample()


def post_grants(port: int, prefix: str, grants: int, clients: int) -> int:
    """``grants`` x ``POST /grants`` (one user each) from ``clients`` connections; returns how many got 202."""
    lock = threading.Lock()
    counter = iter(range(grants))
    accepted = [0]
    headers = {"Authorization": f"Bearer {GRANTS_TOKEN}", "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        ok = 0
        try:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    break
                body = {
                    "user_id": str(700_000_000_000_000_000 + n),
                    "items": [{"item_id": "gem", "amount": 1}],
                    "idempotency_key": f"{prefix}:{n}",
                }
                conn.request("POST", "/grants", body=json.dumps(body), headers=headers)
                response = conn.getresponse()
                response.read()
                ok += response.status == 202
        finally:
            conn.close()
            with lock:
                accepted[0] += ok

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted[0]


def run(args: argparse.Namespace, redis_url: str, prefix: str, log_file: Path) -> tuple[list[Sampled], str]:
    """The measured run; returns the sampled processes and a line about the backlog at the end."""
    with ExitStack() as stack:
        log = stack.enter_context(log_file.open("wb"))
        sim = wetbot_simulator(API_KEY, limit=10, window_s=60.0).start()
        stack.callback(sim.stop)
        rules = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-memory-"))) / "rules.toml"
        rules.write_text(f'guild_id = "{GUILD}"\n', encoding="utf-8")
        env = service_env(
            redis_url,
            prefix,
            {
                "WETBOT_API_URL": sim.url,
                "WETBOT_API_KEY": API_KEY,
                "GRANTS_API_TOKEN": GRANTS_TOKEN,
                "REWARDS_FILE": str(rules),
            },
        )
        port = free_port()
        web = stack.enter_context(uvicorn_server("wetbot_rewards.app:app", port, env, log))
        processes = [Sampled("web", web.pid, TARGET_WEB_MB)]

        def start_worker() -> None:
            master = dramatiq_workers("worker.actors", QUEUE_NAME, processes=1, threads=args.threads, env=env, log=log)[
                0
            ]
            stack.callback(stop, [master])
            deadline = time.monotonic() + 30
            while not (forked := children(master.pid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not forked:
                raise RuntimeError("the dramatiq master started no worker process")
            processes.append(Sampled("worker master", master.pid, TARGET_WORKER_MB))
            processes.extend(Sampled("worker process", pid, TARGET_WORKER_MB) for pid in forked)

        if not args.worker_late:
            start_worker()
        client = Redis.from_url(redis_url)
        stack.callback(client.close)
        keys = Keys(prefix)
        queue = f"{keys.dramatiq_namespace}:{QUEUE_NAME}"
        most = {"messages": 0, "queued": 0}

        def backlog_now() -> None:
            most["messages"] = max(most["messages"], values.integer(client.llen(queue)))
            most["queued"] = max(most["queued"], values.integer(client.zcard(keys.state_index("queued"))))

        with sampling(processes, backlog_now):
            started = time.monotonic()
            accepted = post_grants(port, prefix, args.grants, args.clients)
            print(
                f"{accepted}/{args.grants} grants accepted in {time.monotonic() - started:.1f} s; "
                f"holding {args.hold:g} s ...",
                flush=True,
            )
            if args.worker_late:
                start_worker()
            time.sleep(args.hold)
        queued = values.integer(client.zcard(keys.state_index("queued")))
        used = cast(dict[str, str], client.info("memory"))["used_memory_human"]
        backlog = (
            f"grants queued: at most {most['queued']}, {queued} at the end ({len(sim.applied())} delivered); "
            f"queue messages: at most {most['messages']} at once (the worker claims each, and hands the grant "
            f"back to the schedule until its rate slot); Redis used_memory {used}"
        )
        return processes, backlog


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--grants", type=int, default=10_000, help="grants queued (default 10000)")
    parser.add_argument("--clients", type=int, default=4, help="client connections posting them (4)")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds with the backlog queued (30)")
    parser.add_argument("--threads", type=int, default=4, help="worker threads, as in the Procfile (4)")
    parser.add_argument(
        "--worker-late", action="store_true", help="start the worker once every grant is queued (all messages waiting)"
    )
    parser.add_argument("--redis-url", default="", help="use this Redis instead of a private redis-server")
    args = parser.parse_args(argv)
    prefix = f"{key_base()}-memory"
    log_file = log_path(prefix)
    print(f"machine: {machine()}; {args.grants} grants; process output in {log_file}", flush=True)
    try:
        with ExitStack() as stack:
            redis_url = args.redis_url or stack.enter_context(private_redis())
            stack.callback(delete_prefixes, redis_url, [prefix])
            processes, backlog = run(args, redis_url, prefix, log_file)
    except (RuntimeError, OSError) as exc:
        print(f"bench/memory.py: setup error: {exc}; see {log_file}", file=sys.stderr)
        return 2
    print(backlog)
    print(f"\n{'process':<15} {'pid':>8} {'RSS last':>9} {'RSS max':>9} {'VmHWM':>9} {'target':>8}")
    problems = []
    for p in processes:
        last = p.samples_mb[-1] if p.samples_mb else 0.0
        print(
            f"{p.name:<15} {p.pid:>8} {last:>6.1f}MiB {max(p.samples_mb, default=0.0):>6.1f}MiB "
            f"{p.peak_mb:>6.1f}MiB {p.target_mb:>5.0f}MiB"
        )
        if p.worst_mb > p.target_mb:
            problems.append(f"{p.name} reached {p.worst_mb:.1f} MiB > {p.target_mb:.0f} MiB")
    for problem in problems:
        print(f"MISSED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
