"""Twitch: the EventSub webhook and everything it needs.

- ``webhook`` — ``POST /webhooks/twitch``: verify, dedupe, plan, queue (the router).
- ``signature`` — EventSub HMAC signatures and message freshness.
- ``rules`` — notifications → the grants and links ``[[twitch.rules]]`` ask for (pure).
- ``helix`` — a small Helix client for EventSub subscriptions.
- ``oauth`` — the broadcaster's OAuth: Device Code Grant Flow, refresh, validate, revoke; the scopes the rules need.
- ``tokens`` — ``TokenVault``: the broadcaster's tokens in Redis, encrypted, refreshed under a lock, and their state.
- ``cli`` — ``twitch connect``, ``twitch send-test`` and ``twitch subscribe``.
- ``samples`` — signed sample notifications for ``send-test``, the tests and the benchmarks.
"""

__all__ = ["cli", "helix", "oauth", "rules", "samples", "signature", "tokens", "webhook"]
