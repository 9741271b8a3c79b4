"""`matloop oracle` commands (and the `matloop bench oracle` benchmark)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.errors import UserError, user_errors

app = typer.Typer(help="Score candidates with an oracle (CHGNet relaxation, GPAW/QE/VASP DFT jobs, density, replay, "
                       "plugins).",
                  no_args_is_help=True)
console = Console(stderr=True)


def _parse_options(options: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--option {item!r}: expected KEY=VALUE (for example --option cutoff_eV=300)")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@contextmanager
def _progress(description: str) -> Iterator[Any]:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command("run")
def run(
    oracle: str = typer.Option("chgnet", "--oracle", help="oracle name (see `matloop oracle list`)"),
    input: Path = typer.Option(..., "--input", "-i", help="crystal-table CSV, a .cif file or a folder of .cif files"),
    out: Path = typer.Option(..., "--out", "-o", help="results CSV; relaxed CIFs go to <stem>_structures/ beside it"),
    workers: int | None = typer.Option(None, "--workers", "-w", min=0, help="worker processes (0: in-process)"),
    fmax: float | None = typer.Option(None, "--fmax", help="CHGNet: force convergence, eV/Å (default 0.1)"),
    steps: int | None = typer.Option(None, "--steps", help="CHGNet: optimizer step cap (default 200)"),
    timeout: float | None = typer.Option(None, "--timeout", help="CHGNet: time limit per structure, s (default 300)"),
    device: str | None = typer.Option(None, "--device", help="CHGNet: cpu or cuda"),
    reference: str | None = typer.Option(None, "--reference", help="CHGNet/DFT: hull reference of e_above_hull: "
                                         "mp20+matbench (dense MP hull, the default), mp20+li-fe-o (sparse MP-20), "
                                         "li-fe-o or elements; recorded in each result's provenance"),
    seed: int = typer.Option(0, "--seed", help="seed for decoding (results are deterministic for a seed)"),
    workdir: Path | None = typer.Option(None, "--workdir", help="DFT oracles: job folders and ledger (default: a new "
                                        "temp folder); rerunning with the same folder collects instead of resubmitting"),
    option: list[str] = typer.Option([], "--option", help="other oracle setting KEY=VALUE (repeatable; JSON values)"),
) -> None:
    """Evaluate every input with an oracle and write one row per input.

    Examples:

      matloop oracle run --oracle chgnet --input crystals.csv --out results.csv --workers 2 --fmax 0.1 --steps 200

      matloop oracle run --oracle gpaw --input cifs/ --out results.csv --workdir dft-jobs --option cutoff_eV=300 --option kpoint_density=2.0 --option max_parallel=2

      matloop oracle run --oracle gpaw --input cifs/ --out results.csv --workdir dft-jobs --option scheduler=slurm --option partition=cpu --option cores=4 --option walltime_s=7200

    Hull distances are measured against the dense MP reference (mp20+matbench) unless --reference names
    another; invalid results include unphysical cells (an isolated atom, a volume per atom outside
    [3.6, 460] Å³/atom; see oracles/sanity.py).

    DFT settings (cutoff_eV, kpoint_density, mode, scheduler, walltime_s, cores, memory_mb, ...): see
    oracles/dft/settings.py; a wrong key is an error that names it.
    """
    from pydantic import ValidationError

    from oracles.io import InputError, load_candidates, write_results
    from oracles.registry import UnknownOracleError, get_oracle

    with user_errors(InputError, UnknownOracleError, ValueError):
        settings = _parse_options(option)
        flags = {"workers": workers, "fmax": fmax, "steps": steps, "timeout_s": timeout, "device": device,
                 "reference": reference, "workdir": str(workdir) if workdir is not None else None}
        settings.update({k: v for k, v in flags.items() if v is not None})
        candidates, frame = load_candidates(input)
        try:
            chosen = get_oracle(oracle, **settings)
        except UnknownOracleError:
            raise
        except ValidationError as exc:  # name the oracle and each bad setting, on one line
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise UserError(f"oracle {oracle!r} does not accept these settings ({problems})") from None
        try:
            with _progress(f"{oracle}") as update:
                results = chosen.evaluate(candidates, seed=seed, progress=update)
        finally:
            close = getattr(chosen, "close", None)
            if callable(close):
                close()
        write_results(results, out, inputs=frame)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.print(f"wrote {out} ({len(results)} rows: {summary})")


@app.command("list")
def list_oracles() -> None:
    """List the available oracles (built-ins and `matloop.oracles` entry points).

    Example: matloop oracle list
    """
    from oracles.registry import available_oracles

    for name in available_oracles():
        typer.echo(name)


def bench_oracle(
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
    n: int = typer.Option(16, "--n", min=1, help="decoded candidates per run"),
    workers: int = typer.Option(2, "--workers", min=1, help="workers of the parallel run"),
    steps: int = typer.Option(100, "--steps", min=1, help="optimizer step cap"),
    fmax: float = typer.Option(0.1, "--fmax", help="force convergence, eV/Å"),
    seed: int = typer.Option(0, "--seed"),
    max_atoms: int = typer.Option(12, "--max-atoms", help="largest conventional cell used"),
    batched: bool = typer.Option(True, "--batched/--no-batched", help="also run the batched torch-sim engine"),
    agreement: bool = typer.Option(False, "--agreement", help="instead: relax 30 MP-20 validation structures "
                                                              "with both engines and compare energies/statuses"),
    accuracy: str = typer.Option("", "--accuracy", help="instead: formation-energy MAE vs MP of this oracle "
                                                        "(chgnet or sevennet) on 30 MP-20 validation structures"),
) -> None:
    """Structures per minute for CHGNet relaxation of decoded candidates: one process vs N workers
    (sequential ASE engine) and the batched torch-sim engine, and the share of wall time outside the model.

    Example: matloop bench oracle --json --n 64 --steps 200 --workers 2

    Example: matloop bench oracle --json --agreement   (engine agreement on 30 MP-20 validation structures)

    Example: matloop bench oracle --json --accuracy sevennet   (SevenNet formation energies vs MP)
    """
    from oracles.bench import run_engine_agreement, run_mp_accuracy, run_oracle_bench

    if accuracy:
        if accuracy not in ("chgnet", "sevennet"):
            raise typer.BadParameter(f"--accuracy {accuracy!r}: use chgnet or sevennet")
        with user_errors(FileNotFoundError, ValueError):
            typer.echo(json.dumps(run_mp_accuracy(oracle=accuracy, steps=max(steps, 1), fmax=fmax,  # type: ignore[arg-type]
                                                  workers=workers), indent=2))
        return

    if agreement:
        with user_errors(FileNotFoundError, ValueError):
            typer.echo(json.dumps(run_engine_agreement(steps=steps, fmax=fmax, workers=workers), indent=2))
        return
    mode: Literal["json", "table"] = "json" if json_out else "table"
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with user_errors(FileNotFoundError, ValueError), Progress(*columns, console=console) as bar:
        def make(label: str) -> Any:
            task = bar.add_task(label, total=n)
            return lambda done, total: bar.update(task, completed=done, total=total)

        report = run_oracle_bench(n=n, workers=workers, steps=steps, fmax=fmax, seed=seed, max_atoms=max_atoms,
                                  batched=batched, progress=make)
    if mode == "json":
        typer.echo(json.dumps(report, indent=2))
        return
    for label, r in report["runs"].items():
        typer.echo(f"{label:>12}: {r['structures_per_min']:.1f} structures/min, wall {r['wall_s']:.1f} s, "
                   f"outside model {100 * r['share_outside_model']:.1f} %, statuses {r['statuses']}")
    typer.echo(f"speedup {report['speedup']:.2f}× with {workers} workers (load before {report['load_avg_before']})")
    if "speedup_batched" in report:
        typer.echo(f"batched engine: {report['speedup_batched']:.2f}× the best sequential run")
