"""Operator console: page times with 100,000 grants in Redis against 1,000 in the same run (target: < 200 ms).

Console pages must load in under 200 ms with 100,000 grants in Redis, because they read
indexes and never scan the ledger. Two prefixes in Redis DB 15 (random ``bench<hex>-big`` and
``bench<hex>-base``, deleted at the end, also on Ctrl-C or an error: SCAN + DEL, never a flush) are seeded
with the same mix (``bench/console_seed.py``): ``--grants`` and ``--baseline-grants`` grants through
``Ledger.create_many`` / ``transition_many``, so every secondary index is written as production writes it,
plus inbox events, audit entries and run-time links. Each prefix gets its own web process (``uvicorn
wetbot_rewards.app:app``, one worker, ``ADMIN_TOKEN`` and ``WETBOT_API_KEYS`` for the three guilds), and a
``requests.Session`` logs in to each the way a browser does (the login form's double-submit token, then
the session cookie). Every page (:func:`pages`: the console's, and the operator API's ``GET /grants``
behind its lists, with the bearer token) is then fetched ``--warmup`` + ``--repeat`` times,
sequentially, alternating between the two prefixes page by page (so load from elsewhere on the machine
falls on both alike); only the last ``--repeat`` are counted. The report gives p50 / p95 / max in ms at N and
at the baseline, their p50 ratio (near 1: the page's cost does not grow with the ledger), the size of the
answer, and whether the slowest p95 at N is under 200 ms. Every answer must be 200 (no redirect followed):
anything else stops the run. ``--queued`` gives the measured ledger a backlog of that many queued grants
(the baseline keeps the mix's share): a waiting grant's ETA (``worker.eta``) reads the whole schedule.

Run from the repository root: ``.venv/bin/python -m bench.console_pages [--grants 100000 --baseline-grants 1000]``.
Exit status 1 when a page's p95 at N is 200 ms or more, 2 on a setup error (a process, Redis, a status).
"""

from __future__ import annotations

import argparse
import re
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, cast
from urllib.parse import urlencode

import requests
from redis import Redis

from admin.console.context import COOKIE
from bench.console_seed import GUILDS, Seeded, add_extras, seed
from bench.rig import (
    DEFAULT_REDIS_URL,
    delete_prefixes,
    free_port,
    key_base,
    log_path,
    machine,
    percentile,
    service_env,
    uvicorn_server,
)
from worker.grant import GrantState

#: The target for every page, in ms.
TARGET_MS = 200.0
#: Fresh per run: no credential is written down.
ADMIN_TOKEN = secrets.token_urlsafe(32)
HTTP_TIMEOUT_S = 30.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class SetupError(RuntimeError):
    """The run cannot measure what it should (a refused login, a page not answering 200)."""


@dataclass(frozen=True)
class Page:
    """One timed request: a console page (the session cookie) or an operator API call (the bearer token)."""

    name: str
    path: str
    api: bool = False


@dataclass
class Target:
    """One seeded prefix, its web process, and what was measured against it."""

    seeded: Seeded
    base_url: str
    console: requests.Session
    api: requests.Session
    pages: list[Page] = field(default_factory=list)
    times_ms: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def fetch(self, page: Page) -> tuple[float, int]:
        """ms from sending the request to having read the whole answer, and the answer's size in bytes."""
        session = self.api if page.api else self.console
        started = time.perf_counter()
        answer = session.get(self.base_url + page.path, allow_redirects=False, timeout=HTTP_TIMEOUT_S)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise SetupError(f"{page.name} ({self.seeded.n} grants): GET {page.path} answered {answer.status_code}")
        return elapsed_ms, len(answer.content)


def _query(path: str, **params: str) -> str:
    return f"{path}?{urlencode(params)}"


def pages(seeded: Seeded, cursor: str) -> list[Page]:
    """What is timed: the overview, the grant lists an operator uses, three grants, the other pages, the API."""
    ids = seeded.sample
    return [
        Page("overview", "/console"),
        Page("grants", "/console/grants"),
        Page("grants state=dead", _query("/console/grants", state="dead")),
        Page("grants state=queued&guild", _query("/console/grants", state="queued", guild_id=seeded.queued_guild)),
        Page("grants source=patreon", _query("/console/grants", source="patreon")),
        Page("grants q=<twitch login>", _query("/console/grants", q=seeded.login)),
        Page("grants q=<discord id>", _query("/console/grants", q=seeded.discord)),
        Page("grants page 2 (cursor=)", _query("/console/grants", cursor=cursor)),
        Page("grant (delivered)", f"/console/grants/{ids[GrantState.DELIVERED]}"),
        Page("grant (dead)", f"/console/grants/{ids[GrantState.DEAD]}"),
        Page("grant (parked)", f"/console/grants/{ids[GrantState.PARKED]}"),
        Page("grant (queued)", f"/console/grants/{ids[GrantState.QUEUED]}"),
        Page("events", "/console/events"),
        Page("links", "/console/links"),
        Page("audit", "/console/audit"),
        Page("API GET /admin/grants", "/admin/grants", api=True),
        Page("API GET /admin/grants?state=dead", _query("/admin/grants", state="dead"), api=True),
        Page("API GET /admin/grants?q=<login>", _query("/admin/grants", q=seeded.login), api=True),
        Page("API GET /admin/grants?cursor=", _query("/admin/grants", cursor=cursor), api=True),
        Page("API GET /admin/grants?state=queued", _query("/admin/grants", state="queued"), api=True),
    ]


