"""`matloop proxy` commands: fit, predict, pretrain, fit-lattice-prior."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration.errors import UserError, user_errors

app = typer.Typer(help="Proxy models: fit a deep ensemble, predict with uncertainty, pre-train the encoder.",
                  no_args_is_help=True)
console = Console()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _load_dataset(dataset: str, target: str, labels: Path | None, id_column: str):  # type: ignore[no-untyped-def]
    """(train, validation or None, skip reports) for the --dataset choice."""
    from discovery.datasets import (
        MP20_TARGETS,
        OBELIX_TARGET,
        load_cif_folder,
        load_crystal_csv,
        load_mp20,
        load_obelix,
    )

    if dataset == "mp20":
        if target not in MP20_TARGETS:
            raise UserError(f"MP-20 has targets {', '.join(MP20_TARGETS)}, not {target!r}; pass one with --target")
        train, val = load_mp20("train", target), load_mp20("val", target)  # type: ignore[arg-type]
        return train.data, val.data, [train.report, val.report]
    if dataset == "obelix":
        if target != OBELIX_TARGET:
            raise UserError(f"OBELiX has one target, {OBELIX_TARGET!r} (log10 of S/cm); pass --target {OBELIX_TARGET}")
        loaded = load_obelix()
        return loaded.data, None, [loaded.report]
    path = Path(dataset)
    if path.is_dir():
        if labels is None:
            raise UserError(f"{path} is a folder of CIFs: pass the CSV of labels with --labels (columns {id_column}, {target})")
        loaded = load_cif_folder(path, labels, target, id_column=id_column)
    elif path.is_file():
        loaded = load_crystal_csv(path, target)
    else:
        raise UserError(f"--dataset {dataset!r} is neither mp20, obelix, a crystal-table CSV nor a folder of CIFs")
    return loaded.data, None, [loaded.report]


def _metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    """One row per metric, one column per target (fits a narrow terminal)."""
    table = Table(title=title)
    table.add_column("metric")
    for name in metrics:
        table.add_column(name, justify="right")
    keys = [k for k in next(iter(metrics.values())) if not k.startswith("mae_fold_")]
    for k in keys:
        table.add_row(k, *(f"{m[k]:.4g}" for m in metrics.values()))
    return table


@app.command()
def fit(
    dataset: Annotated[str, typer.Option(help="mp20, obelix, a crystal-table CSV, or a folder of CIFs (with --labels)")],
    target: Annotated[str, typer.Option(help="target column, e.g. formation_energy_per_atom, band_gap, log10_conductivity")],
    out: Annotated[Path, typer.Option(help="model directory to write (config.json, weights.pt, metrics.json)")],
    labels: Annotated[Path | None, typer.Option(help="CSV of labels for a CIF folder")] = None,
    id_column: Annotated[str, typer.Option(help="column of --labels naming each CIF (file name without .cif)")] = "id",
    validation: Annotated[Path | None, typer.Option(help="crystal-table CSV with the target column, for "
                                                          "recalibration and metrics (mp20 uses its val split)")] = None,
    cv: Annotated[int, typer.Option(help="also report K-fold cross-validated metrics (0 = off)")] = 0,
    cv_group_by: Annotated[str | None, typer.Option(help="keep rows of a group in one fold: formula, chemsys, "
                                                         "or a column such as family (OBELiX)")] = None,
    members: Annotated[int | None, typer.Option(help="ensemble members (default from the configuration: 16)")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs (default from the configuration)")] = None,
    no_encoder: Annotated[bool, typer.Option("--no-encoder", help="do not use the pre-trained composition encoder")] = False,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
) -> None:
    """Fit a deep-ensemble proxy, recalibrate its variance, print and save validation metrics.

    Example: matloop proxy fit --dataset mp20 --target formation_energy_per_atom --out models/fe
    """
    import torch

    from discovery.datasets import load_crystal_csv
    from discovery.proxy import EnsembleConfig, EnsembleProxy, cross_validate

    torch.set_num_threads(threads)
    with user_errors(FileNotFoundError, ValueError):
        train, val, reports = _load_dataset(dataset, target, labels, id_column)
        if validation is not None:
            loaded = load_crystal_csv(validation, target)
            val, reports = loaded.data, [*reports, loaded.report]
        for rep in reports:
            console.print(rep.summary(), highlight=False)
        if len(train) < 10:
            raise UserError(f"only {len(train)} usable labelled rows in {dataset}; a proxy needs at least 10")
        overrides: dict[str, object] = {"seed": seed, "use_encoder": not no_encoder}
        if members is not None:
            overrides["n_members"] = members
        if epochs is not None:
            overrides["epochs"] = epochs
        config = EnsembleConfig(**overrides)  # type: ignore[arg-type]
        metrics: dict[str, object] = {"dataset": dataset, "target": target, "config": config.model_dump(),
                                      "data": [{"source": r.source, "read": r.n_read, "kept": r.n_kept,
                                                "skipped": r.counts(), "notes": dict(r.notes)} for r in reports]}
        if cv > 1:
            with _progress() as bar:
                task = bar.add_task(f"{cv}-fold cross-validation", total=cv)
                cv_metrics = cross_validate(train, folds=cv, config=config, seed=seed, group_by=cv_group_by,
                                            progress=lambda k, n: bar.update(task, completed=k))
            console.print(_metrics_table(f"{cv}-fold cross-validation", cv_metrics))
            metrics["cross_validation"] = cv_metrics
            metrics["cross_validation_group_by"] = cv_group_by
        proxy = EnsembleProxy(target_names=(target,), config=config)
        with _progress() as bar:
            task = bar.add_task(f"fitting {config.n_members}-member ensemble", total=config.epochs)
            report = proxy.fit(train, validation=val, progress=lambda k, n: bar.update(task, completed=k))
        metrics["fit"] = report.to_dict()
        if report.validation:
            console.print(_metrics_table(f"validation ({report.calibration_source})", report.validation))
        console.print(f"fitted in {report.seconds:.1f} s on {report.n_train} rows")
        proxy.save(out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        console.print(f"model and metrics written to {out}")


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="model directory written by `matloop proxy fit`")],
    input: Annotated[Path, typer.Option("--input", help="crystal-table CSV")],
    out: Annotated[Path, typer.Option(help="output CSV: the input table plus <target>_mean and <target>_std")],
) -> None:
    """Predict mean and standard deviation of each target for a crystal table.

    Example: matloop proxy predict --model models/fe --input crystals.csv --out predictions.csv
    """
    import torch

    from discovery.crystal import CrystalTableError, read_crystal_table, write_crystal_table
    from discovery.proxy import EnsembleProxy

    torch.set_num_threads(1)
    with user_errors(FileNotFoundError, ValueError, CrystalTableError):
        proxy = EnsembleProxy.load(model)
        crystals = read_crystal_table(input)
        post = proxy.posterior(crystals)
        extra: dict[str, Sequence[object]] = {}
        for j, name in enumerate(proxy.target_names):
            extra[f"{name}_mean"] = post.mean[:, j].tolist()
            extra[f"{name}_std"] = post.std[:, j].tolist()
        write_crystal_table(crystals, out, extra=extra)
    console.print(f"{len(crystals)} predictions written to {out}")


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="encoder file to write")] = Path("discovery/data/composition_only/encoder.pt"),
    epochs: Annotated[int, typer.Option(help="training epochs")] = 40,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Pre-train the composition encoder on the composition-only sets, MP-20 formulas removed.

    Example: matloop proxy pretrain --out discovery/data/composition_only/encoder.pt --epochs 40
    """
    import torch

    from discovery.datasets import load_mp20
    from discovery.proxy.encoder import pretrain_encoder, save_encoder

    torch.set_num_threads(1)
    held_out = [c.formula for split in ("train", "val")
                for c in load_mp20(split, "formation_energy_per_atom").data.crystals]  # type: ignore[arg-type]
    with _progress() as bar:
        task = bar.add_task("pre-training composition encoder", total=epochs)
        encoder, report = pretrain_encoder(exclude_formulas=held_out, epochs=epochs, seed=seed,
                                           progress=lambda k, n, loss: bar.update(task, completed=k))
    info = {"epochs": epochs, "seed": seed, "excluded": "MP-20 train and validation formulas (reduced)",
            "rows": report.n_rows, "excluded_rows": report.n_excluded, "holdout_mae": report.holdout_mae,
            "seconds": round(report.seconds, 1)}
    save_encoder(encoder, out, info=info)
    console.print_json(json.dumps(info))
    console.print(f"encoder written to {out}")


