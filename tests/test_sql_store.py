"""The durable store on SQLite (always) and Postgres (when ``DATABASE_URL`` names one): migrations, API
keys, and the batched request-log writer."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, func, inspect, select, text
from test_gateway_helpers import backends, fresh_database, postgres_database, sqlite_url, wait_for

from inference_subnet.store.migrations import (
    VERSION_TABLE,
    current_revision,
    downgrade_engine,
    head_revision,
    upgrade_database,
)
from inference_subnet.store.sql import ApiKey, Base, Database, RequestLog
from inference_subnet.validator.gateway.apikeys import ApiKeyStore, hash_key
from inference_subnet.validator.gateway.requestlog import LogEntry, RequestLogWriter

__all__ = ["postgres_database"]  # a fixture, imported to register it


@pytest.fixture(params=backends())
async def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_database: str | None) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    assert postgres_database is not None
    return postgres_database


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await fresh_database(db_url)
    yield database
    await database.aclose()


def _tables(conn) -> set[str]:  # type: ignore[no-untyped-def]
    return set(inspect(conn).get_table_names())


async def test_migrations_up_down_up_and_models_match(db_url: str) -> None:
    await upgrade_database(db_url)
    await upgrade_database(db_url)  # idempotent: a second gateway start is a no-op
    db = Database(db_url)
    try:
        assert await current_revision(db.engine) == head_revision()
        async with db.engine.connect() as conn:
            assert {"isn_api_keys", "isn_request_log", VERSION_TABLE} <= await conn.run_sync(_tables)
            # The models and the migrations describe the same schema (drift would be a diff here).
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
                )
            )
        assert [d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)] == []

        await downgrade_engine(db.engine, "base")
        async with db.engine.connect() as conn:
            assert not {"isn_api_keys", "isn_request_log"} & await conn.run_sync(_tables)
        assert await current_revision(db.engine) is None
        await db.upgrade()
        assert await current_revision(db.engine) == head_revision()
    finally:
        await db.aclose()


async def test_sqlite_file_and_parent_dir_are_created(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'deep' / 'dir' / 'gw.db'}"
    await upgrade_database(url)
    assert (tmp_path / "deep" / "dir" / "gw.db").is_file()


async def test_key_lifecycle_stores_only_a_hash(db: Database) -> None:
    store = ApiKeyStore(db)
    info, plain = await store.create("app-one", rate_per_minute=30, max_concurrent=2)
    assert plain.startswith("isn_") and len(plain) >= 40
    assert info.prefix == plain[:12] and info.rate_per_minute == 30 and info.max_concurrent == 2
    assert info.created_at.tzinfo is not None and not info.revoked

    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(ApiKey.__table__))).all()
    assert len(rows) == 1
    assert plain not in [str(v) for v in rows[0]]
    assert rows[0].secret_hash == hash_key(plain) != plain

    verified = await store.verify(plain)
    assert verified is not None and verified.id == info.id and verified.name == "app-one"
    assert await store.verify(plain[:-1] + ("A" if plain[-1] != "A" else "B")) is None  # same prefix
    assert await store.verify("isn_" + "x" * 43) is None
    assert await store.verify("not-a-key") is None
    assert await store.verify("") is None

    other, _ = await store.create("app-two", rate_per_minute=60, max_concurrent=8)
    revoked = await store.revoke(info.id)
    assert revoked is not None and revoked.revoked_at is not None
    again = await store.revoke(info.id)
    assert again is not None and again.revoked_at == revoked.revoked_at  # first revocation time kept
    assert await store.revoke(10**9) is None
    assert await store.verify(plain) is None

    assert [k.id for k in await store.list_keys()] == [info.id, other.id]
    assert [k.id for k in await store.list_keys(include_revoked=False)] == [other.id]


async def test_key_validation(db: Database) -> None:
    store = ApiKeyStore(db)
    for kwargs in ({"rate_per_minute": 0, "max_concurrent": 1}, {"rate_per_minute": 1, "max_concurrent": 0}):
        with pytest.raises(ValueError):
            await store.create("x", **kwargs)
    with pytest.raises(ValueError):
        await store.create("   ", rate_per_minute=1, max_concurrent=1)
    # Names reach terminals and the dashboard: escape sequences and bidi overrides never get stored.
    for name in ("app\x1b[2J", "app\u202eevil", "tab\there"):
        with pytest.raises(ValueError, match="control characters"):
            await store.create(name, rate_per_minute=1, max_concurrent=1)
    assert [k.name for k in await store.list_keys()] == []


async def test_verify_cache_bounds_how_long_a_revocation_elsewhere_takes(db: Database) -> None:
    now = [1000.0]
    gateway = ApiKeyStore(db, cache_seconds=5.0, clock=lambda: now[0])
    cli = ApiKeyStore(db)
    info, plain = await cli.create("cached", rate_per_minute=10, max_concurrent=1)
    assert await gateway.verify(plain) is not None
    await cli.revoke(info.id)  # another process: the gateway's cache still holds the key
    now[0] += 4.9
    assert await gateway.verify(plain) is not None
    now[0] += 0.2
    assert await gateway.verify(plain) is None

    info2, plain2 = await cli.create("local", rate_per_minute=10, max_concurrent=1)
    assert await gateway.verify(plain2) is not None
    await gateway.revoke(info2.id)  # revoked through the same store: effective at once
    assert await gateway.verify(plain2) is None


async def test_made_up_keys_cost_no_query_while_the_cache_is_on(db: Database) -> None:
    statements: list[str] = []
    event.listen(
        db.engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: statements.append(statement),
    )
    now = [100.0]
    gateway = ApiKeyStore(db, cache_seconds=5.0, clock=lambda: now[0])
    cli = ApiKeyStore(db)
    _, plain = await cli.create("real", rate_per_minute=10, max_concurrent=1)
    assert await gateway.verify(plain) is not None
    statements.clear()
    for i in range(20):
        assert await gateway.verify(f"isn_madeup{i:04d}-and-some-more-random-text-here") is None
    assert statements == []  # the live prefixes were read by the first verify, less than a second ago
    now[0] += 1.5
    for i in range(20):
        assert await gateway.verify(f"isn_madeup{i:04d}-and-some-more-random-text-here") is None
    assert len(statements) == 1  # one re-read of the live prefixes, then nothing
    now[0] += 0.5
    _, fresh = await cli.create("fresh", rate_per_minute=10, max_concurrent=1)  # created elsewhere
    assert await gateway.verify(fresh) is None  # unknown prefix, set read less than a second ago
    now[0] += 0.6
    assert await gateway.verify(fresh) is not None  # at most a second later it is known
    with_cache_off = ApiKeyStore(db)
    _, other = await cli.create("other", rate_per_minute=10, max_concurrent=1)
    assert await with_cache_off.verify(other) is not None


async def test_request_log_writes_batches_and_flushes_on_close(db: Database) -> None:
    key, _ = await ApiKeyStore(db).create("logger", rate_per_minute=10, max_concurrent=1)
    writer = RequestLogWriter(db, batch_size=100, flush_interval=0.05)
    writer.start()
    for i in range(1234):
        assert writer.record(
            LogEntry(
                task="arithmetic",
                key_id=key.id,
                status=200,
                latency_ms=1.5,
                request_bytes=30 + i,
                response_bytes=12,
                miner_uid=i % 7,
                miner_hotkey=f"hk{i % 7}",
                attempts=1,
                payload={"op": "add", "a": i, "b": 1} if i % 2 else None,
            )
        )
    await writer.aclose()
    assert writer.stats.written == 1234 and writer.stats.dropped == 0
    assert not writer.record(LogEntry("arithmetic", key.id, 200, 1.0, 1, 1))  # closed: refused, counted
    assert writer.stats.dropped == 1

    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(RequestLog)) == 1234
        assert await session.scalar(select(func.count()).where(RequestLog.payload.is_(None))) == 617
        row = (await session.scalars(select(RequestLog).where(RequestLog.request_bytes == 31))).one()
    assert row.payload == {"op": "add", "a": 1, "b": 1}
    assert row.key_id == key.id and row.miner_uid == 1 and row.miner_hotkey == "hk1"
    assert row.ts.tzinfo is not None and abs(row.ts - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


async def test_request_log_writes_a_full_batch_before_its_flush_interval(db: Database) -> None:
    """The writer sleeps between batches, and a full batch wakes it: with an hour-long flush interval the
    first ``batch_size`` entries are written at once, the rest only when the writer closes."""
    writer = RequestLogWriter(db, batch_size=5, flush_interval=3600.0)
    writer.start()
    writer.record(LogEntry("arithmetic", None, 200, 1.0, 0, 1))
    await asyncio.sleep(0)  # the writer takes the first entry and sleeps, waiting for more
    for i in range(1, 5):
        writer.record(LogEntry("arithmetic", None, 200, 1.0, i, 1))
    await wait_for(lambda: writer.stats.written == 5)
    for i in range(5, 7):
        writer.record(LogEntry("arithmetic", None, 200, 1.0, i, 1))
    await writer.aclose()
    assert writer.stats.written == 7
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(RequestLog)) == 7


async def test_request_log_queue_is_bounded_and_unstarted_writer_still_flushes(db: Database) -> None:
    writer = RequestLogWriter(db, max_queue=10)
    accepted = [writer.record(LogEntry("arithmetic", None, 503, 2.0, 10, 40)) for _ in range(15)]
    assert accepted == [True] * 10 + [False] * 5
    await writer.aclose()
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(RequestLog)) == 10


async def test_request_log_retries_until_the_database_is_back(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    db = Database(url)  # not migrated yet: inserts fail
    writer = RequestLogWriter(db, flush_interval=0.01, retry_delay=0.02)
    writer.start()
    for _ in range(5):
        writer.record(LogEntry("arithmetic", None, 200, 1.0, 1, 1))
    await wait_for(lambda: writer.stats.failed_batches >= 2)
    await db.upgrade()
    await writer.aclose()
    assert writer.stats.written == 5
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM isn_request_log"))).scalar() == 5
    await db.aclose()
