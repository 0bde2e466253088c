"""The broadcaster's Twitch tokens, kept in Redis, encrypted, refreshed by one process at a time.

``twitch connect`` (or the console's "Connect with Twitch") stores the pair once (``TokenVault.connect``);
every process then reads it (``TokenVault.load``), refreshes it after a 401 (``TokenVault.refresh``) and
validates it at start and every hour as Twitch requires (``TokenVault.validate`` / ``validate_if_due``;
docs/sources-sync.md §4).

Encryption. The tokens are sealed with Fernet (``cryptography``: AES-128-CBC with an HMAC-SHA256, so a wrong
key or a changed byte is detected, never decrypted to garbage). Its key is derived from
``TOKEN_ENCRYPTION_KEY`` with HKDF-SHA256, not PBKDF2: the setting must be at least 32 characters of
secret (``config.settings``), so it is key material already, and what it needs is turning into exactly
the 32 bytes Fernet takes, bound to this one use (HKDF's ``info``). A slow password hash would only add
start-up time to every process without making a high-entropy key any harder to guess. Without the key
nothing is stored or read (``NoEncryptionKey``); with another key the tokens cannot be read, which is a
state of its own (``undecryptable``) with a message saying what to do, and never a traceback.

Refresh. A public app's refresh token rotates on use (docs/sources-sync.md §4): two processes refreshing
with the same one would leave one of them, or both, with a dead pair. So a refresh runs under a Redis lock
(``SET NX PX`` with a random token, released by compare-and-delete, ``lua/release_lock.lua``); whoever
waits for it finds the new pair written (the tokens' ``version`` moved past the one it had) and uses
it instead of refreshing again. The new pair is written in one step over the version it replaces
(``lua/store_tokens.lua``), so no reader ever sees a new access token beside an old refresh token.

State. Beside the sealed tokens, a hash others read without the key (``TokenVault.state``): connected,
refresh_failed (Twitch could not be reached; the next use tries again), revoked (Twitch refused the
refresh token: connect again), undecryptable, or not_connected; since when and why, the broadcaster's id
and login, the scopes and the last validation. Tokens never appear in it, in a log line or in an exception.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr
from redis import Redis

from config.errors import ConfigError
from config.settings import TOKEN_ENCRYPTION_KEY_MIN_LEN, Settings
from producers.twitch.oauth import (
    InvalidAccessToken,
    InvalidRefreshToken,
    OAuthClient,
    OAuthRefused,
    OAuthUnavailable,
    TokenInfo,
    TokenPair,
    TwitchAuthError,
)
from worker import redis_values as values
from worker.keys import Keys
from worker.replication import NO_ACKS, NotReplicated, ReplicaAcks, run_confirmed
from worker.scripts import load_script

__all__ = [
    "LOCK_TTL_S",
    "VALIDATE_EVERY_S",
    "AuthState",
    "Disconnected",
    "NoEncryptionKey",
    "NotConnected",
    "RefreshBusy",
    "StoredTokens",
    "TokenVault",
    "TokenVaultError",
    "TokensUndecryptable",
    "VaultState",
    "WrongClient",
    "derive_fernet_key",
    "read_vault_state",
]

logger = logging.getLogger("wetbot_rewards.twitch.tokens")

#: Seconds between two validations of the access token (Twitch asks for one at start and every hour).
VALIDATE_EVERY_S = 3600.0
#: Seconds a refresh may hold the lock: three times an OAuth call's timeout, so only a stuck holder loses it.
LOCK_TTL_S = 30.0
#: Seconds a refresher waits for another's refresh before giving up (a little more than the lock lives).
LOCK_WAIT_S = LOCK_TTL_S + 5.0
#: Seconds between two looks at the lock and the tokens' version while waiting.
LOCK_POLL_S = 0.05
#: HKDF's salt and info: fixed, public, and naming this use, so the same setting used elsewhere (it should
#: not be) would still give another key.
_HKDF_SALT = b"wetbot-rewards"
_HKDF_INFO = b"twitch-tokens/fernet/v1"
#: Version of the sealed record's layout.
_RECORD_VERSION = 1
_UNDECRYPTABLE = "cannot decrypt the stored Twitch tokens: TOKEN_ENCRYPTION_KEY changed? Set the key they were "
_UNDECRYPTABLE += "stored with, or run wetbot-rewards twitch connect again"


class AuthState(StrEnum):
    """Where the broadcaster's authorisation stands."""

    CONNECTED = "connected"
    #: The last refresh did not get through (Twitch unreachable or answering 5xx); the next use tries again.
    REFRESH_FAILED = "refresh_failed"
    #: Twitch refused the refresh token (or the access token, and then its refresh): connect again.
    REVOKED = "revoked"
    NOT_CONNECTED = "not_connected"
    #: The stored tokens cannot be decrypted with this process' ``TOKEN_ENCRYPTION_KEY``.
    UNDECRYPTABLE = "undecryptable"


