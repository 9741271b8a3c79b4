"""`matloop decode`: crystal-table rows → 3-D structures (CIF files) with a chosen decoder; and the command of
`matloop bench decoder` (the evaluation itself is :mod:`orchestration.bench_decoder`, imported when it runs).

Each row (space group, conventional-cell composition, lattice) is decoded ``--per-row K`` times by
:func:`oracles.decode.decode_batch` (the oracles' decoding, with the same distance check and rescaling; the
score decoder runs the K chains of a row as one batch), and each structure is written as ``DIR/<id>-<k>.cif`` (k = 0 … K-1; an id
that is not a plain short file name becomes a readable prefix plus a digest). ``DIR/decoded.csv`` lists
every (row, k) with its file, status and the space group spglib finds (symprec 0.1).

The row's lattice: pyxtal places the atoms inside it (rescaled only when atoms would be too close); the
score decoder starts its lattice chain from it and refines it (``--lattice-hint``, the default) or ignores
it and samples the lattice from its learned prior (``--no-lattice-hint``).
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.errors import fail

console = Console(stderr=True)
SUMMARY = "decoded.csv"


def file_stem(candidate_id: str) -> str:
    """The id itself when it is a plain short file name, else a readable prefix plus a digest."""
    from oracles.queue import job_name

    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", candidate_id):
        return candidate_id
    return job_name(candidate_id)


def decode(
    input: Annotated[Path, typer.Option("--input", "-i", help="Crystal-table CSV (space_group, composition, a, b, c, "
                                                              "alpha, beta, gamma; optional id).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <id>-<k>.cif and decoded.csv (created).")],
    decoder: Annotated[str, typer.Option("--decoder", "-d", help="pyxtal (random Wyckoff placement in the row's "
                                                                 "lattice) or score (score-based decoder).")] = "pyxtal",
    per_row: Annotated[int, typer.Option("--per-row", "-k", min=1, help="Structures per row (different seeds).")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed; a row's structures depend only on it, the row's id and K.")] = 0,
    checkpoint: Annotated[Path | None, typer.Option(help="Score decoder checkpoint (default: the shipped one).")] = None,
    lattice_hint: Annotated[bool, typer.Option(help="Score decoder: start from and refine the row's lattice; "
                                                    "--no-lattice-hint samples the lattice from the learned prior.")] = True,
    attempts: Annotated[int, typer.Option(min=1, help="Tries per structure before giving up.")] = 8,
    min_distance_ratio: Annotated[float, typer.Option(min=0.0, help="Min d_ij/(r_cov_i + r_cov_j) accepted.")] = 0.6,
    rescale: Annotated[bool, typer.Option(help="Enlarge a too-small cell instead of rejecting it.")] = True,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads (score decoder).")] = 1,
) -> None:
    """Decode crystal-table rows into CIF files, K per row, with the pyxtal or the score decoder.

    Examples:
      matloop decode --decoder score --input crystals.csv --per-row 4 --out decoded/
      matloop decode --decoder pyxtal --input crystals.csv --per-row 8 --out random/ --seed 1
      matloop decode --decoder score --no-lattice-hint --checkpoint runs/decoder --input crystals.csv --out prior/
    """
    import torch
    from pydantic import ValidationError

    from discovery.crystal import CrystalTableError, read_crystal_table
    from oracles.base import Candidate
    from oracles.decode import DecodeError, DecoderOptions, decode_batch

    torch.set_num_threads(threads)
    try:
        options = DecoderOptions(name=decoder, checkpoint=str(checkpoint) if checkpoint else None,  # type: ignore[arg-type]
                                 use_lattice_hint=lattice_hint)
    except ValidationError as exc:
        fail(f"--decoder {decoder!r}: choose pyxtal or score" if decoder not in ("pyxtal", "score")
             else exc.errors()[0]["msg"])
    settings = options.settings(attempts=attempts, min_distance_ratio=min_distance_ratio, rescale_volume=rescale)
    try:
        crystals = read_crystal_table(input)
    except (OSError, CrystalTableError) as exc:
        fail(f"--input {input}: {exc}")
    if not crystals:
        fail(f"--input {input}: the table has no rows")
    if checkpoint is not None and decoder == "score" and not checkpoint.exists():
        fail(f"--checkpoint {checkpoint}: no such file or folder")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    t0 = time.perf_counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"decoding ({decoder})", total=len(crystals) * per_row, info="")
        written = 0
        for crystal in crystals:
            base = Candidate.from_crystal(crystal).candidate_seed(seed)
            stem = file_stem(crystal.id)
            for k, dec in enumerate(decode_batch(crystal, k=per_row, seed=base, settings=settings)):
                row: dict[str, object] = {"id": crystal.id, "k": k, "composition": crystal.formula,
                                          "space_group": crystal.space_group}
                if isinstance(dec, DecodeError):
                    row.update(status="impossible" if dec.impossible else "failed", message=str(dec))
                else:
                    path = out / f"{stem}-{k}.cif"
                    dec.structure.to(filename=str(path))
                    written += 1
                    row.update(status="ok", message="", file=path.name, attempt=dec.attempt,
                               volume_scale=round(dec.volume_scale, 6),
                               found_space_group=_space_group(dec.structure), n_atoms=len(dec.structure))
                rows.append(row)
            bar.update(task, advance=per_row, info=f"{written} written")
    _write_summary(out / SUMMARY, rows)
    failed = sum(r["status"] != "ok" for r in rows)
    console.print(f"wrote {written} CIF files to {out} in {time.perf_counter() - t0:.1f} s "
                  f"({failed} failed or impossible; see {out / SUMMARY})")
    if written == 0:
        raise typer.Exit(1)


def _space_group(structure: object) -> int | None:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number())  # type: ignore[arg-type]
    except Exception:  # spglib can fail on degenerate cells: the summary says so by a blank
        return None


def _write_summary(path: Path, rows: list[dict[str, object]]) -> None:
    fields = ["id", "k", "composition", "space_group", "status", "file", "found_space_group", "n_atoms", "attempt",
              "volume_scale", "message"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({f: row.get(f, "") for f in fields})


def bench_decoder_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON report to write.")] = Path("runs/bench-decoder.json"),
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="MP-20 validation crystals (the first n with "
                                                             "≤ --max-atoms atoms).")] = 50,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Decodings per crystal and decoder.")] = 8,
    max_atoms: Annotated[int, typer.Option(min=1, help="Atoms in the conventional cell, at most.")] = 12,
    decoders: Annotated[str, typer.Option(help="Comma-separated subset of pyxtal,score.")] = "pyxtal,score",
    lattice: Annotated[str, typer.Option(help="hint: both decoders get the true lattice (score refines it); free: "
                                              "none (pyxtal draws one, score samples its prior).")] = "hint",
    relax: Annotated[bool, typer.Option(help="Relax every decoding with CHGNet (--no-relax: unrelaxed metrics "
                                             "only).")] = True,
    steps: Annotated[int, typer.Option(min=1, help="CHGNet FIRE step cap per relaxation.")] = 100,
    fmax: Annotated[float, typer.Option(min=0.0, help="Force convergence, eV/Å.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    checkpoint: Annotated[str | None, typer.Option(help="Score decoder checkpoint (default: shipped).")] = None,
    coverage: Annotated[bool, typer.Option(help="CDVAE COV-R/COV-P (needs matminer).")] = True,
    coverage_samples: Annotated[int, typer.Option(min=1, help="Samples fingerprinted per decoder and stage "
                                                             "(seeded subset).")] = 100,
    bootstrap: Annotated[int, typer.Option(min=1, help="Bootstrap resamples over crystals.")] = 1000,
    merge: Annotated[list[Path] | None, typer.Option(help="Instead of running: join reports of separate runs "
                                                          "(e.g. --decoders pyxtal, then --decoders score) on the same "
                                                          "crystals and settings; the summary is recomputed.")] = None,
) -> None:
    """Score decoder vs pyxtal random placement on MP-20 validation crystals: recovery within k decodings
    (StructureMatcher, relaxed and unrelaxed), CHGNet relaxation steps, share converged, E_hull, COV-R/COV-P.

    Examples:
      matloop bench decoder -n 4 -k 2 --steps 20 --no-coverage --out /tmp/tiny.json
      nice -n 10 matloop bench decoder -n 50 -k 8 --steps 100 --lattice hint --out docs/results/decoder/hint.json
      matloop bench decoder -n 50 -k 8 --lattice free --no-relax --out free.json
      matloop bench decoder --merge pyxtal.json --merge score.json --out both.json
    """
    import json

    from orchestration.bench_decoder import DecoderBench, merge_reports, run_decoder_bench

    if merge:
        try:
            report = merge_reports([json.loads(p.read_text()) for p in merge])
        except (OSError, ValueError, KeyError) as exc:
            fail(f"--merge: {exc}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))
        console.print(json.dumps(report["summary"], indent=1, default=str))
        console.print(f"wrote {out}")
        return

    names = tuple(x.strip() for x in decoders.split(",") if x.strip())
    if not names or any(x not in ("pyxtal", "score") for x in names):
        fail(f"--decoders {decoders!r}: give a comma-separated subset of pyxtal,score")
    if lattice not in ("hint", "free"):
        fail(f"--lattice {lattice!r}: choose hint or free")
    cfg = DecoderBench(n=n, k=k, max_atoms=max_atoms, decoders=names, lattice=lattice,  # type: ignore[arg-type]
                       relax=relax, steps=steps, fmax=fmax, seed=seed, checkpoint=checkpoint, coverage=coverage,
                       coverage_samples=coverage_samples,
                       bootstrap=bootstrap)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            report = run_decoder_bench(cfg, progress=progress)
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    console.print(json.dumps(report["summary"], indent=1, default=str))
    console.print(f"wrote {out} ({report['wall_s']:.0f} s)")


def register(app: typer.Typer) -> None:
    """Add ``matloop decode`` to the top-level app (``matloop bench decoder`` is registered in cli_bench)."""
    app.command("decode")(decode)
