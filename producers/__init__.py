"""The producing side: every way a grant comes in, up to the moment it is durably queued.

- ``app`` — the web app (``producers.app:app``), assembled from the routers of
  ``twitch/``, ``patreon/`` and ``api/``.
- ``cli`` — the ``wetbot-rewards`` command line, assembled from ``operator_cli``
  and the ``cli`` modules of ``twitch/`` and ``patreon/``.
- ``submit`` — the one way every producer queues or re-queues grants; ``links`` —
  platform user → Discord user, and releasing parked grants.
- ``state``, ``counters``, ``creation_batcher``, ``request_body`` — what the web
  process shares between its routers.
"""

from producers.submit import requeue_grant, submit_grant

__all__ = ["requeue_grant", "submit_grant"]
