"""The delivery side: broker, the ``deliver`` actor (``worker.actors``), WetBot client, limiter, ledger.

``worker.actors`` is the Dramatiq entry point and reads settings on import, so
it is not imported here.
"""

from worker.broker import QUEUE_NAME, build_broker, declare_deliver
from worker.client import CallResult, ItemDelta, Outcome, WetbotClient
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
    "Outcome",
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
