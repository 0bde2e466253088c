"""The WetBot simulator: a real local HTTP server that enforces WetBot's documented limits and injects faults.

Part of the product, not of the tests: ``make run``'s demo mode runs it (``python -m simulator``), the
tests and the benchmarks use it in-process (``WetbotSimulator``), and the chaos cluster (``devtools/chaos``,
not shipped) drives the service's real processes against it under faults.
"""

from simulator.wetbot import NO_RESPONSE, AppliedChange, RequestRecord, WetbotSimulator

__all__ = ["NO_RESPONSE", "AppliedChange", "RequestRecord", "WetbotSimulator"]
