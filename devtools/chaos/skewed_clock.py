"""Dramatiq's CLI on a host whose clock is off: ``python -m devtools.chaos.skewed_clock <dramatiq arguments>``.

Shifts ``time.time`` and ``time.time_ns`` by ``WBR_CHAOS_CLOCK_SKEW_S`` seconds (may be negative) before
anything else is imported, so Dramatiq's heartbeats and message ETAs and the service's own timestamps
all read the shifted clock, as on a second host whose clock is wrong. Monotonic clocks and Redis'
``TIME`` are untouched. The chaos harness starts one worker this way (``Cluster`` with ``skew_s``).
"""

from __future__ import annotations

import os
import sys
import time

SKEW_ENV = "WBR_CHAOS_CLOCK_SKEW_S"


def install(skew_s: float) -> None:
    """Shift this process's wall clock (and that of processes it forks) by ``skew_s`` seconds."""
    real_time, real_time_ns = time.time, time.time_ns
    shift_ns = int(skew_s * 1_000_000_000)

    def shifted_time() -> float:
        return real_time() + skew_s

    def shifted_time_ns() -> int:
        return real_time_ns() + shift_ns

    time.time = shifted_time
    time.time_ns = shifted_time_ns


def main() -> int:
    install(float(os.environ.get(SKEW_ENV, "0")))
    from dramatiq.cli import main as dramatiq_main  # imported after the shift: it binds time.time at import

    sys.argv = ["dramatiq", *sys.argv[1:]]
    return int(dramatiq_main() or 0)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    raise SystemExit(main())
