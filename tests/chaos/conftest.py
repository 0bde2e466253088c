"""What the chaos tests share: each scenario's runs under every policy of ``POLICIES``, at the same time.

A scenario's runs under the different policies are independent clusters (own Redis, simulator, ports)
that spend most of their time waiting (heartbeats, rate windows, deadlines), so the first test of a
scenario runs all of ``POLICIES`` at once and the others read their result: the wall time of a
scenario is that of its slowest policy, not the sum.

``check`` asserts the targets: 0 lost, 0 doubled, 0 stranded, 0 x 429, the ledger agreeing with WetBot,
and ``unknown`` only under ``hold`` (under ``verify`` only for requests sent without a baseline; in the
scenarios where the world moves, under both) and only as many as the injected faults can explain.

The scenario tests (``test_chaos_answers.py``, ``test_chaos_processes.py``, ``test_chaos_redis.py``, one
file per fault family, so ``--dist loadfile`` spreads them over workers) run each scenario with a dozen
grants and the fast rate window. Run them alone with ``pytest -m chaos -s`` (``-s`` prints each result
row); the long versions are ``bench/chaos_long.py``; RELIABILITY.md has the table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools.chaos.harness import TABLE_HEADER, Result, table_row
from devtools.chaos.scenarios import run_scenario

#: The ambiguous-outcome policies every scenario runs under.
POLICIES = ("verify", "hold")

#: Every chaos test file's ``pytestmark``.
CHAOS_MARKS = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for a private Redis"),
]

Outcome = Result | BaseException
Runs = Callable[[str, str], Result]


@pytest.fixture(scope="module")
def scenario_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """``run(name, policy)``: the scenario's result under ``policy``, all of ``POLICIES`` run together once."""
    done: dict[str, dict[str, Outcome]] = {}

    def one(name: str, policy: str, workdir: Path) -> Outcome:
        try:
            return run_scenario(name, policy, workdir)
        except Exception as exc:  # noqa: BLE001 - re-raised by that policy's test
            return exc

    def run(name: str, policy: str) -> Result:
        if name not in done:
            # Directories are made here, not in the threads: TempPathFactory is not thread-safe.
            workdirs = [tmp_path_factory.mktemp(f"{name}-{p}") for p in POLICIES]
            with ThreadPoolExecutor(len(POLICIES)) as pool:
                outcomes = pool.map(lambda pair: one(name, *pair), zip(POLICIES, workdirs, strict=True))
                done[name] = dict(zip(POLICIES, outcomes, strict=True))
        outcome = done[name][policy]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return run


def check(result: Result) -> None:
    print(f"\n{TABLE_HEADER}\n{table_row(result)}\n{result.notes}")
    problems = result.problems()
    assert not problems, f"{result.scenario} under {result.policy}: {problems}; notes: {result.notes}"
