"""The Dramatiq entry point (``dramatiq worker.actors``): declares ``deliver``, the only actor.

Import order matters: settings first (a bad value stops here with one line),
then logging and Sentry, then Redis must answer (the worker waits, saying so,
before Dramatiq can log "ready for action"), then the broker (Sentry's Dramatiq integration patches
``Broker.__init__``).
"""

from __future__ import annotations

import logging

import dramatiq

from config.errors import ConfigError, report_config_error
from config.settings import settings_or_exit
from worker.broker import build_broker, declare_deliver
from worker.connections import connect_redis
from worker.keys import Keys
from worker.observability import configure_logging, init_sentry
from worker.redis_checks import warn_at_start
from worker.redis_wait import redis_address, stop_on_sigterm, wait_for_redis
from worker.runtime import add_worker_middleware, build_deliverer, worker_keyring

logger = logging.getLogger("wetbot_rewards.worker")

settings = settings_or_exit()
try:
    keyring = worker_keyring(settings)  # every rule's guild must have a key (config.keyring)
except ConfigError as exc:
    report_config_error(exc)
    raise SystemExit(2) from None
configure_logging(settings)
init_sentry(settings)

redis = connect_redis(settings)
with stop_on_sigterm():  # Dramatiq's own handler only takes effect once the worker runs
    wait_for_redis(redis, redis_address(settings))  # one clear line while Redis is down (worker.redis_wait)
warn_at_start(redis)  # no persistence or an evicting Redis: one loud line each (worker.redis_checks)
broker = build_broker(settings)
_deliverer = build_deliverer(settings, redis, keyring=keyring)
add_worker_middleware(
    broker,
    redis,
    Keys(settings.redis_key_prefix),
    keyring=keyring,
    schedule=_deliverer.schedule,
    retention_s=settings.ledger_retention_s,
    event_retention_s=settings.event_retention_s,
)
dramatiq.set_broker(broker)

logger.info("delivering for %d key(s): %s", len(_deliverer.clients.all()), keyring.fingerprints())

#: The only actor: deliver one grant to WetBot (see ``worker.delivery.Deliverer.deliver``).
deliver = declare_deliver(broker, _deliverer.deliver, timeout_s=settings.wetbot_timeout_s)
