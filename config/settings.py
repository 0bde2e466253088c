"""Process settings, read from the environment and an optional ``.env`` file.

Settings are built (``load_settings()``), never a module global, so tests and
tools can build their own. A bad value stops the process at start with one
line that names the variable and what is wrong with it and never the value
itself: values here include API keys and webhook secrets, and that line ends
up in terminals, logs and CI output.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from config.errors import ConfigError, report_config_error
from config.keyring import API_KEYS_FORMAT, Keyring, parse_api_keys

__all__ = ["RENAMED_VARIABLES", "RateLimit", "Settings", "load_settings", "settings_or_exit"]

#: Variables renamed so that every duration ends in ``_S``: old name → new. The old name is still read
#: for one release (when the new one is unset), with one warning line on stderr (``RenamedVariables``).
RENAMED_VARIABLES = {
    "WETBOT_TIMEOUT": "WETBOT_TIMEOUT_S",
    "CONSOLE_SESSION_HOURS": "CONSOLE_SESSION_S",
    "LEDGER_RETENTION_DAYS": "LEDGER_RETENTION_S",
    "EVENT_RETENTION_DAYS": "EVENT_RETENTION_S",
}
#: What an old name's value is multiplied by to be in seconds (the others were seconds already).
_OLD_UNIT_S = {"CONSOLE_SESSION_HOURS": 3600, "LEDGER_RETENTION_DAYS": 86_400, "EVENT_RETENTION_DAYS": 86_400}

#: Largest rate-limit window accepted, in seconds (one day). Longer windows are
#: almost certainly a unit mistake, and the limiter keeps one entry per request.
MAX_RATE_WINDOW_S = 86_400.0

#: Longest accepted API call timeout, in seconds. A stuck call holds a rate slot
#: and a worker thread; five minutes is already far beyond any sane response time.
MAX_TIMEOUT_S = 300.0

#: Twitch requires an EventSub secret of 10-100 ASCII characters (docs/twitch.md §1.1).
TWITCH_SECRET_MIN_LEN = 10
TWITCH_SECRET_MAX_LEN = 100

#: The OAuth base ``TWITCH_AUTH_URL`` defaults to, and the endpoint its older form named.
DEFAULT_TWITCH_AUTH_URL = "https://id.twitch.tv/oauth2"
_OLD_AUTH_URL_SUFFIX = "/token"
#: Shortest accepted ``TOKEN_ENCRYPTION_KEY``: the cipher key is derived from it, so it must carry enough
#: entropy by itself (32 random characters from a password manager or ``openssl rand -base64 32``).
TOKEN_ENCRYPTION_KEY_MIN_LEN = 32

#: Shortest accepted bearer token for ``POST /grants`` (and ``ADMIN_TOKEN``): anything shorter is guessable.
GRANTS_TOKEN_MIN_LEN = 16
#: Seconds an operator console session lasts by default (``CONSOLE_SESSION_S``), and at most (30 days).
DEFAULT_CONSOLE_SESSION_S = 12 * 3600.0
MAX_CONSOLE_SESSION_S = 30 * 86_400.0

#: Seconds in a day (the retention settings are in seconds, their limits in days).
SECONDS_PER_DAY = 86_400
#: Days a final grant is kept by default (``LEDGER_RETENTION_S``).
DEFAULT_LEDGER_RETENTION_DAYS = 90
#: Shortest accepted ``LEDGER_RETENTION_S``, in days: longer than an idempotency claim lives
#: (``worker.keys.IDEMPOTENCY_TTL_S``, 40 days) plus a day for clock differences between hosts,
#: so a grant is only ever trimmed once nothing can dedupe against it any more.
MIN_LEDGER_RETENTION_DAYS = 41
#: Longest accepted ``LEDGER_RETENTION_S``, in days (100 years: "keep everything", in practice).
MAX_LEDGER_RETENTION_DAYS = 36_500
#: Days a webhook delivery stays in the event inbox (``EVENT_RETENTION_S``), and at most.
DEFAULT_EVENT_RETENTION_DAYS = 30
MAX_EVENT_RETENTION_DAYS = 3650

#: Most items ``WETBOT_MAX_ITEMS_PER_REQUEST`` may allow in one request. WetBot documents no maximum; the
#: simulator assumes 100, and a merged request refused for its size would only be split again.
MAX_ITEMS_PER_REQUEST = 100

#: ``REDIS_KEY_PREFIX`` when ``DEMO_MODE`` is on and no prefix is set: demo grants never share keys
#: (or queues) with a real install on the same Redis (``wetbot-rewards demo clear`` deletes them).
DEMO_KEY_PREFIX = "wbr-demo"

#: Sentry rejects environment names longer than this (and ones with spaces, "/" or newlines).
SENTRY_ENVIRONMENT_MAX_LEN = 64

_RATE_LIMIT_RE = re.compile(r"(?P<limit>[0-9]+)/(?P<window>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)s")
_RATE_LIMIT_FORMAT = "expected N/<seconds>s such as 10/60s"
_KEY_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: One sentinel address: ``host:port`` or ``[ipv6]:port``.
_SENTINEL_RE = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>[0-9]{1,5})")
_SENTINELS_FORMAT = "must be host:port pairs separated by commas, such as sentinel-1:26379,sentinel-2:26379"
#: Longest accepted ``REDIS_WAIT_TIMEOUT_S``: a producer's answer waits this long for a replica at most.
MAX_WAIT_TIMEOUT_S = 30.0
#: Most replicas ``REDIS_WAIT_REPLICAS`` may ask for (more is surely a typo).
MAX_WAIT_REPLICAS = 16
_HAS_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` requests in any ``window_s`` seconds (a sliding window), per API key.

    Written ``N/<seconds>s`` in the environment (``10/60s``, ``10/1.5s``);
    ``str()`` gives that form back. Construction validates, so an instance is
    always usable by the limiter.

    Raises:
      ValueError: on a limit below 1 or a window outside (0, 86400] seconds.
    """

    limit: int
    window_s: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError("N must be a whole number of at least 1")
        if not math.isfinite(self.window_s) or not 0 < self.window_s <= MAX_RATE_WINDOW_S:
            raise ValueError(f"seconds must be greater than 0 and at most {MAX_RATE_WINDOW_S:g}")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``N/<seconds>s``; surrounding whitespace is ignored.

        Raises:
          ValueError: with a message that does not repeat ``text``.
        """
        match = _RATE_LIMIT_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(_RATE_LIMIT_FORMAT)
        return cls(int(match["limit"]), float(match["window"]))

    def __str__(self) -> str:
        # Positional notation (never 1e-06), with the shortest digits that read back to the same float.
        window = format(Decimal(repr(float(self.window_s))).normalize(), "f")
        return f"{self.limit}/{window}s"


def _parse_sentinels(value: Any) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (spaces around commas allowed) as ``((host, port), ...)``.

    Raises:
      ValueError: with a message that does not repeat ``value``.
    """
    if isinstance(value, tuple | list):
        value = ",".join(f"{host}:{port}" for host, port in value)
    if not isinstance(value, str):
        raise ValueError(_SENTINELS_FORMAT)
    if not value.strip():
        return ()
    addresses = []
    for part in value.split(","):
        match = _SENTINEL_RE.fullmatch(part.strip())
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise ValueError(_SENTINELS_FORMAT)
        addresses.append((match["ipv6"] or match["host"], int(match["port"])))
    return tuple(addresses)


