"""The operator's commands of ``wetbot-rewards`` (assembled by ``wetbot_rewards.cli``).

- ``grants`` — ``grant``, ``grants``, ``dead``, ``resolve`` and ``links``: the ledger and who is who.
- ``events`` — ``events list|show|reprocess``: the event inbox.
- ``demo`` — ``demo clear``: what demo mode left in Redis.
"""

__all__ = ["demo", "events", "grants"]
