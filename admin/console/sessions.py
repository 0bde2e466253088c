"""Console sessions: a random cookie value, and in Redis only its sha256 with the CSRF token and expiry.

Whoever reads Redis (a backup, ``MONITOR``, a replica) learns no usable cookie: the key is
the digest, and the digest cannot be turned back into a cookie. A session ends at its
expiry twice over: the HASH's TTL deletes it, and ``get`` refuses an entry whose
``expires_ms`` has passed (so a TTL lost to a restored backup or a ``PERSIST`` does not
make a login last for ever). Logging out deletes the entry, so a copied cookie is refused
from then on.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass

from redis import Redis

from worker import redis_values as values
from worker.keys import Keys

__all__ = ["Flash", "Session", "SessionStore", "fingerprint"]

#: Length of the actor fingerprint (hex digits of the session digest) shown in the audit log.
FINGERPRINT_HEX = 8


@dataclass(frozen=True)
class Flash:
    """A one-time message shown on the next page the session opens (post/redirect/get)."""

    text: str
    #: ``ok`` or ``error`` (the page colours it).
    kind: str = "ok"


@dataclass(frozen=True)
class Session:
    """A live console session (never holds the cookie value)."""

    #: sha256 of the cookie value, hex.
    digest: str
    #: the token every form of this session must carry (``csrf`` field).
    csrf: str
    expires_at: float

    @property
    def fingerprint(self) -> str:
        """8 hex digits naming the session in the audit log and on pages."""
        return self.digest[:FINGERPRINT_HEX]

    @property
    def actor(self) -> str:
        """The audit log's actor string for this session: ``console:<fingerprint>``."""
        return f"console:{self.fingerprint}"


def fingerprint(cookie_value: str) -> str:
    """The fingerprint ``Session.fingerprint`` would show for ``cookie_value``."""
    return _digest(cookie_value)[:FINGERPRINT_HEX]


class SessionStore:
    """Creates, finds and ends sessions that last ``lasts_s`` seconds (at least one)."""

    def __init__(self, redis: Redis, keys: Keys, lasts_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self.max_age_s = max(1, math.ceil(lasts_s))

    def create(self) -> tuple[str, Session]:
        """A new session: the cookie value to hand to the browser (and nowhere else), and the session."""
        cookie_value = secrets.token_urlsafe(32)
        now_ms = int(time.time() * 1000)
        expires_ms = now_ms + self.max_age_s * 1000
        session = Session(_digest(cookie_value), secrets.token_urlsafe(32), expires_ms / 1000)
        key = self._keys.console_session(session.digest)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"csrf": session.csrf, "created_ms": now_ms, "expires_ms": expires_ms})
            pipe.expire(key, self.max_age_s)
            pipe.execute()
        return cookie_value, session

    def get(self, cookie_value: str | None) -> Session | None:
        """The live session of ``cookie_value``; None when there is none, it was ended, or it has expired."""
        if not cookie_value or len(cookie_value) > 200:
            return None
        digest = _digest(cookie_value)
        raw = values.raw_map(self._redis.hgetall(self._keys.console_session(digest)))
        csrf = raw.get(b"csrf", b"").decode()
        expires = raw.get(b"expires_ms", b"")
        if not csrf or not expires.isdigit():
            return None
        if int(expires) <= time.time() * 1000:
            self._redis.delete(self._keys.console_session(digest))
            return None
        return Session(digest, csrf, int(expires) / 1000)

    def end(self, session: Session) -> None:
        """Log out: the session's entry is deleted, so its cookie is refused from now on."""
        self._redis.delete(self._keys.console_session(session.digest))

    def set_flash(self, session: Session, flash: Flash) -> None:
        """Keep ``flash`` for the session's next page (replacing one not shown yet)."""
        self.set_flash_for(session.digest, flash)

    def alive(self, digest: str) -> bool:
        """Whether the session with this digest is still live (not ended, not expired)."""
        raw = self._redis.hget(self._keys.console_session(digest), "expires_ms")
        expires = values.text(raw) if raw is not None else ""
        return expires.isdigit() and int(expires) > time.time() * 1000

    def set_flash_for(self, digest: str, flash: Flash) -> None:
        """``set_flash`` for the session named by its digest (a request that came without its cookie)."""
        key = self._keys.console_session(digest)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.hset(key, mapping={"flash": flash.text[:1000], "flash_kind": flash.kind})
            exists, _ = pipe.execute()
        if not exists:  # the session ended meanwhile: do not leave a TTL-less stub behind
            self._redis.delete(key)

    def pop_flash(self, session: Session) -> Flash | None:
        """The message kept for this page, removed so a reload does not show it again."""
        key = self._keys.console_session(session.digest)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(key, ["flash", "flash_kind"])
            pipe.hdel(key, "flash", "flash_kind")
            (text, kind), _ = pipe.execute()
        if not text:
            return None
        return Flash(text.decode("utf-8", "replace"), (kind or b"ok").decode())


def _digest(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode("utf-8", "surrogateescape")).hexdigest()
