"""The operator's HTTP surface: the operator API, health and metrics.

- ``operations`` — list and fix grants, list and re-process inbox events (bearer ``ADMIN_TOKEN``).
- ``health`` — ``/healthz``, ``/readyz`` and ``/metrics`` (``key_metrics``: its lines per API key).
"""

__all__ = ["health", "key_metrics", "operations"]
