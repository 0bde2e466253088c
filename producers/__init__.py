"""The producing side: the web app (``producers.app:app``), its routers, and the CLI (``producers.cli``)."""

from producers.submit import requeue_grant, submit_grant

__all__ = ["requeue_grant", "submit_grant"]