def log_in(base_url: str) -> requests.Session:
    """A session logged in to the console as a browser does it: the form (its token in a cookie and a hidden
    field), then the POST with both and the admin token, answered 303 with the session cookie."""
    session = requests.Session()
    form = session.get(f"{base_url}/console/login", timeout=HTTP_TIMEOUT_S)
    found = _CSRF.search(form.text)
    if form.status_code != 200 or found is None:
        raise SetupError(f"GET /console/login answered {form.status_code} without a login form token")
    answer = session.post(
        f"{base_url}/console/login",
        data={"csrf": found.group(1), "token": ADMIN_TOKEN},
        allow_redirects=False,
        timeout=HTTP_TIMEOUT_S,
    )
    if answer.status_code != 303 or COOKIE not in session.cookies:
        raise SetupError(f"POST /console/login answered {answer.status_code} without a session cookie")
    return session


def api_session() -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    return session


def next_cursor(target: Target) -> str:
    """The ``next`` cursor of the operator API's first page of every grant (the console's second page)."""
    answer = target.api.get(f"{target.base_url}/grants", timeout=HTTP_TIMEOUT_S)
    if answer.status_code != 200:
        raise SetupError(f"GET /grants answered {answer.status_code}")
    body: dict[str, Any] = answer.json()
    if not body.get("next"):
        raise SetupError(f"GET /grants gave no next cursor with {target.seeded.n} grants")
    return str(body["next"])


def measure(targets: Sequence[Target], *, warmup: int, repeat: int) -> None:
    """Each page ``warmup + repeat`` times per target, alternating targets page by page (and which goes first)."""
    for round_no in range(warmup + repeat):
        order = targets if round_no % 2 == 0 else list(reversed(targets))
        for index in range(len(targets[0].pages)):
            for target in order:
                page = target.pages[index]
                elapsed_ms, size = target.fetch(page)
                if round_no >= warmup:
                    target.times_ms.setdefault(page.name, []).append(elapsed_ms)
                    target.sizes[page.name] = size


def seed_line(seeded: Seeded) -> str:
    grown = seeded.memory_after - seeded.memory_before
    states = ", ".join(f"{state.value} {count}" for state, count in seeded.counts.items())
    return (
        f"{seeded.n} grants ({seeded.prefix}): created in {seeded.create_s:.1f} s "
        f"({seeded.n / seeded.create_s:.0f}/s), moved in {seeded.transition_s:.1f} s; Redis used_memory "
        f"{seeded.memory_before / 1e6:.1f} -> {seeded.memory_after / 1e6:.1f} MB "
        f"({grown / seeded.n:.0f} bytes per grant); {states}"
    )


