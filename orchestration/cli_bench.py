"""`matloop bench` commands: speed benchmarks that print JSON.

Each benchmark lives beside its command group and is registered here.
"""

from __future__ import annotations

import typer

from orchestration.cli_gfn import bench_gfn
from orchestration.cli_oracle import bench_oracle
from orchestration.cli_proxy import bench_proxy

app = typer.Typer(help="Speed benchmarks (print one JSON object with --json).", no_args_is_help=True)
app.command("gfn")(bench_gfn)
app.command("oracle")(bench_oracle)
app.command("proxy")(bench_proxy)