#: ``NoDecode``: the env value is our comma list, not JSON.
SentinelsField = Annotated[tuple[tuple[str, int], ...], NoDecode]


def _validate_rate_limit(value: Any) -> RateLimit:
    if isinstance(value, RateLimit):
        return value
    if isinstance(value, str):
        return RateLimit.parse(value)
    raise ValueError(_RATE_LIMIT_FORMAT)


#: ``NoDecode`` stops pydantic-settings from reading the env value as JSON (it
#: would, because a dataclass counts as a "complex" type).
RateLimitField = Annotated[
    RateLimit,
    NoDecode,
    PlainValidator(_validate_rate_limit),
    PlainSerializer(str, return_type=str),
]


def _validate_api_keys(value: Any) -> dict[str, SecretStr]:
    if isinstance(value, str):
        return parse_api_keys(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return parse_api_keys(",".join(f"{guild}={_secret_text(key)}" for guild, key in value.items()))
    raise ValueError(API_KEYS_FORMAT)


def _secret_text(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


#: ``WETBOT_API_KEYS``: guild id -> key, written ``<guild id>=<key>,...`` (``NoDecode``: not JSON).
#: Serialised with the keys masked, as ``SecretStr`` is.
ApiKeysField = Annotated[
    dict[str, SecretStr],
    NoDecode,
    PlainValidator(_validate_api_keys),
    PlainSerializer(lambda keys: dict.fromkeys(keys, "**********"), return_type=dict[str, str]),
]


def _http_base_url(value: str, problem: str) -> str:
    """``value`` without a trailing slash if it is an http(s) URL with a host and no query or fragment.

    Raises:
      ValueError: with ``problem`` (never the value) otherwise.
    """
    if _HAS_SPACE_OR_CONTROL.search(value):
        raise ValueError(problem)
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:  # e.g. a bad port or an unbalanced [ in the host
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not hostname or parts.query or parts.fragment:
        raise ValueError(problem)
    return value.rstrip("/")


def _in_seconds(value: str | None, unit_s: int) -> str | None:
    """An old variable's number in seconds (as text, for the field's own checks); anything else unchanged,
    so the field's check reports it."""
    if unit_s == 1 or value is None:
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return repr(number * unit_s) if math.isfinite(number) else value


class RenamedVariables(PydanticBaseSettingsSource):
    """The old names of ``RENAMED_VARIABLES``, found in the environment or ``.env`` (as the sources it wraps
    read them), each given to its new field with a warning. It ranks below those sources, so a new name set
    anywhere wins."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.sources = sources

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        del field
        return None, field_name, False  # everything is in __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for source in self.sources:
            env_vars: Mapping[str, str | None] = getattr(source, "env_vars", {})
            for old, new in RENAMED_VARIABLES.items():
                value = env_vars.get(old.lower())
                if value in (None, "") or new.lower() in found:
                    continue
                print(
                    f"wetbot-rewards: warning: {old} is deprecated and read only while {new} is unset; "
                    f"rename it to {new}",
                    file=sys.stderr,
                )
                found[new.lower()] = _in_seconds(value, _OLD_UNIT_S.get(old, 1))
        return found


class Settings(BaseSettings):
    """Every setting of the service; the environment name is the field name in upper case.

    An empty value (``FOO=``) means "unset" (``env_ignore_empty``), so the
    default applies. Secrets are ``SecretStr``: their ``repr`` and ``str`` are
    masked, and ``secrets()`` lists their values for log and Sentry scrubbing.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, then the old variable names (``RenamedVariables``) below them."""
        renamed = RenamedVariables(settings_cls, env_settings, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, renamed, file_secret_settings

    #: Broker and state. ``redis://``, ``rediss://`` (TLS) or ``unix://``. With ``REDIS_SENTINELS`` its
    #: host and port are not used: it gives the database, username, password and TLS options of the master.
    redis_url: str = "redis://localhost:6379/0"
    #: Redis Sentinel: the sentinels' ``host:port`` list; none means ``REDIS_URL`` names the server itself.
    redis_sentinels: SentinelsField = ()
    #: The master's name as the sentinels know it (``sentinel monitor <name> ...``).
    redis_sentinel_master: str = "mymaster"
    #: Password of the sentinels themselves (``requirepass`` in sentinel.conf); the master's is in ``REDIS_URL``.
    redis_sentinel_password: SecretStr | None = None
    #: Replicas that must confirm a write before a producer answers 2xx or a worker sends a request
    #: (``WAIT``; see ``worker.replication``). None: 1 with ``REDIS_SENTINELS``, else 0 (off).
    redis_wait_replicas: int | None = Field(None, ge=0, le=MAX_WAIT_REPLICAS)
    #: Seconds to wait for that confirmation before answering 503 / not sending yet.
    redis_wait_timeout_s: float = Field(1.0, gt=0, le=MAX_WAIT_TIMEOUT_S, allow_inf_nan=False)
    #: Every Redis key of the service lives under ``<prefix>:`` (see worker/keys.py); ``wbr-demo`` in demo mode.
    redis_key_prefix: str = "wbr"
    #: Demo mode, set by ``make run`` when no WetBot key is configured (it then starts the simulator):
    #: a missing rewards file is allowed and the keys default to the ``wbr-demo`` prefix.
    demo_mode: bool = False
    #: WetBot API base URL, without a trailing slash.
    wetbot_api_url: str = "https://www.wetbot.space/api"
    #: API key of the rewards file's default guild (of every guild when the file names none).
    wetbot_api_key: SecretStr | None = None
    #: More guilds, a key each (``config.keyring``). Neither this nor ``wetbot_api_key``: ``make run`` runs a demo.
    wetbot_api_keys: ApiKeysField = Field(default_factory=dict)
    #: Requests per sliding window per API key (WetBot allows 10 a minute).
    wetbot_rate_limit: RateLimitField = RateLimit(10, 60.0)
    #: Seconds one API call may take before it counts as a timeout.
    wetbot_timeout_s: float = Field(15.0, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    #: Transient failures a grant may have before it is ``dead``.
    wetbot_max_attempts: int = Field(8, ge=1, le=100)
    #: Seconds before the first retry; each further retry waits twice as long.
    wetbot_retry_backoff_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    #: Send every grant pending for one (guild, member) in one request when a slot comes up (``worker.coalesce``).
    wetbot_coalesce: bool = True
    #: Most distinct items one (merged) request carries.
    wetbot_max_items_per_request: int = Field(50, ge=1, le=MAX_ITEMS_PER_REQUEST)
    #: Seconds a key that got 401/403 stays paused before one probe request.
    wetbot_auth_pause_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    #: EventSub secret; none means ``POST /webhooks/twitch`` answers 503.
    twitch_webhook_secret: SecretStr | None = None
    #: Patreon webhook secret; none means ``POST /webhooks/patreon`` answers 503.
    patreon_webhook_secret: SecretStr | None = None
    #: Bearer token for ``POST /grants`` and the link/admin calls; none means they answer 503.
    grants_api_token: SecretStr | None = None
    #: Token an operator types to log in to ``/console``; none means ``GRANTS_API_TOKEN`` (``console_token``).
    admin_token: SecretStr | None = None
    #: Seconds a console login lasts (the session cookie's Max-Age and the session's life in Redis).
    console_session_s: float = Field(DEFAULT_CONSOLE_SESSION_S, gt=0, le=MAX_CONSOLE_SESSION_S, allow_inf_nan=False)
    #: Bearer token ``GET /metrics`` requires (Prometheus' ``authorization``); none leaves it open.
    metrics_token: SecretStr | None = None
    #: Serve the interactive docs (``/docs``, ``/redoc``) and ``/openapi.json``; off, they answer 404.
    api_docs: bool = False
    #: Twitch app credentials (used to look up users and manage subscriptions).
    twitch_client_id: str | None = None
    twitch_client_secret: SecretStr | None = None
    #: Twitch Helix API base (``wetbot-rewards twitch subscribe``), without a trailing slash.
    twitch_api_url: str = "https://api.twitch.tv/helix"
    #: Twitch OAuth base: ``/device``, ``/token``, ``/validate`` and ``/revoke`` live under it. The older
    #: form, the token endpoint itself (``.../oauth2/token``), is read as its base.
    twitch_auth_url: str = DEFAULT_TWITCH_AUTH_URL
    #: EventSub WebSocket URL (``TWITCH_TRANSPORT=websocket``), ``wss://`` (or ``ws://`` for a local server).
    twitch_eventsub_ws_url: str = "wss://eventsub.wss.twitch.tv/ws"
    #: How EventSub reaches the service: ``webhook`` (a public HTTPS callback) or ``websocket`` (none needed).
    twitch_transport: Literal["webhook", "websocket"] = "webhook"
    #: The address the service is reached at from a browser (``https://bot.example.com``), without a trailing
    #: slash; the console's "Connect with Twitch" sends Twitch ``<PUBLIC_URL>/console/twitch/callback`` as the
    #: redirect URI. None: the console shows ``twitch connect`` (the device flow) instead.
    public_url: str | None = None
    #: What the key encrypting the stored Twitch tokens is derived from (``producers.twitch.tokens``), at
    #: least 32 characters; none means ``twitch connect`` refuses to store tokens.
    token_encryption_key: SecretStr | None = None
    #: The rules file (TOML), relative to the working directory.
    rewards_file: Path = Path("config/rewards.toml")
    #: What to do with a request that may or may not have been applied:
    #: ``verify`` reads the profile back (one rate slot) and decides applied /
    #: not applied, else ``unknown`` (see ``worker.verify``); ``hold`` parks it
    #: as ``unknown`` for an operator (risking a missing one); ``retry`` sends it
    #: again (risking a double grant, counted as a possible duplicate).
    ambiguous_policy: Literal["verify", "hold", "retry"] = "verify"
    #: Seconds a ``delivered`` or ``cancelled`` grant is kept after it got there (``worker.retention``).
    ledger_retention_s: float = Field(DEFAULT_LEDGER_RETENTION_DAYS * SECONDS_PER_DAY, allow_inf_nan=False)
    #: Seconds a verified webhook delivery is kept in the event inbox (``producers.inbox``).
    event_retention_s: float = Field(DEFAULT_EVENT_RETENTION_DAYS * SECONDS_PER_DAY, allow_inf_nan=False)
    #: Sentry DSN; none turns error reporting off.
    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``text`` (one line per record) or ``json`` (one JSON object per line), for every process.
    log_format: Literal["text", "json"] = "text"

    # -- validators: every message must leave the value out -------------------------

    @model_validator(mode="before")
    @classmethod
    def _demo_prefix(cls, data: Any) -> Any:
        """In demo mode an unset ``REDIS_KEY_PREFIX`` is ``wbr-demo``, so demo grants stay apart from real ones."""
        if isinstance(data, dict) and data.get("redis_key_prefix") is None and _truthy(data.get("demo_mode")):
            return {**data, "redis_key_prefix": DEMO_KEY_PREFIX}
        return data

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(_REDIS_SCHEMES) or _HAS_SPACE_OR_CONTROL.search(value):
            raise ValueError("must be a URL starting with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _check_sentinels(cls, value: Any, info: ValidationInfo) -> tuple[tuple[str, int], ...]:
        """The master's address comes from the sentinels, so ``REDIS_URL`` must be a TCP URL (not ``unix://``)."""
        sentinels = _parse_sentinels(value)
        url = info.data.get("redis_url")  # absent when REDIS_URL itself was invalid (reported on its own)
        if sentinels and isinstance(url, str) and not url.startswith(("redis://", "rediss://")):
            raise ValueError("needs REDIS_URL to start with redis:// or rediss:// (it gives db, password and TLS)")
        return sentinels

    @field_validator("redis_sentinel_master")
    @classmethod
    def _check_sentinel_master(cls, value: str) -> str:
        if not value or _HAS_SPACE_OR_CONTROL.search(value):
            raise ValueError("must be the master's name as the sentinels know it, without spaces")
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _check_key_prefix(cls, value: str) -> str:
        if not _KEY_PREFIX_RE.fullmatch(value):
            raise ValueError("must be 1-32 characters from A-Z a-z 0-9 _ . -")
        return value

    @field_validator("wetbot_api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        return _http_base_url(value, "must be an http:// or https:// URL such as https://www.wetbot.space/api")

    @field_validator("twitch_api_url")
    @classmethod
    def _check_twitch_urls(cls, value: str) -> str:
        return _http_base_url(value, "must be an http:// or https:// URL (Twitch's own by default)")

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _http_base_url(value.strip(), "must be an http:// or https:// URL such as https://bot.example.com")

    @field_validator("twitch_auth_url")
    @classmethod
    def _check_twitch_auth_url(cls, value: str) -> str:
        """The OAuth base; a value naming the token endpoint (the variable's older meaning) is cut to its base."""
        base = _http_base_url(value, "must be an http:// or https:// URL such as https://id.twitch.tv/oauth2")
        return base.removesuffix(_OLD_AUTH_URL_SUFFIX) if urlsplit(base).path.endswith(_OLD_AUTH_URL_SUFFIX) else base

    @field_validator("twitch_eventsub_ws_url")
    @classmethod
    def _check_eventsub_ws_url(cls, value: str) -> str:
        problem = "must be a ws:// or wss:// URL such as wss://eventsub.wss.twitch.tv/ws"
        if _HAS_SPACE_OR_CONTROL.search(value):
            raise ValueError(problem)
        try:
            parts = urlsplit(value)
            hostname = parts.hostname
        except ValueError:
            raise ValueError(problem) from None
        if parts.scheme not in ("ws", "wss") or not hostname or parts.fragment:
            raise ValueError(problem)
        return value

    @field_validator("token_encryption_key")
    @classmethod
    def _check_token_encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < TOKEN_ENCRYPTION_KEY_MIN_LEN:
            raise ValueError(
                f"must be at least {TOKEN_ENCRYPTION_KEY_MIN_LEN} characters (e.g. openssl rand -base64 32)"
            )
        return value

    @field_validator("wetbot_api_key", "grants_api_token", "admin_token", "metrics_token")
    @classmethod
    def _check_header_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """These travel in HTTP headers, where whitespace or control characters break (or forge) the header."""
        if value is not None and _HAS_SPACE_OR_CONTROL.search(value.get_secret_value()):
            raise ValueError("must not contain spaces or control characters")
        return value

    @field_validator("grants_api_token", "admin_token")
    @classmethod
    def _check_grants_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < GRANTS_TOKEN_MIN_LEN:
            raise ValueError(f"must be at least {GRANTS_TOKEN_MIN_LEN} characters")
        return value

    @field_validator("twitch_webhook_secret")
    @classmethod
    def _check_twitch_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        secret = value.get_secret_value()
        if not (secret.isascii() and TWITCH_SECRET_MIN_LEN <= len(secret) <= TWITCH_SECRET_MAX_LEN):
            raise ValueError(
                f"must be {TWITCH_SECRET_MIN_LEN}-{TWITCH_SECRET_MAX_LEN} ASCII characters (Twitch's rule)"
            )
        return value

    @field_validator("ledger_retention_s")
    @classmethod
    def _check_retention(cls, value: float) -> float:
        """Shorter than an idempotency claim would let a repeated event find its claim but no grant."""
        low, high = MIN_LEDGER_RETENTION_DAYS * SECONDS_PER_DAY, MAX_LEDGER_RETENTION_DAYS * SECONDS_PER_DAY
        if not low <= value <= high:
            raise ValueError(
                f"must be {low}-{high} seconds ({MIN_LEDGER_RETENTION_DAYS}-{MAX_LEDGER_RETENTION_DAYS} days,"
                " longer than the 40-day idempotency claims)"
            )
        return value

    @field_validator("event_retention_s")
    @classmethod
    def _check_event_retention(cls, value: float) -> float:
        high = MAX_EVENT_RETENTION_DAYS * SECONDS_PER_DAY
        if not SECONDS_PER_DAY <= value <= high:
            raise ValueError(f"must be {SECONDS_PER_DAY}-{high} seconds (1-{MAX_EVENT_RETENTION_DAYS} days)")
        return value

    @field_validator("sentry_dsn")
    @classmethod
    def _check_sentry_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        problem = "must be a Sentry DSN such as https://<key>@<host>/<project>"
        dsn = value.get_secret_value()
        if _HAS_SPACE_OR_CONTROL.search(dsn):
            raise ValueError(problem)
        try:
            parts = urlsplit(dsn)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and bool(parts.username)
        except ValueError:
            ok = False
        if not ok or not parts.path.strip("/"):
            raise ValueError(problem)
        return value

    @field_validator("sentry_environment")
    @classmethod
    def _check_sentry_environment(cls, value: str | None) -> str | None:
        """Sentry drops events whose environment has spaces, "/" or newlines, or is over 64 characters."""
        if value is not None and (
            len(value) > SENTRY_ENVIRONMENT_MAX_LEN or "/" in value or _HAS_SPACE_OR_CONTROL.search(value)
        ):
            raise ValueError(f"must be at most {SENTRY_ENVIRONMENT_MAX_LEN} characters without spaces or '/'")
        return value

    @field_validator("ambiguous_policy", "log_format", "twitch_transport", mode="before")
    @classmethod
    def _lower_policy(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    # -- derived ------------------------------------------------------------------

    @property
    def wait_replicas(self) -> int:
        """Replicas a write must reach before the service relies on it (``REDIS_WAIT_REPLICAS`` resolved)."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_sentinels else 0

    @property
    def console_token(self) -> SecretStr | None:
        """The token the operator console accepts: ``ADMIN_TOKEN``, else ``GRANTS_API_TOKEN``, else None (off)."""
        return self.admin_token if self.admin_token is not None else self.grants_api_token

    def keyring(self, default_guild: str | None) -> Keyring:
        """Every configured key by guild; ``WETBOT_API_KEY`` is bound to ``default_guild`` (the rewards file's).

        Raises:
          ConfigError: the two settings give the default guild different keys.
        """
        return Keyring.build(self.wetbot_api_key, self.wetbot_api_keys, default_guild)

    def secrets(self) -> list[str]:
        """Every secret value that is set, for scrubbing logs and Sentry events.

        Covers the API keys, both webhook secrets, the grants, admin and metrics tokens, the Twitch
        client secret, the token encryption key, the Sentry DSN, the sentinels' password and a password
        embedded in ``REDIS_URL``.
        """
        values = [
            secret.get_secret_value()
            for secret in (
                self.wetbot_api_key,
                self.twitch_webhook_secret,
                self.patreon_webhook_secret,
                self.grants_api_token,
                self.admin_token,
                self.metrics_token,
                self.twitch_client_secret,
                self.token_encryption_key,
                self.sentry_dsn,
                self.redis_sentinel_password,
            )
            if secret is not None
        ]
        values.extend(key.get_secret_value() for key in self.wetbot_api_keys.values())
        values.extend(_redis_passwords(self.redis_url))
        return [value for value in values if value]


def _truthy(value: Any) -> bool:
    """What pydantic reads as True for a bool field (anything else, an invalid value included, is False here)."""
    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        return False


def _redis_passwords(url: str) -> list[str]:
    """Passwords in a Redis URL: ``redis://user:pw@host`` or ``unix:///sock?password=pw``."""
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    found.extend(parse_qs(parts.query).get("password", []))
    return found


def env_names() -> tuple[str, ...]:
    """Every environment variable ``Settings`` reads (its field names in upper case), in field order."""
    return tuple(name.upper() for name in Settings.model_fields)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, ``.env`` and ``overrides`` (field names, highest priority).

    ``_env_file=None`` among the overrides skips the ``.env`` file (tests use it).

    Raises:
      ConfigError: one line, ``VARIABLE: what is wrong``, naming each bad
        variable in order, joined with "; ". The value is never included, and
        the pydantic error (whose text does include it) is not chained.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors(include_input=False, include_url=False):
            name = str(error["loc"][0]).upper() if error["loc"] else "SETTINGS"
            problems.setdefault(name, _describe(error))
        message = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        error_out = ConfigError(message, variables=tuple(problems))
    except SettingsError as exc:
        # Raised by a settings source before validation; its text names the field, not the value.
        match = re.search(r'field "([^"]+)"', str(exc))
        name = match[1].upper() if match else "SETTINGS"
        error_out = ConfigError(f"{name}: cannot be read", variables=(name,) if match else ())
    except OSError as exc:
        error_out = ConfigError(f".env: cannot be read ({exc.strerror or type(exc).__name__})")
    raise error_out from None


def settings_or_exit(**overrides: Any) -> Settings:
    """``load_settings()`` for process entry points: on a bad value, print one line and exit with status 2.

    The line is ``wetbot-rewards: configuration error: <what load_settings said>``
    on stderr, so a supervisor log shows exactly what to fix.
    """
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        report_config_error(exc)
        raise SystemExit(2) from None


def _describe(error: Any) -> str:
    """Turn one pydantic error into a short phrase built only from the rule, never from the input.

    Our own validators raise ``ValueError`` with value-free messages; for the
    built-in checks the text is rebuilt from the constraint in ``ctx``, because
    pydantic's own messages may quote the input.
    """
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", "is not valid"))
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}"
    messages = {
        "missing": "is required",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "int_type": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "finite_number": "must be a finite number",
        "string_type": "must be text",
        "bool_parsing": "must be true or false (or 1 or 0)",
        "bool_type": "must be true or false (or 1 or 0)",
        "greater_than": f"must be greater than {_number(ctx.get('gt'))}",
        "greater_than_equal": f"must be at least {_number(ctx.get('ge'))}",
        "less_than": f"must be less than {_number(ctx.get('lt'))}",
        "less_than_equal": f"must be at most {_number(ctx.get('le'))}",
    }
    return messages.get(kind, "is not valid")


def _number(value: Any) -> str:
    """``0.0`` → ``0``, ``1.5`` → ``1.5``: bounds read as written in the docs."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
