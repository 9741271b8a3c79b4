"""Schema migrations of the campaign store (Alembic), run by :meth:`orchestration.store.Store.open`.

A long-lived store (PostgreSQL in production) must survive upgrades of matloop. Every change to the
tables is a revision under ``versions/``; ``Store.open(url)`` (a writer) brings the store to the head
revision in one transaction (PostgreSQL: under an advisory lock, so concurrent openers wait):

* a new, empty database: ``create_all`` and stamp the head revision;
* a store made before migrations existed (no ``alembic_version`` table, the tables of revision
  ``0001``): stamped ``0001``, then upgraded;
* a store at an older revision: upgraded; at a revision this code does not know (made by a newer
  matloop): refused before anything is written.

Readers (``Store.open(url, create=False)``: ``status``, ``export``) never migrate. To add a revision,
write ``versions/NNNN_what.py`` with ``revision``, ``down_revision``, ``upgrade()`` and ``downgrade()``
(``alembic revision`` with ``script_location`` pointing here also works) and a test that opens a store
of the previous revision (``tests/orchestration/test_migrations.py``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
BASELINE = "0001"
"""The schema of stores made before migrations existed (campaigns ... sun_labels, model_versions)."""


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return rev


def known(revision: str) -> bool:
    """Whether ``revision`` is one of this code's revisions."""
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except Exception:
        return False


def current(connection: Connection) -> str | None:
    """The store's revision (None: no ``alembic_version`` table, a store older than migrations or a new one)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, *, new: bool) -> None:
    """Bring the store to :func:`head`: a ``new`` (empty) one is created from the models and stamped; an
    existing one without a revision is stamped :data:`BASELINE` first."""
    from orchestration.store.models import Base

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # one migrator at a time; the others wait, then find it done
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7312025140)")
        cfg = _config(conn)
        if new:
            Base.metadata.create_all(conn)
            command.stamp(cfg, "head")
            return
        if current(conn) is None:
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")


def downgrade(engine: Engine, revision: str) -> None:
    """Take the store back to ``revision`` (tests: make a store of the previous schema)."""
    with engine.begin() as conn:
        command.downgrade(_config(conn), revision)
