"""`matloop gfn` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="gfn commands.", no_args_is_help=True)
