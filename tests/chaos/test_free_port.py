"""``free_port``: two picks never meet, within one process or across pytest-xdist workers."""

from __future__ import annotations

from devtools.chaos.servers import FREE_PORTS, _share_of, free_port


def test_one_process_hands_out_a_port_once_before_any_other_twice() -> None:
    # Nothing binds the ports in between, as when several servers are started and bind only later.
    picked = [free_port() for _ in range(200)]
    assert len(set(picked)) == len(picked)


def test_each_xdist_worker_picks_from_a_share_of_its_own() -> None:
    shares = [_share_of(FREE_PORTS, f"gw{n}", "6") for n in range(6)]
    for n, share in enumerate(shares):
        assert share.start >= FREE_PORTS.start and share.stop <= FREE_PORTS.stop and len(share) > 1000
        assert all(set(share).isdisjoint(other) for other in shares[n + 1 :])
    assert _share_of(FREE_PORTS, "", "") == FREE_PORTS  # outside xdist: the whole range
    assert _share_of(FREE_PORTS, "gw\u0661", "6") == FREE_PORTS  # not a worker name this understands
