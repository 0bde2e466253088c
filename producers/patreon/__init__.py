"""Patreon: the member webhook and everything it needs.

- ``webhook`` — ``POST /webhooks/patreon``: verify, parse, decide, queue (the router).
- ``events`` — webhook bodies (JSON:API) → a typed ``MemberEvent``.
- ``rules`` — what one member event means against ``[[patreon.rules]]`` and the member's memory (pure).
- ``members`` — the member memory in Redis, and carrying out a plan atomically.
- ``cli`` — ``patreon send-test``.
- ``samples`` — sample webhook bodies for ``send-test`` and the tests.
"""

__all__ = ["cli", "events", "members", "rules", "samples", "webhook"]
