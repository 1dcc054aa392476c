"""The durable store: API keys and the organic request log, in SQLite (default) or Postgres.

One code path for both: SQLAlchemy 2's async engine with ``aiosqlite`` or ``asyncpg`` chosen by the URL.
Redis holds what may be lost (counters, queues); this holds what must not be (who may call, and what was
served). The schema is owned by the Alembic migrations in ``store/migrations``: :func:`upgrade_database`
runs them, and nothing here creates tables behind their back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from inference_subnet.store.engine import create_engine

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# ``none_as_null``: a missing payload is SQL NULL, not the JSON literal ``null``.
JsonPayload = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in and out on every backend (SQLite drops the offset; Postgres keeps it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store only accepts timezone-aware values")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """A gateway API key. Only a hash of the secret is stored; ``prefix`` lets operators recognise a key
    (and lets the gateway find the row without scanning) without storing anything that authenticates."""

    __tablename__ = "isn_api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    rate_per_minute: Mapped[int] = mapped_column(Integer)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True, default=None)


class RequestLog(Base):
    """One organic request and its outcome. ``payload`` only when ``gateway.log_payloads`` is on."""

    __tablename__ = "isn_request_log"
    __table_args__ = (Index("ix_isn_request_log_key_ts", "key_id", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    task: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("isn_api_keys.id"), nullable=True)
    miner_uid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    miner_hotkey: Mapped[str | None] = mapped_column(String(64), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    request_bytes: Mapped[int] = mapped_column(Integer)
    response_bytes: Mapped[int] = mapped_column(Integer)
    payload: Mapped[Any | None] = mapped_column(JsonPayload, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The ``x-request-id`` of the answer."""


class Database:
    """The engine and its session factory: one per process, closed on shutdown."""

    def __init__(self, url: str, **engine_kwargs: Any):
        self.url = url
        self.engine = create_engine(url, **engine_kwargs)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        from inference_subnet.store.migrations import upgrade_engine

        await upgrade_engine(self.engine)

    async def aclose(self) -> None:
        await self.engine.dispose()
