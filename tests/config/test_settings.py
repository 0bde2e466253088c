"""Settings: defaults, parsing, .env handling, and error lines that never leak a value."""

from __future__ import annotations

import io
import math
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import ConfigError, RateLimit, Settings, WetbotRewardsError, load_settings, settings_or_exit
from config.settings import DEMO_KEY_PREFIX, MIN_LEDGER_RETENTION_DAYS, RENAMED_VARIABLES, env_names
from worker.keys import IDEMPOTENCY_TTL_S

ROOT = Path(__file__).resolve().parents[2]

#: Looks like a real key, so a leak cannot hide behind a common word.
LEAKY = "sk_live_9f8e7d6c5b4a3f2e1d0c"

ENV_NAMES = env_names()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Nothing from the real environment or a real .env may reach a test."""
    for name in (*ENV_NAMES, *RENAMED_VARIABLES):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)
    yield monkeypatch


def test_every_field_has_an_env_name_in_the_example() -> None:
    example = (ROOT / ".env.example").read_text()
    for name in ENV_NAMES:
        assert f"\n{name}=\n" in example, name


def test_env_names_are_the_names_settings_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(ENV_NAMES) == len(Settings.model_fields) and "WETBOT_TIMEOUT_S" in ENV_NAMES
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert "LOG_LEVEL" in ENV_NAMES and load_settings().log_level == "DEBUG"


def test_defaults() -> None:
    s = load_settings()
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.redis_key_prefix == "wbr"
    assert s.wetbot_api_url == "https://www.wetbot.space/api"
    assert s.wetbot_api_key is None
    assert s.wetbot_rate_limit == RateLimit(10, 60.0)
    assert str(s.wetbot_rate_limit) == "10/60s"
    assert s.wetbot_timeout_s == 15
    assert s.wetbot_max_attempts == 8
    assert s.wetbot_retry_backoff_s == 5
    assert s.wetbot_auth_pause_s == 60
    assert s.twitch_webhook_secret is None
    assert s.patreon_webhook_secret is None
    assert s.grants_api_token is None
    assert s.metrics_token is None
    assert s.api_docs is False
    assert s.twitch_client_id is None
    assert s.twitch_client_secret is None
    assert s.rewards_file == Path("config/rewards.toml")
    assert s.ambiguous_policy == "verify"
    assert s.sentry_dsn is None
    assert s.sentry_environment is None
    assert s.log_level == "INFO"
    assert s.ledger_retention_s == 90 * 86_400
    assert s.event_retention_s == 30 * 86_400
    assert s.console_session_s == 12 * 3600
    assert s.demo_mode is False
    assert s.redis_key_prefix == "wbr"
    assert s.twitch_auth_url == "https://id.twitch.tv/oauth2"
    assert s.twitch_eventsub_ws_url == "wss://eventsub.wss.twitch.tv/ws"
    assert s.twitch_transport == "webhook"
    assert s.token_encryption_key is None
    assert s.secrets() == []


def test_values_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    env = {
        "REDIS_URL": "rediss://:pw@redis.example:6380/2",
        "REDIS_KEY_PREFIX": "wbr-test.1",
        "WETBOT_API_URL": "http://127.0.0.1:8080/api//",
        "WETBOT_API_KEY": LEAKY,
        "WETBOT_RATE_LIMIT": "5/1.5s",
        "WETBOT_TIMEOUT_S": "2.5",
        "WETBOT_MAX_ATTEMPTS": "3",
        "WETBOT_RETRY_BACKOFF_S": "0.1",
        "WETBOT_AUTH_PAUSE_S": "1",
        "AMBIGUOUS_POLICY": "HOLD",
        "LOG_LEVEL": "debug",
        "REWARDS_FILE": "/etc/wbr/rules.toml",
        "TWITCH_CLIENT_ID": "abc123",
        "SENTRY_ENVIRONMENT": "staging",
        "LEDGER_RETENTION_S": "3542400",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    s = load_settings()
    assert s.redis_url == env["REDIS_URL"]
    assert s.redis_key_prefix == "wbr-test.1"
    assert s.wetbot_api_url == "http://127.0.0.1:8080/api"
    assert s.wetbot_api_key is not None and s.wetbot_api_key.get_secret_value() == LEAKY
    assert s.wetbot_rate_limit == RateLimit(5, 1.5)
    assert (s.wetbot_timeout_s, s.wetbot_max_attempts, s.wetbot_retry_backoff_s, s.wetbot_auth_pause_s) == (
        2.5,
        3,
        0.1,
        1,
    )
    assert s.ambiguous_policy == "hold"
    assert s.log_level == "DEBUG"
    assert s.rewards_file == Path("/etc/wbr/rules.toml")
    assert s.twitch_client_id == "abc123"
    assert s.sentry_environment == "staging"
    assert s.ledger_retention_s == 41 * 86_400


def test_sentinel_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "rediss://:pw@ignored:1/3?ssl_cert_reqs=none")
    clean_env.setenv("REDIS_SENTINELS", " sentinel-1:26379, [fd00::1]:26380,10.0.0.3:26381 ")
    clean_env.setenv("REDIS_SENTINEL_MASTER", "wetbot")
    s = load_settings()
    assert s.redis_sentinels == (("sentinel-1", 26379), ("fd00::1", 26380), ("10.0.0.3", 26381))
    assert s.redis_sentinel_master == "wetbot"
    assert s.wait_replicas == 1  # Sentinel means replicas: wait for one by default
    assert s.redis_wait_timeout_s == 1.0


def test_wait_replicas_default_off_without_sentinels_and_settable(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().wait_replicas == 0
    assert load_settings(redis_wait_replicas=2).wait_replicas == 2
    clean_env.setenv("REDIS_SENTINELS", "s:26379")
    clean_env.setenv("REDIS_WAIT_REPLICAS", "0")
    assert load_settings().wait_replicas == 0


def test_sentinels_need_a_tcp_redis_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "unix:///run/redis.sock")
    clean_env.setenv("REDIS_SENTINELS", "s:26379")
    with pytest.raises(ConfigError, match=r"^REDIS_SENTINELS: needs REDIS_URL to start with redis:// or rediss://"):
        load_settings()


def test_env_names_are_case_insensitive(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("wetbot_timeout_s", "7")
    assert load_settings().wetbot_timeout_s == 7


def test_overrides_win_over_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WETBOT_TIMEOUT_S", "7")
    s = load_settings(wetbot_timeout_s=9, wetbot_rate_limit=RateLimit(2, 1.0))
    assert s.wetbot_timeout_s == 9
    assert s.wetbot_rate_limit == RateLimit(2, 1.0)


@pytest.mark.parametrize(
    ("value", "base"),
    [
        ("https://id.twitch.tv/oauth2", "https://id.twitch.tv/oauth2"),
        ("https://id.twitch.tv/oauth2/", "https://id.twitch.tv/oauth2"),
        ("https://id.twitch.tv/oauth2/token", "https://id.twitch.tv/oauth2"),
        ("http://127.0.0.1:9000/oauth2/token/", "http://127.0.0.1:9000/oauth2"),
        ("http://token:9000", "http://token:9000"),
        ("http://127.0.0.1:9000/mytoken", "http://127.0.0.1:9000/mytoken"),
    ],
)
def test_twitch_auth_url_is_the_oauth_base_and_reads_the_token_endpoint_as_its_base(
    clean_env: pytest.MonkeyPatch, value: str, base: str
) -> None:
    clean_env.setenv("TWITCH_AUTH_URL", value)
    assert load_settings().twitch_auth_url == base


def test_twitch_connection_settings_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TWITCH_EVENTSUB_WS_URL", "ws://127.0.0.1:8081/ws")
    clean_env.setenv("TWITCH_TRANSPORT", " WebSocket ")
    clean_env.setenv("TOKEN_ENCRYPTION_KEY", "k" * 32)
    s = load_settings()
    assert s.twitch_eventsub_ws_url == "ws://127.0.0.1:8081/ws"
    assert s.twitch_transport == "websocket"
    assert s.token_encryption_key is not None and s.token_encryption_key.get_secret_value() == "k" * 32
    assert "k" * 32 not in repr(s)


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.wetbot_timeout_s = 1


# -- errors: one line, names the variable, never the value ----------------------------

BAD_VALUES = [
    ("REDIS_URL", f"http://{LEAKY}@localhost:6379", "REDIS_URL: must be a URL starting with redis://"),
    ("REDIS_URL", f"redis://{LEAKY} x", "REDIS_URL: "),
    ("REDIS_KEY_PREFIX", f"{LEAKY}:x", "REDIS_KEY_PREFIX: must be 1-32 characters"),
    ("REDIS_KEY_PREFIX", "a" * 33 + LEAKY, "REDIS_KEY_PREFIX: "),
    ("WETBOT_API_URL", f"ftp://{LEAKY}.example", "WETBOT_API_URL: must be an http:// or https:// URL"),
    ("WETBOT_API_URL", f"https://{LEAKY}.example/api?key=1", "WETBOT_API_URL: "),
    ("WETBOT_API_URL", f"https://[{LEAKY}/api", "WETBOT_API_URL: "),
    ("WETBOT_API_URL", LEAKY, "WETBOT_API_URL: "),
    ("WETBOT_API_KEY", f"{LEAKY} trailing", "WETBOT_API_KEY: must not contain spaces or control characters"),
    ("WETBOT_API_KEYS", LEAKY, "WETBOT_API_KEYS: entry 1: expected <guild id>=<key>,<guild id>=<key>"),
    ("WETBOT_API_KEYS", f"123456789012345678={LEAKY},{LEAKY}", "WETBOT_API_KEYS: entry 2: expected"),
    ("WETBOT_API_KEYS", f"123456789012345678={LEAKY} x", "WETBOT_API_KEYS: entry 1 (guild 123456789012345678)"),
    ("WETBOT_API_KEYS", "123456789012345678=", "WETBOT_API_KEYS: entry 1 (guild 123456789012345678): the key"),
    ("WETBOT_API_KEYS", f"1234={LEAKY}", "WETBOT_API_KEYS: entry 1: expected"),
    ("WETBOT_API_KEYS", f"123456789012345678={LEAKY},123456789012345678=b", "WETBOT_API_KEYS: guild 1234567"),
    ("WETBOT_RATE_LIMIT", LEAKY, "WETBOT_RATE_LIMIT: expected N/<seconds>s such as 10/60s"),
    ("WETBOT_TIMEOUT_S", LEAKY, "WETBOT_TIMEOUT_S: must be a number"),
    ("WETBOT_TIMEOUT_S", "0", "WETBOT_TIMEOUT_S: must be greater than 0"),
    ("WETBOT_TIMEOUT_S", "300.5", "WETBOT_TIMEOUT_S: must be at most 300"),
    ("WETBOT_TIMEOUT_S", "nan", "WETBOT_TIMEOUT_S: must be a finite number"),
    ("WETBOT_MAX_ATTEMPTS", "0", "WETBOT_MAX_ATTEMPTS: must be at least 1"),
    ("WETBOT_MAX_ATTEMPTS", "101", "WETBOT_MAX_ATTEMPTS: must be at most 100"),
    ("WETBOT_MAX_ATTEMPTS", "2.5", "WETBOT_MAX_ATTEMPTS: must be a whole number"),
    ("WETBOT_RETRY_BACKOFF_S", "-1", "WETBOT_RETRY_BACKOFF_S: must be greater than 0"),
    ("WETBOT_RETRY_BACKOFF_S", "inf", "WETBOT_RETRY_BACKOFF_S: must be a finite number"),
    ("WETBOT_AUTH_PAUSE_S", "0", "WETBOT_AUTH_PAUSE_S: must be greater than 0"),
    ("LEDGER_RETENTION_S", "2592000", "LEDGER_RETENTION_S: must be 3542400-3153600000 seconds (41-36500 days, longer"),
    ("LEDGER_RETENTION_S", "3542399", "LEDGER_RETENTION_S: must be 3542400-3153600000 seconds"),
    ("LEDGER_RETENTION_S", "3153600001", "LEDGER_RETENTION_S: must be 3542400-3153600000 seconds"),
    ("LEDGER_RETENTION_S", LEAKY, "LEDGER_RETENTION_S: must be a number"),
    ("EVENT_RETENTION_S", "3600", "EVENT_RETENTION_S: must be 86400-315360000 seconds (1-3650 days)"),
    ("TWITCH_WEBHOOK_SECRET", "short", "TWITCH_WEBHOOK_SECRET: must be 10-100 ASCII characters"),
    ("TWITCH_WEBHOOK_SECRET", LEAKY * 5, "TWITCH_WEBHOOK_SECRET: must be 10-100 ASCII characters"),
    ("TWITCH_WEBHOOK_SECRET", LEAKY + "é", "TWITCH_WEBHOOK_SECRET: must be 10-100 ASCII characters"),
    ("GRANTS_API_TOKEN", LEAKY[:15], "GRANTS_API_TOKEN: must be at least 16 characters"),
    ("GRANTS_API_TOKEN", f"Bearer {LEAKY}", "GRANTS_API_TOKEN: must not contain spaces"),
    ("AMBIGUOUS_POLICY", LEAKY, "AMBIGUOUS_POLICY: must be one of verify, hold, retry"),
    ("LOG_LEVEL", LEAKY, "LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR"),
    ("SENTRY_DSN", LEAKY, "SENTRY_DSN: must be a Sentry DSN"),
    ("SENTRY_DSN", f"https://o1.ingest.sentry.io/{LEAKY}", "SENTRY_DSN: must be a Sentry DSN"),
    ("SENTRY_ENVIRONMENT", f"prod/{LEAKY}", "SENTRY_ENVIRONMENT: must be at most 64 characters"),
    ("REDIS_SENTINELS", LEAKY, "REDIS_SENTINELS: must be host:port pairs separated by commas"),
    ("REDIS_SENTINELS", f"{LEAKY}:26379,", "REDIS_SENTINELS: must be host:port pairs"),
    ("REDIS_SENTINELS", f"{LEAKY}:65536", "REDIS_SENTINELS: must be host:port pairs"),
    ("REDIS_SENTINELS", f"[{LEAKY}]:26379", "REDIS_SENTINELS: must be host:port pairs"),
    ("REDIS_SENTINEL_MASTER", f"my {LEAKY}", "REDIS_SENTINEL_MASTER: must be the master's name"),
    ("REDIS_WAIT_REPLICAS", "-1", "REDIS_WAIT_REPLICAS: must be at least 0"),
    ("REDIS_WAIT_REPLICAS", "17", "REDIS_WAIT_REPLICAS: must be at most 16"),
    ("REDIS_WAIT_REPLICAS", LEAKY, "REDIS_WAIT_REPLICAS: must be a whole number"),
    ("REDIS_WAIT_TIMEOUT_S", "0", "REDIS_WAIT_TIMEOUT_S: must be greater than 0"),
    ("REDIS_WAIT_TIMEOUT_S", "31", "REDIS_WAIT_TIMEOUT_S: must be at most 30"),
    ("TWITCH_AUTH_URL", f"ftp://{LEAKY}.example/oauth2", "TWITCH_AUTH_URL: must be an http:// or https:// URL"),
    ("TWITCH_EVENTSUB_WS_URL", f"https://{LEAKY}.example/ws", "TWITCH_EVENTSUB_WS_URL: must be a ws:// or wss://"),
    ("TWITCH_EVENTSUB_WS_URL", f"wss://{LEAKY} x/ws", "TWITCH_EVENTSUB_WS_URL: must be a ws:// or wss://"),
    ("TWITCH_EVENTSUB_WS_URL", f"wss://[{LEAKY}/ws", "TWITCH_EVENTSUB_WS_URL: must be a ws:// or wss://"),
    ("TWITCH_TRANSPORT", LEAKY, "TWITCH_TRANSPORT: must be one of webhook, websocket"),
    ("TOKEN_ENCRYPTION_KEY", LEAKY, "TOKEN_ENCRYPTION_KEY: must be at least 32 characters"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_bad_value_gives_one_line_naming_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert text.startswith(expected)
    assert "\n" not in text
    assert name in caught.value.variables
    # Short numbers ("0") may legitimately appear in the rule ("must be greater than 0").
    for part in (value if len(value) > 5 else LEAKY, LEAKY, LEAKY[:15]):
        assert part not in text
        assert part not in repr(caught.value)
    # The pydantic error quotes the input, so it must not ride along as the cause or context.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True


def test_exact_line_for_the_documented_examples(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WETBOT_RATE_LIMIT", "ten per minute")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "WETBOT_RATE_LIMIT: expected N/<seconds>s such as 10/60s"
    clean_env.delenv("WETBOT_RATE_LIMIT")
    clean_env.setenv("AMBIGUOUS_POLICY", "maybe")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "AMBIGUOUS_POLICY: must be one of verify, hold, retry"


def test_several_bad_values_are_joined_on_one_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WETBOT_TIMEOUT_S", "0")
    clean_env.setenv("WETBOT_API_KEY", f"{LEAKY} x")
    clean_env.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert text.count("; ") == 2
    assert set(caught.value.variables) == {"WETBOT_TIMEOUT_S", "WETBOT_API_KEY", "LOG_LEVEL"}
    assert LEAKY not in text


def test_bad_override_is_named_in_env_form() -> None:
    with pytest.raises(ConfigError, match=r"^WETBOT_MAX_ATTEMPTS: must be at least 1$"):
        load_settings(wetbot_max_attempts=0)


def test_config_error_is_a_wetbot_rewards_error() -> None:
    assert issubclass(ConfigError, WetbotRewardsError)


# -- rate limit ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "window_s", "shown"),
    [
        ("10/60s", 10, 60.0, "10/60s"),
        ("10/1.5s", 10, 1.5, "10/1.5s"),
        ("1/86400s", 1, 86400.0, "1/86400s"),
        ("3/.5s", 3, 0.5, "3/0.5s"),
        (" 10/60s\n", 10, 60.0, "10/60s"),
        ("010/060.0s", 10, 60.0, "10/60s"),
        ("100000/0.001s", 100000, 0.001, "100000/0.001s"),
    ],
)
def test_rate_limit_parses(text: str, limit: int, window_s: float, shown: str) -> None:
    rate = RateLimit.parse(text)
    assert (rate.limit, rate.window_s) == (limit, window_s)
    assert str(rate) == shown


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected N/<seconds>s"),
        ("10", "expected N/<seconds>s"),
        ("10/60", "expected N/<seconds>s"),
        ("10/60m", "expected N/<seconds>s"),
        ("10 / 60s", "expected N/<seconds>s"),
        ("-1/60s", "expected N/<seconds>s"),
        ("1.5/60s", "expected N/<seconds>s"),
        ("10/1e3s", "expected N/<seconds>s"),
        ("10/infs", "expected N/<seconds>s"),
        ("10/60s/2", "expected N/<seconds>s"),
        ("0/60s", "N must be a whole number of at least 1"),
        ("10/0s", "seconds must be greater than 0 and at most 86400"),
        ("10/0.0s", "seconds must be greater than 0 and at most 86400"),
        ("10/86400.5s", "seconds must be greater than 0 and at most 86400"),
    ],
)
def test_rate_limit_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RateLimit.parse(text)


@pytest.mark.parametrize(("limit", "window_s"), [(0, 1.0), (True, 1.0), (1, math.nan), (1, math.inf), (1, -1.0)])
def test_rate_limit_constructor_validates(limit: int, window_s: float) -> None:
    with pytest.raises(ValueError):
        RateLimit(limit, window_s)


@given(
    limit=st.integers(min_value=1, max_value=10**9),
    window_s=st.floats(min_value=1e-6, max_value=86400, allow_nan=False, allow_infinity=False),
)
def test_rate_limit_str_round_trips(limit: int, window_s: float) -> None:
    rate = RateLimit(limit, window_s)
    assert RateLimit.parse(str(rate)) == rate


@given(st.text(max_size=40))
def test_rate_limit_errors_are_fixed_texts(text: str) -> None:
    """Whatever the input, the message is one of three fixed texts, so it cannot carry the input."""
    try:
        RateLimit.parse(text)
    except ValueError as exc:
        assert str(exc) in {
            "expected N/<seconds>s such as 10/60s",
            "N must be a whole number of at least 1",
            "seconds must be greater than 0 and at most 86400",
        }


# -- .env -----------------------------------------------------------------------------


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"WETBOT_API_KEY={LEAKY}\nWETBOT_RATE_LIMIT=4/2s\n# comment\nUNRELATED_VARIABLE=ignored\n"
        "sentry_environment=dev\n"
    )
    s = load_settings()
    assert s.wetbot_api_key is not None and s.wetbot_api_key.get_secret_value() == LEAKY
    assert s.wetbot_rate_limit == RateLimit(4, 2.0)
    assert s.sentry_environment == "dev"


def test_environment_wins_over_dotenv(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WETBOT_TIMEOUT_S=3\n")
    clean_env.setenv("WETBOT_TIMEOUT_S", "4")
    assert load_settings().wetbot_timeout_s == 4


def test_dotenv_can_be_skipped(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WETBOT_TIMEOUT_S=3\n")
    assert load_settings(_env_file=None).wetbot_timeout_s == 15


def test_bad_value_in_dotenv_is_named_without_value(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"TWITCH_WEBHOOK_SECRET=é{LEAKY}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("TWITCH_WEBHOOK_SECRET: ")
    assert LEAKY not in str(caught.value)


def test_env_example_as_dotenv_gives_defaults(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    assert load_settings() == load_settings(_env_file=None)


def test_empty_value_means_unset(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        clean_env.setenv(name, "")
    s = load_settings()
    assert s == load_settings(_env_file=None)
    assert s.wetbot_api_key is None
    assert s.wetbot_rate_limit == RateLimit(10, 60.0)
    (tmp_path / ".env").write_text("WETBOT_TIMEOUT_S=\nWETBOT_API_KEY=\n")
    assert load_settings().wetbot_timeout_s == 15


# -- secrets --------------------------------------------------------------------------


def test_secrets_lists_every_set_secret(clean_env: pytest.MonkeyPatch) -> None:
    values = {
        "WETBOT_API_KEY": "key-" + LEAKY,
        "TWITCH_WEBHOOK_SECRET": "twitch-" + LEAKY,
        "PATREON_WEBHOOK_SECRET": "patreon-" + LEAKY,
        "GRANTS_API_TOKEN": "token-" + LEAKY,
        "ADMIN_TOKEN": "admin-" + LEAKY,
        "METRICS_TOKEN": "metrics-" + LEAKY,
        "TWITCH_CLIENT_SECRET": "client-" + LEAKY,
        "SENTRY_DSN": "https://abc123@o1.ingest.sentry.io/42",
        "REDIS_SENTINEL_PASSWORD": "sentinel-" + LEAKY,
        "TOKEN_ENCRYPTION_KEY": "cipher-" + LEAKY * 2,
    }
    for name, value in values.items():
        clean_env.setenv(name, value)
    clean_env.setenv("REDIS_URL", "redis://default:redis-pw@localhost:6379/0")
    assert sorted(load_settings().secrets()) == sorted([*values.values(), "redis-pw"])


def test_api_keys_parse_into_a_keyring(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WETBOT_API_KEY", "home-" + LEAKY)
    clean_env.setenv("WETBOT_API_KEYS", f" 222222222222222222=away-{LEAKY} ,, 333333333333333333=third-{LEAKY}")
    s = load_settings()
    assert sorted(s.wetbot_api_keys) == ["222222222222222222", "333333333333333333"]
    assert sorted(s.secrets()) == sorted(["home-" + LEAKY, "away-" + LEAKY, "third-" + LEAKY])
    assert LEAKY not in repr(s) and LEAKY not in s.model_dump_json()
    ring = s.keyring("111111111111111111")
    assert ring.guilds() == ["111111111111111111", "222222222222222222", "333333333333333333"]
    assert ring.fallback is None and not ring.covers("444444444444444444")
    assert LEAKY not in str(ring.fingerprints()) and LEAKY not in repr(ring)
    clean_env.delenv("WETBOT_API_KEY")
    assert not load_settings().keyring(None).empty, "WETBOT_API_KEYS alone is a key"
    clean_env.delenv("WETBOT_API_KEYS")
    assert load_settings().keyring(None).empty


def test_secrets_only_lists_what_is_set(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PATREON_WEBHOOK_SECRET", "patreon-" + LEAKY)
    clean_env.setenv("REDIS_URL", "unix:///run/redis.sock?db=1&password=sock-pw")
    assert load_settings().secrets() == ["patreon-" + LEAKY, "sock-pw"]


def test_secret_repr_hides_the_key(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WETBOT_API_KEY", LEAKY)
    clean_env.setenv("GRANTS_API_TOKEN", "token-" + LEAKY)
    s = load_settings()
    assert LEAKY not in repr(s)
    assert LEAKY not in str(s)
    assert LEAKY not in repr(s.wetbot_api_key)
    assert LEAKY not in s.model_dump_json()


# -- settings_or_exit -----------------------------------------------------------------


def test_settings_or_exit_returns_settings() -> None:
    assert settings_or_exit().wetbot_timeout_s == 15


def test_settings_or_exit_exits_2_with_one_line(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("WETBOT_RATE_LIMIT", LEAKY)
    with pytest.raises(SystemExit) as caught:
        settings_or_exit()
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "wetbot-rewards: configuration error: WETBOT_RATE_LIMIT: expected N/<seconds>s such as 10/60s\n"


class _Writes(io.StringIO):
    """A stderr that keeps each ``write`` call apart, as a Dramatiq worker process' stderr pipe does."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_the_configuration_error_line_is_one_write(
    clean_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each write to a worker process' stderr is relayed on its own: the main process' line ("exited
    # unexpectedly") landed between the text and its newline when they were two writes.
    stderr = _Writes()
    monkeypatch.setattr(sys, "stderr", stderr)
    clean_env.setenv("WETBOT_RATE_LIMIT", "bad")
    with pytest.raises(SystemExit):
        settings_or_exit()
    assert stderr.calls == [
        "wetbot-rewards: configuration error: WETBOT_RATE_LIMIT: expected N/<seconds>s such as 10/60s\n"
    ]


def test_shortest_retention_outlives_an_idempotency_claim() -> None:
    """A grant may only be trimmed once its claim has expired, with a day to spare for clock differences."""
    assert MIN_LEDGER_RETENTION_DAYS * 86_400 >= IDEMPOTENCY_TTL_S + 86_400


# -- demo mode ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_demo_mode_keeps_its_keys_apart_from_a_real_install(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("DEMO_MODE", value)
    s = load_settings()
    assert s.demo_mode is True
    assert s.redis_key_prefix == DEMO_KEY_PREFIX == "wbr-demo"


def test_demo_mode_respects_an_explicit_prefix(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DEMO_MODE", "1")
    clean_env.setenv("REDIS_KEY_PREFIX", "mine")
    assert load_settings().redis_key_prefix == "mine"
    clean_env.setenv("DEMO_MODE", "0")
    clean_env.delenv("REDIS_KEY_PREFIX")
    assert load_settings().redis_key_prefix == "wbr"


def test_a_bad_demo_mode_is_one_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DEMO_MODE", "maybe")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "DEMO_MODE: must be true or false (or 1 or 0)"


WARNING = (
    "wetbot-rewards: warning: WETBOT_TIMEOUT is deprecated and read only while WETBOT_TIMEOUT_S is unset; "
    "rename it to WETBOT_TIMEOUT_S\n"
)


def test_every_duration_ends_in_s_and_the_renamed_ones_are_gone_from_the_example() -> None:
    example = (ROOT / ".env.example").read_text()
    for old, new in RENAMED_VARIABLES.items():
        assert new.endswith("_S") and new in ENV_NAMES
        assert f"\n{old}=" not in example
    assert "WETBOT_TIMEOUT" not in ENV_NAMES


def test_an_old_name_in_the_environment_is_read_with_one_warning(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("WETBOT_TIMEOUT", "2.5")
    assert load_settings().wetbot_timeout_s == 2.5
    assert capsys.readouterr().err == WARNING


def test_an_old_name_in_dotenv_is_read_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".env").write_text("WETBOT_TIMEOUT=3\n")
    assert load_settings().wetbot_timeout_s == 3
    assert capsys.readouterr().err == WARNING


def test_the_new_name_wins_over_the_old_one_wherever_each_is_set(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("WETBOT_TIMEOUT", "3")
    clean_env.setenv("WETBOT_TIMEOUT_S", "4")
    assert load_settings().wetbot_timeout_s == 4
    (tmp_path / ".env").write_text("WETBOT_TIMEOUT_S=5\n")
    clean_env.delenv("WETBOT_TIMEOUT_S")
    assert load_settings().wetbot_timeout_s == 5
    capsys.readouterr()


def test_a_bad_value_under_the_old_name_is_named_by_the_new_one(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WETBOT_TIMEOUT", "0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "WETBOT_TIMEOUT_S: must be greater than 0"


def test_the_new_name_alone_warns_of_nothing(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("WETBOT_TIMEOUT_S", "6")
    assert load_settings().wetbot_timeout_s == 6
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("old", "value", "field", "seconds"),
    [
        ("CONSOLE_SESSION_HOURS", "0.5", "console_session_s", 1800),
        ("LEDGER_RETENTION_DAYS", "41", "ledger_retention_s", 41 * 86_400),
        ("EVENT_RETENTION_DAYS", "2", "event_retention_s", 2 * 86_400),
    ],
)
def test_an_old_hours_or_days_name_is_read_in_its_unit_with_one_warning(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], old: str, value: str, field: str, seconds: int
) -> None:
    clean_env.setenv(old, value)
    assert getattr(load_settings(), field) == seconds
    new = RENAMED_VARIABLES[old]
    assert capsys.readouterr().err == (
        f"wetbot-rewards: warning: {old} is deprecated and read only while {new} is unset; rename it to {new}\n"
    )
    clean_env.setenv(new, str(2 * seconds))  # the new name wins
    assert getattr(load_settings(), field) == 2 * seconds
