"""Secrets never reach log lines or Sentry payloads."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from config.settings import Settings
from tests.conftest import API_KEY, TOKEN, SettingsFactory
from worker.observability import REDACTED, SecretScrubber, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_lines_have_secrets_replaced(make_settings: SettingsFactory, restore_logging: None) -> None:
    settings = make_settings(twitch_webhook_secret="twitch-secret-abcdef")
    stream = io.StringIO()
    configure_logging(settings, stream=stream)
    log = logging.getLogger("wetbot_rewards.test")
    log.warning("calling with key %s and token %s", API_KEY, TOKEN)
    try:
        raise ValueError(f"boom twitch-secret-abcdef {API_KEY}")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert API_KEY not in text and TOKEN not in text and "twitch-secret-abcdef" not in text
    assert text.count(REDACTED) >= 4
    assert "calling with key" in text and "ValueError: boom" in text


def test_scrubber_walks_nested_data(settings: Settings) -> None:
    scrub = SecretScrubber(settings.secrets())
    event = {"extra": {"items": [f"x{API_KEY}y", 3, None]}, API_KEY: "k", "message": f"Bearer {TOKEN}"}
    clean = scrub.data(event)
    assert clean == {"extra": {"items": [f"x{REDACTED}y", 3, None]}, REDACTED: "k", "message": f"Bearer {REDACTED}"}


def test_short_values_are_not_scrubbed_as_substrings() -> None:
    assert SecretScrubber(["abc"]).text("abcdef") == "abcdef"