# -- errors ---------------------------------------------------------------------------------------------


def read_vault_state(redis: Redis, keys: Keys) -> VaultState:
    """The connection's state as any process may read it (no key, no OAuth client): ``not_connected`` when no
    tokens are stored. ``/readyz`` and ``/metrics`` read it this way."""
    if not redis.hexists(keys.twitch_tokens(), "sealed"):
        return VaultState(AuthState.NOT_CONNECTED, reason="run wetbot-rewards twitch connect")
    return VaultState.from_fields(values.text_map(redis.hgetall(keys.twitch_auth_state())))


class TokenVaultError(TwitchAuthError):
    """Base of the vault's own errors (Twitch's refusals are ``producers.twitch.oauth``'s)."""


class NoEncryptionKey(TokenVaultError):
    """Raised when ``TOKEN_ENCRYPTION_KEY`` is unset (or too short): tokens are neither stored nor read."""


class NotConnected(TokenVaultError):
    """Raised when no tokens are stored: ``wetbot-rewards twitch connect`` has not run (or was undone)."""


class TokensUndecryptable(TokenVaultError):
    """Raised when the stored tokens cannot be decrypted: another key, or a damaged record."""


class WrongClient(TokenVaultError):
    """Raised when Twitch issued a token for another client id than this app's: nothing is stored."""


class RefreshBusy(TokenVaultError):
    """Raised when another process held the refresh lock for longer than a refresh may take."""


# -- values ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTokens:
    """The broadcaster's tokens as stored; ``version`` grows by one with every pair written."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...]
    user_id: str
    login: str
    #: Epoch seconds when the access token expires (as Twitch said; it may die earlier, e.g. revoked).
    expires_at: float
    client_id: str
    version: int


@dataclass(frozen=True)
class Disconnected:
    """What ``TokenVault.disconnect`` removed."""

    login: str
    user_id: str
    #: Twitch revoked the tokens (False: they could not be read, so only this service forgot them).
    revoked: bool


@dataclass(frozen=True)
class VaultState:
    """The connection's state as everyone may read it (no key needed, no token in it)."""

    state: AuthState
    #: Epoch seconds since which it is in ``state`` (0: unknown).
    since: float = 0.0
    #: Why, in one line (empty when connected and nothing went wrong).
    reason: str = ""
    user_id: str = ""
    login: str = ""
    scopes: tuple[str, ...] = ()
    expires_at: float = 0.0
    #: Epoch seconds of the last validation, and what it said (``ok`` or why not); 0 / "" before the first.
    validated_at: float = 0.0
    validation: str = ""
    refreshed_at: float = 0.0

    def fields(self) -> dict[str, str]:
        """The state as the Redis hash holds it (every value text)."""
        return {
            "state": self.state.value,
            "since": repr(self.since),
            "reason": self.reason,
            "user_id": self.user_id,
            "login": self.login,
            "scopes": " ".join(self.scopes),
            "expires_at": repr(self.expires_at),
            "validated_at": repr(self.validated_at),
            "validation": self.validation,
            "refreshed_at": repr(self.refreshed_at),
        }

    @classmethod
    def from_fields(cls, data: dict[str, str]) -> VaultState:
        """Read back ``fields()``; a missing or bad value reads as its default."""
        try:
            state = AuthState(data.get("state", ""))
        except ValueError:
            state = AuthState.CONNECTED
        return cls(
            state=state,
            since=_number(data.get("since")),
            reason=data.get("reason", ""),
            user_id=data.get("user_id", ""),
            login=data.get("login", ""),
            scopes=tuple(data.get("scopes", "").split()),
            expires_at=_number(data.get("expires_at")),
            validated_at=_number(data.get("validated_at")),
            validation=data.get("validation", ""),
            refreshed_at=_number(data.get("refreshed_at")),
        )


