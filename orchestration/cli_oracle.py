"""`matloop oracle` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="oracle commands.", no_args_is_help=True)


def bench_oracle() -> None:
    """Benchmark (being written)."""
    raise typer.Exit(1)
