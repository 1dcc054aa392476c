"""Alembic environment: runs on a connection handed over by :func:`upgrade_database`, or, from the
``alembic`` CLI, on an engine built from ``sqlalchemy.url`` / ``-x url=...``."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from inference_subnet.store.engine import create_engine
from inference_subnet.store.migrations import VERSION_TABLE
from inference_subnet.store.sql import Base

target_metadata = Base.metadata
config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table instead
        compare_type=True,
        **kwargs,
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    return url


def _migrate(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _migrate(connection)
else:
    asyncio.run(_migrate_url(_url()))
