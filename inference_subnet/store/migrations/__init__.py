"""Schema migrations of the durable store (Alembic), runnable from code without an ``alembic.ini``.

The gateway and ``gateway keys ...`` call :func:`upgrade_database` before touching the store, so an operator
never runs a separate migration step; the ``alembic`` CLI still works with ``-x url=...`` for hand work.
On Postgres an advisory lock serialises concurrent upgrades (several gateway replicas starting at once).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from inference_subnet.store.engine import create_engine

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "isn_alembic_version"
_PG_LOCK_ID = 0x15_6A7E  # arbitrary constant: the advisory lock of this schema's migrations

log = logging.getLogger(__name__)
# Every gateway start and key command runs an upgrade, nearly always a no-op: Alembic's own INFO lines
# (seven "setup plugin" lines at its import alone) are noise, so inference_subnet.logs keeps them below
# WARNING unless logging is at DEBUG. What changed is logged below instead.


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at these migrations (no ini file needed)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _run(connection: Connection, revision: str, downgrade: bool) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    before = _current(connection)
    config = alembic_config()
    config.attributes["connection"] = connection
    if downgrade:
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)
    after = _current(connection)
    if after != before:
        log.info("database schema migrated from %s to %s", before or "empty", after or "empty")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_run, revision, False)


async def downgrade_engine(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_run, revision, True)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def upgrade_database(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (the newest by default)."""
    engine = create_engine(url)
    try:
        await upgrade_engine(engine, revision)
    finally:
        await engine.dispose()
