"""Alembic environment of the campaign store: migrations run on the connection that
:func:`orchestration.store.migrations.upgrade` passes in (no alembic.ini, no URL of its own)."""

from __future__ import annotations

from alembic import context

from orchestration.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