def _number(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


def derive_fernet_key(secret: str) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) HKDF-SHA256 derives from ``TOKEN_ENCRYPTION_KEY``."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8")))


# -- the vault ------------------------------------------------------------------------------------------


class TokenVault:
    """The broadcaster's tokens under ``keys``' prefix.

    Parameters:
      redis: the service's Redis.
      keys: its key layout.
      encryption_key: ``TOKEN_ENCRYPTION_KEY``; none (or too short) makes every read and write raise
        ``NoEncryptionKey``, while ``state()`` still answers.
      oauth: the app's OAuth client (refresh and validate go through it).
      acks: replicas that must confirm a new pair (``worker.replication``): lost in a failover, a rotated
        pair leaves only a dead one behind.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        encryption_key: SecretStr | None,
        oauth: OAuthClient,
        *,
        acks: ReplicaAcks = NO_ACKS,
    ) -> None:
        self._redis = redis
        self._acks = acks
        self._keys = keys
        self._oauth = oauth
        self._fernet: Fernet | None = None
        self._key_problem = "TOKEN_ENCRYPTION_KEY is not set: the Twitch tokens cannot be stored or read"
        if encryption_key is not None:
            secret = encryption_key.get_secret_value()
            if len(secret) >= TOKEN_ENCRYPTION_KEY_MIN_LEN:
                self._fernet = Fernet(derive_fernet_key(secret))
            else:
                self._key_problem = f"TOKEN_ENCRYPTION_KEY must be at least {TOKEN_ENCRYPTION_KEY_MIN_LEN} characters"
        self._store_script = load_script(redis, "store_tokens")
        self._release_script = load_script(redis, "release_lock")
        self._state_script = load_script(redis, "token_state")
        self._forget_script = load_script(redis, "forget_tokens")

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis) -> TokenVault:
        """The vault as every process builds it: ``TOKEN_ENCRYPTION_KEY``, the app's OAuth client from
        ``TWITCH_AUTH_URL`` / ``TWITCH_CLIENT_ID`` / ``TWITCH_CLIENT_SECRET``, the replicas to wait for.

        Raises:
          ConfigError: ``TWITCH_CLIENT_ID`` is unset (the tokens cannot be refreshed without it).
        """
        if settings.twitch_client_id is None:
            raise ConfigError("TWITCH_CLIENT_ID: is required to use the Twitch tokens", variables=("TWITCH_CLIENT_ID",))
        secret = settings.twitch_client_secret
        oauth = OAuthClient(
            auth_url=settings.twitch_auth_url,
            client_id=settings.twitch_client_id,
            client_secret=secret.get_secret_value() if secret is not None else None,
        )
        keys = Keys(settings.redis_key_prefix)
        return cls(redis, keys, settings.token_encryption_key, oauth, acks=ReplicaAcks.from_settings(settings))

    @property
    def key_problem(self) -> str | None:
        """Why this process has no usable ``TOKEN_ENCRYPTION_KEY`` (None: it has one)."""
        return None if self._fernet is not None else self._key_problem

    @property
    def oauth(self) -> OAuthClient:
        """The OAuth client refreshes and validations go through."""
        return self._oauth

    # -- reading ----------------------------------------------------------------------------------------
    def state(self) -> VaultState:
        """The connection's state; ``not_connected`` when no tokens are stored. Needs no key."""
        return read_vault_state(self._redis, self._keys)

    def load(self) -> StoredTokens:
        """The stored tokens, decrypted.

        Raises:
          NoEncryptionKey: this process has no (usable) key.
          NotConnected: nothing is stored.
          TokensUndecryptable: the key is not the one they were stored with (the state says so too).
        """
        self._cipher()
        stored = values.text_map(self._redis.hgetall(self._keys.twitch_tokens()))
        if "sealed" not in stored:
            raise NotConnected("no Twitch channel is connected: run wetbot-rewards twitch connect")
        version = int(stored.get("version") or 0)
        tokens = self._unseal(stored["sealed"], version)
        if tokens is None:
            self._mark(version, AuthState.UNDECRYPTABLE, _UNDECRYPTABLE)
            raise TokensUndecryptable(_UNDECRYPTABLE)
        return tokens

    def key_fits(self) -> bool | None:
        """Whether this process' key decrypts the stored tokens (None: no usable key, or nothing stored).

        Only looks: unlike ``load`` it records nothing, so a page asking it never changes the state
        the other processes see.
        """
        if self._fernet is None:
            return None
        sealed = values.text(self._redis.hget(self._keys.twitch_tokens(), "sealed") or b"")
        return None if not sealed else self._unseal(sealed, 0) is not None

    def _unseal(self, sealed: str, version: int) -> StoredTokens | None:
        """The tokens sealed in ``sealed``; None when this key does not open them (or they are damaged)."""
        try:
            record = json.loads(self._cipher().decrypt(sealed.encode("ascii")))
            return StoredTokens(
                access_token=str(record["access_token"]),
                refresh_token=str(record["refresh_token"]),
                scopes=tuple(str(scope) for scope in record["scopes"]),
                user_id=str(record["user_id"]),
                login=str(record["login"]),
                expires_at=float(record["expires_at"]),
                client_id=str(record["client_id"]),
                version=version,
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None  # the caller's message says it all; the cause would add nothing but noise

    # -- writing ----------------------------------------------------------------------------------------
    def connect(self, pair: TokenPair) -> tuple[StoredTokens, VaultState]:
        """A pair Twitch just issued (device flow or authorization code): validated, checked to be this app's,
        stored. Returns what is stored and the state before (to say whose connection it replaced).

        Raises:
          WrongClient: the token is another client id's; nothing is stored.
          NoEncryptionKey, NotReplicated: as ``store``.
          TwitchAuthError: the validation failed (nothing is stored).
        """
        self._cipher()
        before = self.state()
        info = self._oauth.validate(pair.access_token)
        if info.client_id != self._oauth.client_id:
            raise WrongClient("Twitch issued a token for another client id than TWITCH_CLIENT_ID; nothing stored")
        return self.store(pair, info), before

    def disconnect(self) -> Disconnected | None:
        """Revoke the stored tokens at Twitch and forget them; None when nothing was connected.

        Tokens this key cannot decrypt cannot be revoked (they are useless here anyway): they are forgotten,
        and ``revoked`` says so (remove the app at twitch.tv/settings/connections then).

        Raises:
          NoEncryptionKey: this process has no (usable) key; nothing is changed.
          OAuthUnavailable, OAuthRefused: Twitch did not revoke them; nothing is forgotten (try again).
        """
        self._cipher()
        while True:
            state = self.state()
            if state.state is AuthState.NOT_CONNECTED:
                return None
            try:
                tokens = self.load()
            except NotConnected:
                return None
            except TokensUndecryptable:
                version = self._version() or 0
                if self._forget(version):
                    logger.warning("forgot Twitch tokens this key cannot decrypt: they were not revoked at Twitch")
                    return Disconnected(state.login, state.user_id, revoked=False)
                continue
            self._oauth.revoke(tokens.access_token)
            self._oauth.revoke(tokens.refresh_token)
            if self._forget(tokens.version):
                logger.info(
                    "Twitch disconnected: the tokens of %s (%s) revoked and forgotten", tokens.login, tokens.user_id
                )
                return Disconnected(tokens.login, tokens.user_id, revoked=True)
            # a refresh wrote a new pair meanwhile: revoke and forget that one too

    def _forget(self, version: int) -> bool:
        keys = [self._keys.twitch_tokens(), self._keys.twitch_auth_state()]
        return bool(self._forget_script(keys=keys, args=[str(version)]))

    def store(self, pair: TokenPair, info: TokenInfo) -> StoredTokens:
        """Store a new connection: ``pair`` as issued, for the user ``info`` (its ``/validate``) names.

        Replaces whatever was stored (another broadcaster's too); the state becomes ``connected``.

        Raises:
          NoEncryptionKey: this process has no (usable) key; nothing is stored.
          NotReplicated: stored on the primary, but fewer replicas than asked confirmed it (connect again).
        """
        self._cipher()
        now = time.time()
        while True:
            version = self._version()
            tokens = StoredTokens(
                access_token=pair.access_token,
                refresh_token=pair.refresh_token,
                scopes=pair.scopes or info.scopes,
                user_id=info.user_id,
                login=info.login,
                expires_at=now + (info.expires_in_s or pair.expires_in_s),
                client_id=info.client_id,
                version=(version or 0) + 1,
            )
            state = VaultState(
                AuthState.CONNECTED,
                since=now,
                user_id=info.user_id,
                login=info.login,
                scopes=tokens.scopes,
                expires_at=tokens.expires_at,
                validated_at=now,
                validation="ok",
            )
            if self._write(tokens, version, state):
                logger.info("Twitch connected as %s (%s)", info.login, info.user_id)
                return tokens

    def refresh(self, stale: StoredTokens | None = None) -> StoredTokens:
        """A fresh pair: refreshed here under the lock, or the one another process just refreshed.

        ``stale`` is the pair the caller found not working (a 401); when what is stored is newer, that is
        returned and Twitch is not asked. Without ``stale``, the stored pair is refreshed.

        Raises:
          InvalidRefreshToken: Twitch refused the refresh token; the state is ``revoked``.
          OAuthUnavailable: Twitch could not be reached; the state is ``refresh_failed``, the pair is kept.
          OAuthRefused: Twitch refused otherwise (recorded as ``refresh_failed``).
          RefreshBusy: another process held the lock longer than a refresh may take.
          NoEncryptionKey, NotConnected, TokensUndecryptable: as ``load``.
        """
        seen = stale or self.load()
        lock, token = self._keys.twitch_refresh_lock(), secrets.token_hex(16)
        deadline = time.monotonic() + LOCK_WAIT_S
        while not self._redis.set(lock, token, nx=True, px=int(LOCK_TTL_S * 1000)):
            if (self._version() or 0) != seen.version:
                return self.load()  # someone refreshed while we waited: theirs is the pair to use
            if time.monotonic() >= deadline:
                raise RefreshBusy(f"another process has held the Twitch refresh lock for over {LOCK_WAIT_S:g} s")
            time.sleep(LOCK_POLL_S)
        try:
            current = self.load()
            if current.version != seen.version:
                return current
            return self._refresh_locked(current)
        finally:
            self._release_script(keys=[lock], args=[token])

    def _refresh_locked(self, current: StoredTokens) -> StoredTokens:
        try:
            pair = self._oauth.refresh(current.refresh_token)
        except InvalidRefreshToken as exc:
            self._mark(current.version, AuthState.REVOKED, f"{exc}; run wetbot-rewards twitch connect again")
            logger.warning("Twitch refused the refresh token of %s: connect again", current.login)
            raise
        except (OAuthUnavailable, OAuthRefused) as exc:
            self._mark(current.version, AuthState.REFRESH_FAILED, str(exc))
            logger.warning("refreshing the Twitch tokens of %s failed: %s", current.login, exc)
            raise
        now = time.time()
        tokens = StoredTokens(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            scopes=pair.scopes or current.scopes,
            user_id=current.user_id,
            login=current.login,
            expires_at=now + pair.expires_in_s,
            client_id=current.client_id,
            version=current.version + 1,
        )
        before = self.state()
        state = VaultState(
            AuthState.CONNECTED,
            since=before.since if before.state is AuthState.CONNECTED else now,
            user_id=tokens.user_id,
            login=tokens.login,
            scopes=tokens.scopes,
            expires_at=tokens.expires_at,
            refreshed_at=now,
        )
        try:
            written = self._write(tokens, current.version, state)
        except NotReplicated as exc:
            # On the primary, and Twitch has rotated the old pair: this one is all there is to use.
            logger.warning("the refreshed Twitch tokens are not confirmed by the Redis replicas: %s", exc)
            written = bool(exc.reply)
        if not written:
            return self.load()  # a new connection was stored meanwhile: it wins
        logger.info("Twitch tokens of %s refreshed", tokens.login)
        return tokens

    # -- validation -------------------------------------------------------------------------------------
    def validate(self) -> VaultState:
        """Ask Twitch whether the stored access token is still good, record when and what it said.

        A 401 refreshes the pair once and validates the new one. Processes call this at start and
        ``validate_if_due`` afterwards. Twitch's problems do not raise: they are the state returned.

        Raises:
          NoEncryptionKey: this process has no (usable) key.
        """
        try:
            tokens = self.load()
            found = self._validate_or_refresh(tokens)
        except NoEncryptionKey:
            raise
        except (NotConnected, TokensUndecryptable):
            return self.state()
        except InvalidAccessToken as exc:  # even the refreshed one (marked revoked by _validate_or_refresh)
            return self._record_validation(None, str(exc))
        except TwitchAuthError as exc:  # a refused refresh is marked revoked by refresh() already
            return self._record_validation(None, str(exc))
        return self._record_validation(found, "ok")

    def validate_if_due(self) -> VaultState:
        """``validate()`` when the last validation (by any process) is ``VALIDATE_EVERY_S`` old or more."""
        state = self.state()
        if state.state is AuthState.NOT_CONNECTED or time.time() - state.validated_at < VALIDATE_EVERY_S:
            return state
        return self.validate()

    def _validate_or_refresh(self, tokens: StoredTokens) -> tuple[StoredTokens, TokenInfo]:
        try:
            return tokens, self._oauth.validate(tokens.access_token)
        except InvalidAccessToken:
            fresh = self.refresh(stale=tokens)
        try:
            return fresh, self._oauth.validate(fresh.access_token)
        except InvalidAccessToken as exc:
            self._mark(fresh.version, AuthState.REVOKED, f"{exc}; run wetbot-rewards twitch connect again")
            raise

    def _record_validation(self, found: tuple[StoredTokens, TokenInfo] | None, result: str) -> VaultState:
        now = time.time()
        fields = {"validated_at": repr(now), "validation": result}
        version = self._version() or 0
        if found is not None:
            tokens, info = found
            version = tokens.version
            fields |= {
                "login": info.login,
                "user_id": info.user_id,
                "scopes": " ".join(info.scopes),
                "expires_at": repr(now + info.expires_in_s),
            }
            if self.state().state is not AuthState.CONNECTED:
                fields |= {"state": AuthState.CONNECTED.value, "since": repr(now), "reason": ""}
        else:
            logger.warning("validating the Twitch token failed: %s", result)
        self._update(version, fields)
        return self.state()

    # -- plumbing ---------------------------------------------------------------------------------------
    def _cipher(self) -> Fernet:
        if self._fernet is None:
            raise NoEncryptionKey(self._key_problem)
        return self._fernet

    def _version(self) -> int | None:
        raw = self._redis.hget(self._keys.twitch_tokens(), "version")
        return int(values.text(raw)) if raw is not None else None

    def _seal(self, tokens: StoredTokens) -> str:
        record = {
            "v": _RECORD_VERSION,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "scopes": list(tokens.scopes),
            "user_id": tokens.user_id,
            "login": tokens.login,
            "expires_at": tokens.expires_at,
            "client_id": tokens.client_id,
        }
        return self._cipher().encrypt(json.dumps(record).encode("utf-8")).decode("ascii")

    def _write(self, tokens: StoredTokens, expected: int | None, state: VaultState) -> bool:
        """Write ``tokens`` and ``state`` in one step if the stored version is still ``expected``."""
        written = run_confirmed(
            self._redis,
            self._store_script,
            self._acks,
            keys=[self._keys.twitch_tokens(), self._keys.twitch_auth_state()],
            args=[
                "" if expected is None else str(expected),
                str(tokens.version),
                self._seal(tokens),
                json.dumps(state.fields()),
            ],
        )
        return bool(written)

    def _mark(self, version: int, state: AuthState, reason: str) -> None:
        """Enter ``state`` for the pair of ``version`` (nothing when a newer pair is stored by now)."""
        fields = {"state": state.value, "reason": reason}
        if self.state().state is not state:
            fields["since"] = repr(time.time())
        self._update(version, fields)

    def _update(self, version: int, fields: dict[str, str]) -> None:
        """Set ``fields`` of the state if the tokens are still at ``version`` (``lua/token_state.lua``)."""
        self._state_script(
            keys=[self._keys.twitch_tokens(), self._keys.twitch_auth_state()], args=[str(version), json.dumps(fields)]
        )