@app.command("fit-lattice-prior")
def fit_lattice_prior(
    out: Annotated[Path, typer.Option(help="JSON file to write")] = Path("discovery/data/lattice_prior.json"),
    structures: Annotated[int | None, typer.Option(min=10, help="MP-20 train structures for the strain fit (default all)")] = None,
    tolerance: Annotated[float, typer.Option(min=0, help="free volume band, in σ of the predicted ln V₀")] = 1.5,
    seed: Annotated[int, typer.Option(help="random seed of the structure draw")] = 0,
) -> None:
    """Fit the lattice prior every proxy adds to its energies: equilibrium volume per atom (MP-20 train)
    and a universal strain-energy curve (CHGNet single points of MP-20 train cells scaled 0.7–3×).

    Example: matloop proxy fit-lattice-prior --out discovery/data/lattice_prior.json   # ≈ 6 min on one core
    """
    from orchestration.lattice_prior import write_lattice_prior

    with user_errors(FileNotFoundError, ValueError), _progress() as bar:
        task = bar.add_task("CHGNet single points of scaled MP-20 cells", total=structures or 2051)
        info = write_lattice_prior(out, n_structures=structures, tolerance=tolerance, seed=seed,
                                   progress=lambda k, n: bar.update(task, completed=k, total=n))
    console.print_json(json.dumps(info))
    console.print(f"lattice prior written to {out}")


def bench_proxy(
    target: Annotated[str, typer.Option(help="MP-20 target")] = "formation_energy_per_atom",
    n_predict: Annotated[int, typer.Option(help="crystals to predict")] = 10_000,
    members: Annotated[int | None, typer.Option(help="ensemble members (default from the configuration: 16)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Time fitting the default ensemble (16 members; --members 5 for the acceptance's 5) on MP-20 train and
    predicting 10,000 crystals (1 thread).

    Example: matloop proxy bench --json
    """
    from discovery.datasets import MP20_TARGETS
    from discovery.proxy import EnsembleConfig
    from discovery.proxy.bench import benchmark_proxy

    with user_errors(FileNotFoundError, ValueError):
        if target not in MP20_TARGETS:
            raise UserError(f"--target must be one of {', '.join(MP20_TARGETS)}")
        config = EnsembleConfig(n_members=members) if members is not None else None
        result = benchmark_proxy(target=target, n_predict=n_predict, config=config)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps(result))
    else:
        console.print_json(json.dumps(result))


app.command("bench")(bench_proxy)
