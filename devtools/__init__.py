"""Development tooling, never shipped in the wheel or the image.

- ``make_run`` — the Python pieces of ``scripts/run.sh`` (``make run``).
- ``chaos/`` — the chaos cluster: real processes, a private Redis (and Sentinel) and injected faults, for
  ``tests/chaos`` and ``bench/``.
"""

__all__ = ["chaos", "make_run"]
