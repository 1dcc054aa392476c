"""initial: API keys and the organic request log

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Types are spelled out here rather than imported from ``store/sql.py``: a migration freezes the schema as it
was, whatever the models become later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "isn_api_keys",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("rate_per_minute", sa.Integer(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_isn_api_keys_prefix", "isn_api_keys", ["prefix"])

    op.create_table(
        "isn_request_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("key_id", _ID, nullable=True),
        sa.Column("miner_uid", sa.Integer(), nullable=True),
        sa.Column("miner_hotkey", sa.String(length=64), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("request_bytes", sa.Integer(), nullable=False),
        sa.Column("response_bytes", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.ForeignKeyConstraint(["key_id"], ["isn_api_keys.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_isn_request_log_ts", "isn_request_log", ["ts"])
    op.create_index("ix_isn_request_log_key_ts", "isn_request_log", ["key_id", "ts"])


def downgrade() -> None:
    op.drop_index("ix_isn_request_log_key_ts", table_name="isn_request_log")
    op.drop_index("ix_isn_request_log_ts", table_name="isn_request_log")
    op.drop_table("isn_request_log")
    op.drop_index("ix_isn_api_keys_prefix", table_name="isn_api_keys")
    op.drop_table("isn_api_keys")
