"""What an operator command works on: the ledger, the links and the audit log on one Redis connection,
and who runs the command (for the audit log)."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING

from config.settings import Settings
from producers.printable import terminal_safe
from worker.connections import connect_redis
from worker.keys import Keys
from worker.ledger import Ledger
from worker.replication import ReplicaAcks

if TYPE_CHECKING:
    from producers.audit import AuditLog
    from producers.links import LinkStore

__all__ = ["actor", "audit_log", "ledger", "link_store"]


def actor() -> str:
    """Who runs a command, for the audit log: the login name (as far as the system knows it)."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = "unknown"
    return f"cli:{terminal_safe(name)[:40]}"


def audit_log(on: Ledger) -> AuditLog:
    """The audit log on the ledger's own connection."""
    from producers.audit import AuditLog  # here: reading commands never write the audit log

    return AuditLog(on.redis, on.keys)


def ledger(settings: Settings) -> Ledger:
    """The ledger; what it creates and what an action changes is confirmed by replicas like a producer's
    create (``worker.replication``; an action short of them fails with ``ActionUnconfirmed``, exit 1)."""
    return Ledger(connect_redis(settings), Keys(settings.redis_key_prefix), acks=ReplicaAcks.from_settings(settings))


def link_store(settings: Settings, on: Ledger) -> LinkStore:
    """The links (with the rewards file's static ones) on the ledger's connection, confirmed like it."""
    from config.rewards import load_rewards  # here: the grants commands do not need it
    from producers.links import LinkStore  # here: the grants commands do not need it

    rewards = load_rewards(settings.rewards_file, missing_ok=True)
    return LinkStore.for_rewards(on.redis, on.keys, rewards, acks=ReplicaAcks.from_settings(settings))
