"""One writer per campaign: the ``campaign_locks`` table (:mod:`orchestration.store.locks`).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "campaign_locks" not in tables:
        op.create_table(
            "campaign_locks",
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("token", sa.String(64), nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("boot_id", sa.String(64), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("pid_start", sa.String(32), nullable=False),
            sa.Column("command", sa.String(255), nullable=False),
            sa.Column("acquired_at", sa.Float, nullable=False),
            sa.Column("heartbeat_at", sa.Float, nullable=False),
        )
    if "store_meta" in tables:  # a version marker of development builds, replaced by alembic_version
        op.drop_table("store_meta")


def downgrade() -> None:
    op.drop_table("campaign_locks")
