"""Campaign commands: run, resume, status, export, ui, schedule."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the campaign commands to the top-level ``matloop`` app."""
