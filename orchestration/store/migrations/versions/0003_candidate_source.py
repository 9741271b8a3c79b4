"""Candidates remember their source (Crystal-GFN or substitution) and, for structures, their origin.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("candidates")}
    with op.batch_alter_table("candidates") as batch:
        if "source" not in columns:
            batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="generator"))
        if "origin_json" not in columns:
            batch.add_column(sa.Column("origin_json", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("origin_json")
        batch.drop_column("source")
