"""The chaos cluster: the service's real processes, a private Redis and the simulator, under chosen faults.

``harness`` starts and measures a cluster, ``scenarios`` holds the faults, ``skewed_clock``
runs a worker with its clock shifted. Used by ``tests/chaos`` (short runs) and ``bench/chaos_long.py`` (long).
"""

__all__ = ["harness", "scenarios", "skewed_clock"]
