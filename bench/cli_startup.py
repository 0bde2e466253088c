"""CLI start-up: how long ``wetbot-rewards --help`` and ``wetbot-rewards grants list`` take, wall clock.

Each command runs ``--runs`` times (default 5) as a fresh process, as an operator runs it; the median is
printed next to the median of ``python -c pass`` measured in the same run, so a loaded machine shows as a
slow baseline rather than as a slow command. ``grants list`` reads an empty ledger under a random key prefix
of the Redis at ``--redis-url`` (default DB 15; nothing is written). Run from the repository root:
``.venv/bin/python -m bench.cli_startup [--runs 5]``. Figures are printed, never asserted; the targets are
0.3 s for ``--help`` and 0.5 s for ``grants list`` on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

#: The console script next to the running interpreter (the virtualenv's).
CLI = str(Path(sys.executable).with_name("wetbot-rewards"))


def timed(command: Sequence[str], env: dict[str, str], runs: int) -> float:
    """The median wall time of ``runs`` fresh runs of ``command`` (each must exit 0)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "REDIS_URL": args.redis_url,
        "REDIS_KEY_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        "REWARDS_FILE": os.devnull,
    }
    rows = [
        ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
        ("wetbot-rewards --help", [CLI, "--help"]),
        ("wetbot-rewards grants list", [CLI, "grants", "list"]),
    ]
    print(f"median of {args.runs} runs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for label, command in rows:
        print(f"{label:<28} {timed(command, env, args.runs):6.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
