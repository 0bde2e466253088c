"""The producing side: every way a grant comes in, up to the moment it is durably queued.

- ``twitch/``, ``patreon/`` — the sources: webhooks, their rules and their command-line helpers.
- ``api/`` — the grants and links API of suppliers (bearer ``GRANTS_API_TOKEN``).
- ``submit`` — the one way every producer queues or re-queues grants; ``links``, ``link_actions`` —
  platform user → Discord user, and releasing parked grants.
- ``inbox``, ``settle`` — every verified webhook delivery, kept with what handling it did.
- ``state``, ``counters``, ``creation_batcher``, ``group_commit``, ``request_body``, ``body_deadline``,
  ``errors``, ``audit``, ``unconfirmed`` — what the web process shares between its routers (the operator
  side, ``admin/``, builds on them; nothing here imports ``admin``).

The names below are imported on first use (PEP 562), so importing one submodule does not load them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from producers.submit import requeue_grant, submit_grant

__all__ = ["requeue_grant", "submit_grant"]

#: Where each exported name lives.
_HOMES = {
    "requeue_grant": "producers.submit",
    "submit_grant": "producers.submit",
}

__getattr__ = lazy_exports(__name__, _HOMES)
