"""The Sentinel group of the chaos tests (``devtools.chaos.sentinel``): what it says about its replicas holds.

A failover test arranges its grants on the primary and checks every replica has them before it promotes
one (``SentinelGroup.synced``); a check that passes while a replica lags lets a loaded machine promote a
replica without the arrangement, and the test then blames the service for grants it never had.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from devtools.chaos.sentinel import SentinelGroup
from tests.chaos.conftest import CHAOS_MARKS

pytestmark = CHAOS_MARKS


def test_synced_is_false_while_a_replica_lags_and_true_once_it_caught_up(tmp_path: Path) -> None:
    with SentinelGroup(tmp_path / "sentinel", replicas=1) as group:
        replica = group.nodes[1]
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)  # still connected, still "online" to the primary: lagging
        try:
            primary = group.client()
            try:
                primary.set("arranged", "1")
            finally:
                primary.close()
            assert not group.synced(timeout_ms=300)
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        assert group.synced()
        on_replica = replica.client()
        try:
            assert on_replica.get("arranged") == b"1"
        finally:
            on_replica.close()
