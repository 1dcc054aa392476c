"""request usage: prompt and completion tokens, and the request id, per logged request

Revision ID: 0002_request_usage
Revises: 0001
Create Date: 2026-12-02

Token counts are what a chat key is billed by (``gateway keys usage`` sums them per key); the request id
ties a row to the ``x-request-id`` the client saw. All nullable: tasks without tokens log none, and rows
written before this revision have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_request_usage"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("isn_request_log") as batch:
        batch.add_column(sa.Column("prompt_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("completion_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("isn_request_log") as batch:
        batch.drop_column("request_id")
        batch.drop_column("completion_tokens")
        batch.drop_column("prompt_tokens")
