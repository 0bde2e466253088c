"""The suppliers' HTTP surface that is not a webhook: the grants and links API.

- ``grants`` — ``POST /grants`` and ``GET /grants/{id}``.
- ``links`` — ``POST /links``, ``GET /links/{platform}``, ``DELETE /links/{platform}/{external_id}``.
- ``auth`` — the bearer-token checks (``GRANTS_API_TOKEN``, ``ADMIN_TOKEN``, ``METRICS_TOKEN``).
- ``guarded_route`` — the route class of the token-protected API: token before body, JSON only, a size cap.
"""

__all__ = ["auth", "grants", "guarded_route", "links"]
