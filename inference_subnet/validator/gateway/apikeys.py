"""Gateway API keys: created, listed, revoked, verified; only a hash of each secret is ever stored.

A key reads ``isn_`` + 43 URL-safe characters (256 random bits). Such a secret needs no slow password hash:
sha256 cannot be brute-forced at that entropy, and a fast hash keeps verification off the latency budget.
The first 12 characters are stored as a display prefix and an index, so verification reads one row instead
of hashing against every key; the hash comparison is constant-time.

Verified keys may be cached in-process for ``cache_seconds``: a revocation made elsewhere (the CLI) takes
effect within that window. With the cache on, the store also keeps the set of live key prefixes, so a
request with a made-up key is refused without a database query (the set is re-read on a miss at most once a
second, which is also the longest a brand-new key can wait). Zero disables both.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update

from inference_subnet.store.sql import ApiKey, Database, utcnow

KEY_PREFIX = "isn_"
DISPLAY_CHARS = 12
MAX_KEY_LENGTH = 128
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """Everything about a key except its secret."""

    id: int
    name: str
    prefix: str
    rate_per_minute: int
    max_concurrent: int
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyInfo:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            rate_per_minute=row.rate_per_minute,
            max_concurrent=row.max_concurrent,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(value: str) -> bool:
    """Cheap shape check, so garbage never reaches the database."""
    return value.startswith(KEY_PREFIX) and DISPLAY_CHARS < len(value) <= MAX_KEY_LENGTH and value.isascii()


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a key, or ``None``. Names are shown in terminals and on pages, so control
    and format characters (escape sequences, bidi overrides) are refused wherever a key is made."""
    if not name or len(name) > 128:
        return "name must be 1 to 128 characters"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        return "name contains control characters"
    return None


class ApiKeyStore:
    """API keys in the SQL store."""

    def __init__(
        self,
        db: Database,
        *,
        cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._db = db
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKeyInfo]] = {}
        self._prefixes: frozenset[str] = frozenset()
        self._prefixes_read_at = -math.inf

    async def create(self, name: str, *, rate_per_minute: int, max_concurrent: int) -> tuple[ApiKeyInfo, str]:
        """A new key and its plain secret, which is returned this once and never stored."""
        name = name.strip()
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        if max_concurrent <= 0:
            raise ValueError("max_concurrent must be positive")
        plain = generate_key()
        row = ApiKey(
            name=name,
            prefix=plain[:DISPLAY_CHARS],
            secret_hash=hash_key(plain),
            rate_per_minute=rate_per_minute,
            max_concurrent=max_concurrent,
            created_at=utcnow(),
        )
        async with self._db.sessions.begin() as session:
            session.add(row)
        self._prefixes = self._prefixes | {row.prefix}
        return ApiKeyInfo.from_row(row), plain

    async def list_keys(self, *, include_revoked: bool = True) -> list[ApiKeyInfo]:
        query = select(ApiKey).order_by(ApiKey.id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        async with self._db.sessions() as session:
            return [ApiKeyInfo.from_row(row) for row in (await session.scalars(query)).all()]

    async def get(self, key_id: int) -> ApiKeyInfo | None:
        async with self._db.sessions() as session:
            row = await session.get(ApiKey, key_id)
            return ApiKeyInfo.from_row(row) if row else None

    async def revoke(self, key_id: int) -> ApiKeyInfo | None:
        """Revoke a key (idempotent: the first revocation time is kept). ``None`` if no such key."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = await session.get(ApiKey, key_id)
            info = ApiKeyInfo.from_row(row) if row else None
        self._cache = {h: entry for h, entry in self._cache.items() if entry[1].id != key_id}
        return info

    async def verify(self, presented: str) -> ApiKeyInfo | None:
        """The live key matching ``presented``, or ``None`` (unknown, malformed or revoked)."""
        if not looks_like_key(presented):
            return None
        digest = hash_key(presented)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        prefix = presented[:DISPLAY_CHARS]
        if not await self._may_exist(prefix, now):
            return None
        async with self._db.sessions() as session:
            rows = (await session.scalars(select(ApiKey).where(ApiKey.prefix == prefix))).all()
        match = next((row for row in rows if hmac.compare_digest(row.secret_hash, digest)), None)
        if match is None or match.revoked_at is not None:
            self._cache.pop(digest, None)
            return None
        info = ApiKeyInfo.from_row(match)
        if self._cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (now + self._cache_seconds, info)
        return info

    async def _may_exist(self, prefix: str, now: float) -> bool:
        """Whether a live key has this prefix, from the in-memory set (re-read on a miss, at most once a
        second). Always true when caching is off: then every lookup asks the database."""
        if self._cache_seconds <= 0 or prefix in self._prefixes:
            return True
        if now - self._prefixes_read_at < min(1.0, self._cache_seconds):
            return False
        async with self._db.sessions() as session:
            live = await session.scalars(select(ApiKey.prefix).where(ApiKey.revoked_at.is_(None)))
            self._prefixes = frozenset(live.all())
        self._prefixes_read_at = now
        return prefix in self._prefixes
