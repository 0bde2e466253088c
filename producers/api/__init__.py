"""The HTTP surface that is not a webhook: the grants and links API, health and metrics.

- ``grants`` — ``POST /grants`` and ``GET /grants/{id}``.
- ``links`` — ``POST /links``, ``GET /links/{platform}``, ``DELETE /links/{platform}/{external_id}``.
- ``health`` — ``/healthz``, ``/readyz`` and ``/metrics`` (``key_metrics``: its lines per API key).
- ``auth`` — the bearer-token check those routes share.
"""

__all__ = ["auth", "grants", "health", "key_metrics", "links"]
