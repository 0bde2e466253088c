"""The HTTP surface that is not a webhook: the grants and links API, health and metrics.

- ``grants`` — ``POST /grants`` and ``GET /grants/{id}``.
- ``links`` — ``POST /links``, ``GET /links/{platform}``, ``DELETE /links/{platform}/{external_id}``.
- ``health`` — ``/healthz``, ``/readyz`` and ``/metrics`` (``key_metrics``: its lines per API key).
- ``auth`` — the bearer-token checks (``GRANTS_API_TOKEN``, ``METRICS_TOKEN``).
- ``guarded_route`` — the route class of grants and links: token before body, JSON only, a size cap.
"""

__all__ = ["auth", "grants", "guarded_route", "health", "key_metrics", "links"]
