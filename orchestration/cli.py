"""The ``matloop`` command line.

Each command group lives in its own module and registers itself here, so that the groups stay
small and independent: ``gfn`` (Crystal-GFN), ``proxy``, ``oracle``, ``bench``.
"""

from __future__ import annotations

import typer

from orchestration import cli_bench, cli_campaign, cli_decode, cli_decoder, cli_gfn, cli_oracle, cli_proxy

app = typer.Typer(
    name="matloop",
    help="Active-learning campaigns for materials discovery.\n\nExample: matloop gfn sample --untrained -n 100 --out crystals.csv",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(cli_gfn.app, name="gfn")
app.add_typer(cli_proxy.app, name="proxy")
app.add_typer(cli_oracle.app, name="oracle")
app.add_typer(cli_bench.app, name="bench")
app.add_typer(cli_decoder.app, name="decoder")
cli_campaign.register(app)
cli_decode.register(app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