def report(big: Target, base: Target) -> int:
    """Print the table; 1 when the slowest p95 at N misses :data:`TARGET_MS`."""
    n, b = big.seeded.n, base.seeded.n
    print(f"\n{'':<28} {f'--- {n} grants (ms) ---':>23}   {f'- {b} grants -':>20}")
    columns = f"{'p50':>7} {'p95':>7} {'max':>7}   {'p50':>6} {'p95':>6} {'max':>6}"
    print(f"{'page':<28} {columns}   {'p50 ratio':>9} {'bytes':>7}")
    worst = ("", 0.0)
    steepest = ("", 0.0)
    for page in big.pages:
        at_n, at_b = big.times_ms[page.name], base.times_ms[page.name]
        p50_n, p95_n, max_n = percentile(at_n, 50), percentile(at_n, 95), percentile(at_n, 100)
        p50_b, p95_b, max_b = percentile(at_b, 50), percentile(at_b, 95), percentile(at_b, 100)
        ratio = p50_n / p50_b if p50_b > 0 else float("inf")
        worst = max(worst, (page.name, p95_n), key=lambda pair: pair[1])
        steepest = max(steepest, (page.name, ratio), key=lambda pair: pair[1])
        print(
            f"{page.name:<28} {p50_n:7.1f} {p95_n:7.1f} {max_n:7.1f}   {p50_b:6.1f} {p95_b:6.1f} {max_b:6.1f}"
            f"   {ratio:8.2f}x {big.sizes[page.name]:7d}"
        )
    met = worst[1] < TARGET_MS
    print(
        f"\nslowest p95 at {n} grants: {worst[1]:.1f} ms ({worst[0]}); target < {TARGET_MS:.0f} ms: "
        f"{'met' if met else 'MISSED'}; largest p50 ratio: {steepest[1]:.2f}x ({steepest[0]})"
    )
    return 0 if met else 1


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt  # so the ``finally`` below stops the servers and deletes the keys


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console_pages", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--grants", type=int, default=100_000, help="grants in the measured ledger (100000)")
    parser.add_argument("--baseline-grants", type=int, default=1_000, help="grants in the baseline ledger (1000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per page and ledger (20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests per page first (2)")
    parser.add_argument("--events", type=int, default=0, help="inbox events (default: grants / 100, at least 60)")
    parser.add_argument("--audit", type=int, default=0, help="audit entries (default: grants / 200, at least 60)")
    parser.add_argument("--links", type=int, default=20, help="run-time Twitch links (20)")
    parser.add_argument(
        "--queued", type=int, default=None, help="queued grants at N, a backlog (default: 0.4 %% of N, at least 180)"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    base_name = key_base()
    prefixes = (f"{base_name}-big", f"{base_name}-base")
    log_file = log_path(f"{base_name}-console")
    redis = Redis.from_url(args.redis_url)
    version = cast(dict[str, Any], redis.info("server"))["redis_version"]
    print(f"machine: {machine()}; Redis {version}; web output in {log_file}", flush=True)
    try:
        with ExitStack() as stack:
            stack.callback(lambda: print(f"deleted {delete_prefixes(args.redis_url, prefixes)} keys", flush=True))
            targets = []
            for prefix, n, queued in (
                (prefixes[0], args.grants, args.queued),
                (prefixes[1], args.baseline_grants, None),
            ):
                seeded = seed(redis, prefix, n, queued=queued)
                events = args.events or max(60, n // 100)
                audit = args.audit or max(60, n // 200)
                add_extras(args.redis_url, redis, seeded, events=events, audit=audit, links=args.links)
                print(seed_line(seeded), f"+ {events} events, {audit} audit entries, {args.links} links", flush=True)
                targets.append(serve(stack, args.redis_url, seeded, log_file))
            print(
                f"searched: login {targets[0].seeded.login} ({targets[0].seeded.login_grants} grants at "
                f"{args.grants}, {targets[1].seeded.login} {targets[1].seeded.login_grants} at the baseline), "
                f"Discord id ({targets[0].seeded.discord_grants} / {targets[1].seeded.discord_grants} grants)",
                flush=True,
            )
            started = time.perf_counter()
            measure(targets, warmup=args.warmup, repeat=args.repeat)
            print(
                f"{len(targets[0].pages)} pages x {args.warmup} + {args.repeat} requests per ledger, sequential, "
                f"keep-alive, in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            return report(targets[0], targets[1])
    except (SetupError, RuntimeError, OSError, requests.RequestException) as exc:
        print(f"bench/console_pages.py: setup error: {exc}; see {log_file}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench/console_pages.py: interrupted (servers stopped, keys deleted)", file=sys.stderr)
        return 130
    finally:
        redis.close()


def serve(stack: ExitStack, redis_url: str, seeded: Seeded, log_file: Path) -> Target:
    """A web process for ``seeded``'s prefix (closed with ``stack``), logged in, its pages listed."""
    rules = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-console-"))) / "rewards.toml"
    rules.write_text(f'guild_id = "{GUILDS[0]}"\n', encoding="utf-8")
    env = service_env(
        redis_url,
        seeded.prefix,
        {
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "REWARDS_FILE": str(rules),
            "WETBOT_API_KEYS": ",".join(f"{guild}={secrets.token_hex(16)}" for guild in GUILDS),
        },
    )
    log = stack.enter_context(log_file.open("ab"))
    port = free_port()
    stack.enter_context(uvicorn_server("wetbot_rewards.app:app", port, env, log))
    base_url = f"http://127.0.0.1:{port}"
    target = Target(seeded, base_url, log_in(base_url), api_session())
    target.pages = pages(seeded, next_cursor(target))
    return target


if __name__ == "__main__":
    raise SystemExit(main())
