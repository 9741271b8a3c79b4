"""Reading oracle inputs (a crystal table or a folder of CIFs) and writing result tables.

Output of :func:`write_results` for ``results.csv``:

* ``results.csv``: one row per input, in input order: ``id``, ``status``, ``message``,
  ``energy_per_atom``, ``formation_energy_per_atom``, ``e_above_hull`` (eV/atom), the oracle's other
  targets, ``n_steps``, ``wall_time_s``, ``structure_file`` and, for crystal-table input, the input
  columns (prefixed ``input_`` where a name clashes);
* ``results_structures/<id>.cif``: (ids that are not plain short file names: ``<prefix>-<digest>.cif``) the relaxed (or decoded) structure of each candidate that has one;
* ``results.jsonl``: the full result documents (provenance included), one JSON object per line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure

from discovery.crystal import crystals_to_frame, read_crystal_table
from oracles.base import Candidate, OracleResult
from oracles.queue import check_unique_ids, job_name

MAIN_COLUMNS = ("id", "status", "message", "energy_per_atom", "formation_energy_per_atom", "e_above_hull")


class InputError(ValueError):
    """The input cannot be read; the message names the file and what is wrong."""


def load_candidates(path: str | Path) -> tuple[list[Candidate], pd.DataFrame | None]:
    """Candidates from a crystal-table CSV, a ``.cif`` file or a folder of ``.cif`` files (id = file stem).

    Returns the candidates and, for a crystal table, the input frame (to carry its columns over).
    Raises :class:`InputError` (or :class:`discovery.crystal.CrystalTableError`) with the reason.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder (give a crystal-table CSV or a folder of CIFs)")
    if path.is_dir() or path.suffix.lower() == ".cif":
        files = sorted(path.glob("*.cif")) if path.is_dir() else [path]
        if not files:
            raise InputError(f"{path}: no .cif files in this folder")
        cands = []
        for f in files:
            try:
                structure = Structure.from_file(f)
            except Exception as exc:
                raise InputError(f"{f}: not a readable CIF ({exc})") from None
            if not structure.is_ordered:
                raise InputError(f"{f}: partial occupancies are not supported; order the structure first")
            cands.append(Candidate.from_structure(structure, id=f.stem))
        return cands, None
    crystals = read_crystal_table(path)
    try:
        check_unique_ids([c.id for c in crystals], where=str(path))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return [Candidate.from_crystal(c) for c in crystals], crystals_to_frame(crystals)


def _safe_name(text: str) -> str:
    """The id itself when it is a plain, short file name, else :func:`oracles.queue.job_name` (a bounded
    readable prefix plus a digest of the full id)."""
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", text):
        return text
    return job_name(text)


def results_frame(results: Sequence[OracleResult], *, inputs: pd.DataFrame | None = None,
                  structure_files: Sequence[str | None] | None = None) -> pd.DataFrame:
    """One row per result (see the module docstring for the columns)."""
    target_names: list[str] = []
    for r in results:
        target_names += [k for k in r.targets if k not in target_names]
    rows = []
    for i, r in enumerate(results):
        row: dict[str, object] = {"id": r.candidate_id, "status": r.status, "message": r.message}
        for k in ("energy_per_atom", "formation_energy_per_atom", "e_above_hull", *target_names):
            row[k] = r.targets.get(k)
        row["n_steps"] = r.n_steps
        row["wall_time_s"] = round(r.wall_time_s, 4)
        row["structure_file"] = structure_files[i] if structure_files else None
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else list(MAIN_COLUMNS))
    if inputs is not None and len(inputs) == len(df):
        extra = inputs.drop(columns=["id"], errors="ignore")
        extra = extra.rename(columns={c: f"input_{c}" for c in extra.columns if c in df.columns})
        df = pd.concat([df.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    return df


def write_results(results: Sequence[OracleResult], out: str | Path, *, inputs: pd.DataFrame | None = None) -> Path:
    """Write ``out`` (CSV), the structures folder and the JSONL documents next to it; returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    struct_dir = out.with_name(f"{out.stem}_structures")
    files: list[str | None] = []
    used: set[str] = set()
    for r in results:
        if not r.structure_cif:
            files.append(None)
            continue
        name = _safe_name(r.candidate_id)
        while name in used:
            name += "_"
        used.add(name)
        struct_dir.mkdir(exist_ok=True)
        (struct_dir / f"{name}.cif").write_text(r.structure_cif)
        files.append(str(Path(struct_dir.name) / f"{name}.cif"))
    results_frame(results, inputs=inputs, structure_files=files).to_csv(out, index=False)
    with out.with_suffix(".jsonl").open("w") as fh:
        for r in results:
            fh.write(r.to_json() + "\n")
    return out
