"""Logging and Sentry set-up shared by every process, with secrets scrubbed from both.

Sentry gets exactly the events we choose: one per grant that ends ``dead`` or
``unknown`` (``report_final``), one warning per paused API key, and unexpected
exceptions through the Dramatiq integration. Log records become breadcrumbs,
never events, so a logged error does not double-report.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from config.settings import Settings

REDACTED = "[redacted]"
#: Secrets shorter than this are not scrubbed by substring (they would blank common words).
MIN_SCRUB_LENGTH = 6

logger = logging.getLogger("wetbot_rewards")


class SecretScrubber:
    """Replaces every configured secret value with ``[redacted]`` in text and nested data."""

    def __init__(self, secrets: Sequence[str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SCRUB_LENGTH}, key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every secret replaced in strings and keys."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


class RedactingFilter(logging.Filter):
    """A logging filter that formats the message once and scrubs secrets from it."""

    def __init__(self, scrubber: SecretScrubber) -> None:
        super().__init__()
        self._scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self._scrubber.text(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self._scrubber.text(record.exc_text)
        return True


#: The one text format of every process (web, worker, CLI): ``LOG_FORMAT=text``.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Uvicorn's own loggers: by default they have handlers of their own (another format, and the access log
#: bypasses the redaction filter); ``configure_logging`` sends them through the root handler instead.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class JsonFormatter(logging.Formatter):
    """``LOG_FORMAT=json``: one JSON object per line (``time``, ``level``, ``logger``, ``process``, ``message``,
    ``exception`` when there is one), built from the record the redaction filter already scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        del datefmt
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``LOG_FORMAT`` (``text`` or ``json``)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Log at ``LOG_LEVEL`` in ``LOG_FORMAT``, with secrets scrubbed from every record, uvicorn's included.

    A stderr handler is added only when the root logger has none (or a ``stream`` is given): Dramatiq's CLI
    installs its own before importing the actors, and a second one would print every line twice. Every root
    handler gets the service's formatter (so Dramatiq's lines look like ours) and the redaction filter, and
    uvicorn's loggers (its access log too) lose their own handlers and propagate to the root.
    """
    root = logging.getLogger()
    if stream is not None or not root.handlers:
        root.addHandler(logging.StreamHandler(stream or sys.stderr))
    root.setLevel(settings.log_level)
    scrub = RedactingFilter(SecretScrubber(settings.secrets()))
    formatter = make_formatter(settings.log_format)
    for existing in root.handlers:
        for old in [f for f in existing.filters if isinstance(f, RedactingFilter)]:
            existing.removeFilter(old)
        existing.addFilter(scrub)
        existing.setFormatter(formatter)
    for name in UVICORN_LOGGERS:
        own = logging.getLogger(name)
        for handler in list(own.handlers):
            own.removeHandler(handler)
        own.propagate = True


def init_sentry(settings: Settings, *, transport: Any = None) -> bool:
    """Initialise Sentry when ``SENTRY_DSN`` is set (or a test transport is given). Call before the broker exists.

    Returns True when Sentry is active.
    """
    if settings.sentry_dsn is None and transport is None:
        return False
    scrubber = SecretScrubber(settings.secrets())
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else "https://public@sentry.invalid/1"
    sentry_sdk.init(
        dsn=dsn,
        transport=transport,
        environment=settings.sentry_environment,
        integrations=[DramatiqIntegration(), LoggingIntegration(level=logging.INFO, event_level=None)],
        include_local_variables=False,
        before_send=_scrubbing_hook(scrubber),
        before_breadcrumb=_scrubbing_hook(scrubber),
    )
    return True


def _scrubbing_hook(scrubber: SecretScrubber) -> Callable[[Any, Any], Any]:
    def hook(event: Any, _hint: Any) -> Any:
        return scrubber.data(event)

    return hook


def capture(message: str, *, level: str, tags: dict[str, str], context: dict[str, Any] | None = None) -> None:
    """Send one Sentry event (a no-op when Sentry is off)."""
    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            scope.set_tag(key, value)
        if context:
            scope.set_context("grant", context)
        scope.fingerprint = ["wetbot-rewards", tags.get("kind", "event"), tags.get("state", "")]
        sentry_sdk.capture_message(message, level=level)  # type: ignore[arg-type]
