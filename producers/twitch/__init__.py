"""Twitch: the EventSub webhook and everything it needs.

- ``webhook`` — ``POST /webhooks/twitch``: verify, dedupe, plan, queue (the router).
- ``signature`` — EventSub HMAC signatures and message freshness.
- ``rules`` — notifications → the grants and links ``[[twitch.rules]]`` ask for (pure).
- ``helix`` — a small Helix client for EventSub subscriptions.
- ``cli`` — ``twitch send-test`` and ``twitch subscribe``.
- ``samples`` — signed sample notifications for ``send-test``, the tests and the benchmarks.
"""

__all__ = ["cli", "helix", "rules", "samples", "signature", "webhook"]
