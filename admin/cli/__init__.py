"""The operator's commands of ``wetbot-rewards`` (assembled by ``wetbot_rewards.cli``), one module per noun.

- ``grants`` — ``grants create|list|show|cancel|replay|resolve``: the ledger.
- ``links`` — ``links add|list|remove``: who is who.
- ``events`` — ``events list|show|reprocess``: the event inbox.
- ``demo`` — ``demo clear``: what demo mode left in Redis.
- ``connect`` — the ledger, links and audit log a command works on; ``renamed`` — old spellings.
"""

__all__ = ["connect", "demo", "events", "grants", "links", "renamed"]
