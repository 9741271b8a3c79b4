"""`matloop decoder` commands: train the score-based structure decoder, sample structures with it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.errors import fail

app = typer.Typer(
    help="Score-based structure decoder (annealed Langevin on Wyckoff parameters and lattice).\n\n"
         "Examples:\n\n"
         "  matloop decoder train --out runs/score-decoder --minutes 25\n\n"
         "  matloop decoder sample --space-group 225 --composition 'Na4 Cl4' --lattice 5.6,5.6,5.6,90,90,90 "
         "--k 8 --out runs/nacl",
    no_args_is_help=True,
)
console = Console(stderr=True)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write (model.pt + train.json).")],
    minutes: Annotated[float, typer.Option(min=0.0, help="Wall-clock training budget in minutes.")] = 25.0,
    data: Annotated[Path | None, typer.Option(help="CIF table (column 'cif'); default: shipped MP-20 train.")] = None,
    max_atoms: Annotated[int, typer.Option(min=1, help="Largest conventional cell (atoms) used for the network.")] = 20,
    batch_size: Annotated[int, typer.Option(min=1, help="Cells per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate (cosine decay to 5 %).")] = 2e-3,
    hidden: Annotated[int, typer.Option(min=8, help="Hidden width of the network.")] = 64,
    layers: Annotated[int, typer.Option(min=1, help="Message-passing layers.")] = 3,
    threads: Annotated[int, typer.Option(min=1, help="torch threads.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (default: time only).")] = None,
) -> None:
    """Train on MP-20 train structures (never validation) and write a checkpoint.

    Example: nice -n 10 matloop decoder train --out runs/score-decoder --minutes 25
    """
    import torch

    from discovery.decoder.model import ModelConfig, ScoreNet
    from discovery.decoder.train import DEFAULT_TRAIN, prepare_data, save_checkpoint, train_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.monotonic()
    path = data or DEFAULT_TRAIN
    if not path.exists():
        fail(f"{path} does not exist")
    with console.status(f"reading and standardising {path.name} (spglib, symprec 0.1)"):
        training = prepare_data(path, max_atoms=max_atoms)
    if not training.cells:
        fail(f"no cell of at most {max_atoms} atoms in {path}")
    console.print(f"{len(training.cells)} cells ≤ {max_atoms} atoms of {training.n_structures} "
                  f"(skipped: {training.skipped}), prepared in {time.monotonic() - t0:.0f} s")
    model = ScoreNet(ModelConfig(hidden=hidden, layers=layers))
    with Progress(TextColumn("[bold]train"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                  console=console) as progress:
        task = progress.add_task("train", total=1000, info="")

        def on_step(step: int, frac: float, lx: float, ll: float) -> None:
            if step % 500 == 0 and not console.is_terminal:  # a log file gets plain lines
                console.print(f"step {step} ({frac:.0%} of the time)  loss positions {lx:.4f}  lattice {ll:.4f}")
            if step % 10 == 0:
                progress.update(task, completed=int(1000 * frac),
                                info=f"step {step}  loss positions {lx:.3f}  lattice {ll:.3f}")

        result = train_model(model, training, minutes=minutes, batch_size=batch_size, lr=lr, seed=seed,
                             max_steps=max_steps, on_step=on_step)
    meta = {"data": str(path), "cells": len(training.cells), "structures": training.n_structures,
            "max_atoms": max_atoms, "batch_size": batch_size, "lr": lr, "seed": seed, "steps": result.steps,
            "train_seconds": round(result.seconds, 1), "threads": threads,
            "final_loss_positions": result.history[-1][1] if result.history else None,
            "final_loss_lattice": result.history[-1][2] if result.history else None}
    file = save_checkpoint(out, model, training, meta)
    (out / "train.json").write_text(json.dumps({**meta, "history": result.history}, indent=1))
    console.print(f"wrote {file} ({file.stat().st_size / 1e6:.2f} MB) after {result.steps} steps, "
                  f"{result.seconds / 60:.1f} min")


@app.command()
def sample(
    space_group: Annotated[int, typer.Option(min=1, max=230, help="International space-group number.")],
    composition: Annotated[str, typer.Option(help="Conventional-cell composition, e.g. 'Na4 Cl4'.")],
    out: Annotated[Path, typer.Option(help="Directory for the CIFs (<formula>-<sg>-<i>.cif).")],
    lattice: Annotated[str | None, typer.Option(help="Lattice hint a,b,c,alpha,beta,gamma (Å, degrees).")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Structures to sample.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint directory (default: the shipped one).")] = None,
    levels: Annotated[int, typer.Option(min=2, help="Langevin noise levels.")] = 20,
    steps: Annotated[int, typer.Option(min=1, help="Langevin steps per level.")] = 8,
) -> None:
    """Sample K structures of a space group and composition and write them as CIFs.

    Example: matloop decoder sample --space-group 225 --composition 'Na4 Cl4' --k 8 --out runs/nacl
    """
    import math

    from discovery.crystal import Crystal, format_formula, parse_composition
    from discovery.decoder import DecoderError, SamplerSettings, ScoreDecoder

    try:
        counts = parse_composition(composition)
    except ValueError as exc:
        fail(f"--composition {composition!r}: {exc}")
    hint = lattice is not None
    if lattice is not None:
        try:
            params = [float(x) for x in lattice.replace(",", " ").split()]
        except ValueError:
            fail(f"--lattice {lattice!r}: six numbers a,b,c,alpha,beta,gamma")
        if len(params) != 6 or min(params) <= 0:
            fail(f"--lattice {lattice!r}: six positive numbers a,b,c,alpha,beta,gamma")
    else:
        params = [math.nan] * 6
    settings = SamplerSettings(levels=levels, steps=steps)
    decoder = ScoreDecoder.load(checkpoint, settings=settings)
    crystal = Crystal(space_group, counts, params[0], params[1], params[2], params[3], params[4], params[5])
    with console.status(f"sampling {k} structures of {format_formula(counts)} in space group {space_group}"):
        try:
            structures = decoder.decode(crystal, k=k, seed=seed, use_lattice_hint=hint)
        except DecoderError as exc:
            fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    stem = crystal.reduced_formula()
    for i, s in enumerate(structures):
        s.to(filename=str(out / f"{stem}-{space_group}-{i}.cif"))
    stats = dict(decoder.last_stats)
    console.print(f"wrote {len(structures)} CIFs to {out} (Langevin samples {stats.get('langevin_samples', 0)}, "
                  f"rejected {stats.get('rejected', 0)}, random-placement fallbacks {stats.get('fallback', 0)})")
