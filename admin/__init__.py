"""The operator side: everything done to a grant after it is queued.

- ``grant_actions`` — replay, cancel, resolve and bulk replay, once, for the console, the API and the CLI.
- ``reprocess`` — handling an inbox event again after the rules or links were fixed.
- ``overview`` — per guild and key: what waits, what failed, what went out.
- ``api/`` — the operator API (bearer ``ADMIN_TOKEN``), health and metrics.
- ``console/`` — the operator console (``/console``).
- ``cli/`` — the operator's commands of ``wetbot-rewards``.

It builds on ``producers`` (submit, links, the inbox, the audit log); ``producers`` never imports it.
"""

__all__ = ["api", "cli", "console", "grant_actions", "overview", "reprocess"]
