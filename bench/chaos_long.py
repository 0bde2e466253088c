"""Long chaos scenarios: the short ones of ``tests/chaos`` with more grants and more disruptions.

Each scenario starts its own private Redis (AOF), the WetBot simulator, the web process and two worker
processes exactly as the Procfile runs them, sends signed Twitch and Patreon events and API grants
(every delivery twice at once and again later), drives its faults, waits for the ledger to settle
and prints one markdown row: events sent, grants expected, applied, lost, doubled, held ``unknown``,
stranded, slots wasted, 429s the service caused, time to drain, and ledger entries contradicting
WetBot. Exit status 1 when a run misses a target (see ``Result.problems``).

Run from the repository root, one scenario at a time on a shared machine::

    .venv/bin/python -m bench.chaos_long --scenario sigkill --policy hold --grants 80
    .venv/bin/python -m bench.chaos_long --scenario all --policy hold --policy retry --short

``--short`` runs the test-sized version (12 grants, one round of disruptions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from devtools.chaos.harness import Result, print_table
from devtools.chaos.scenarios import LONG, SCENARIOS, SHORT, run_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos_long", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario", action="append", choices=[*SCENARIOS, "all"], help="scenario to run (repeatable; default all)"
    )
    parser.add_argument("--policy", action="append", help="AMBIGUOUS_POLICY (repeatable; default hold)")
    parser.add_argument("--grants", type=int, help=f"expected grants per run (default {LONG.grants})")
    parser.add_argument("--rounds", type=int, help=f"repetitions of each disruption (default {LONG.rounds})")
    parser.add_argument("--short", action="store_true", help="the test-sized runs of tests/chaos")
    parser.add_argument("--seed", type=int, help="random seed (kill instants)")
    parser.add_argument("--keep", action="store_true", help="keep each run's directory (logs, AOF)")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if not args.scenario or "all" in args.scenario else list(args.scenario)
    policies = args.policy or ["hold"]
    base = SHORT if args.short else LONG
    size = type(base)(args.grants or base.grants, args.rounds or base.rounds)
    results: list[Result] = []
    for name in names:
        for policy in policies:
            workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-{policy}-"))
            print(
                f"# {name} ({SCENARIOS[name].title}) under {policy}: {size.grants} grants, "
                f"{size.rounds} round(s); logs in {workdir}",
                file=sys.stderr,
                flush=True,
            )
            try:
                result = run_scenario(name, policy, workdir, size, seed=args.seed)
            except Exception as exc:  # noqa: BLE001 - one broken run must not hide the others' figures
                print(f"#   did not run: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr, flush=True)
                continue
            results.append(result)
            for problem in result.problems():
                print(f"#   {problem}", file=sys.stderr, flush=True)
            for note in result.notes:
                print(f"#   note: {note}", file=sys.stderr, flush=True)
            if not args.keep and not result.problems():
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    return 1 if any(r.problems() for r in results) or len(results) < len(names) * len(policies) else 0


if __name__ == "__main__":
    raise SystemExit(main())
