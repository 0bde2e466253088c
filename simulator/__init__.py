"""The simulators: real local HTTP servers that behave as WetBot and Twitch document, and inject faults.

Part of the product, not of the tests: ``make run``'s demo mode runs it (``python -m simulator``), the
tests and the benchmarks use it in-process (``WetbotSimulator``), and the chaos cluster (``devtools/chaos``,
not shipped) drives the service's real processes against it under faults. ``TwitchSimulator`` serves
Twitch's OAuth server and Helix (``simulator.twitch``; as a process ``python -m simulator twitch``), beside
the EventSub WebSocket server (``simulator.eventsub_ws``).
"""

from simulator.twitch import TwitchSimulator, TwitchUser
from simulator.wetbot import NO_RESPONSE, AppliedChange, RequestRecord, WetbotSimulator

__all__ = ["NO_RESPONSE", "AppliedChange", "RequestRecord", "TwitchSimulator", "TwitchUser", "WetbotSimulator"]
