"""Baseline: the campaign store as made before migrations (campaigns, rounds, candidates, oracle_jobs,
oracle_submissions, oracle_results, sun_labels, model_versions). Such stores are stamped with this
revision; a new store is created from the models and stamped with the head.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: the baseline tables exist (made by ``create_all`` of the release before migrations)."""


def downgrade() -> None:
    """Nothing below the baseline."""
