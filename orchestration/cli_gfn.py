"""`matloop gfn` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="gfn commands.", no_args_is_help=True)


def bench_gfn() -> None:
    """Benchmark (being written)."""
    raise typer.Exit(1)
