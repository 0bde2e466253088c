"""The delivery side: broker, the ``deliver`` actor (``worker.actors``), WetBot client, limiter, ledger.

``worker.actors`` is the Dramatiq entry point and reads settings on import, so
it is not imported here.

The names below are imported on first use (PEP 562), so importing one submodule does not load them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from worker.broker import QUEUE_NAME, build_broker, declare_deliver
    from worker.client import CallOutcome, CallResult, ItemDelta, WetbotClient
    from worker.delivery import Deliverer
    from worker.grant import Grant, GrantItem, GrantState, NewGrant
    from worker.guild_clients import GuildClients
    from worker.keys import Keys
    from worker.ledger import Ledger
    from worker.limiter import SlidingWindowLimiter, SlotDecision
    from worker.schedule import Reconciler, Schedule

__all__ = [
    # broker
    "QUEUE_NAME",
    "build_broker",
    "declare_deliver",
    # WetBot
    "CallResult",
    "ItemDelta",
    "CallOutcome",
    "WetbotClient",
    "GuildClients",
    # delivery
    "Deliverer",
    "SlidingWindowLimiter",
    "SlotDecision",
    "Reconciler",
    "Schedule",
    # ledger
    "Grant",
    "GrantItem",
    "GrantState",
    "Keys",
    "Ledger",
    "NewGrant",
]

#: Where each exported name lives.
_HOMES = {
    "QUEUE_NAME": "worker.broker",
    "build_broker": "worker.broker",
    "declare_deliver": "worker.broker",
    "CallResult": "worker.client",
    "ItemDelta": "worker.client",
    "CallOutcome": "worker.client",
    "WetbotClient": "worker.client",
    "Deliverer": "worker.delivery",
    "Grant": "worker.grant",
    "GrantItem": "worker.grant",
    "GrantState": "worker.grant",
    "NewGrant": "worker.grant",
    "GuildClients": "worker.guild_clients",
    "Keys": "worker.keys",
    "Ledger": "worker.ledger",
    "SlidingWindowLimiter": "worker.limiter",
    "SlotDecision": "worker.limiter",
    "Reconciler": "worker.schedule",
    "Schedule": "worker.schedule",
}

__getattr__ = lazy_exports(__name__, _HOMES)
