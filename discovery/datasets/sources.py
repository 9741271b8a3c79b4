"""Loaders for OBELiX, the composition-only MatBench sets, user crystal CSVs and CIF folders."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from discovery.crystal import Crystal, CrystalTableError, crystals_from_frame
from discovery.datasets.base import (
    DATA_DIR,
    CompositionSet,
    LabeledSet,
    Loaded,
    LoadedCompositions,
    SkipReport,
    out_of_vocabulary,
)
from discovery.datasets.structures import RowError, crystal_from_structure, structure_from_cif

OBELIX_CSV = DATA_DIR / "obelix" / "train.csv"
OBELIX_TARGET = "log10_conductivity"
#: Key of ``Crystal.extra`` holding exact (fractional) atom counts per cell, used by the proxy features.
EXACT_COUNTS_KEY = "exact_counts"

CompositionOnlyName = Literal["e_form", "gap"]
COMPOSITION_ONLY_FILES: dict[str, tuple[str, str]] = {
    "e_form": ("matbench_mp_e_form.csv.gz", "formation_energy_per_atom"),
    "gap": ("matbench_mp_gap.csv.gz", "band_gap"),
}


def parse_conductivity(value: object) -> tuple[float, bool]:
    """Conductivity in S/cm → (log10 value, censored). ``"<1E-10"`` gives (-10.0, True).

    Raises ``ValueError`` for anything else that is not a positive number.
    """
    text = str(value).strip()
    censored = text.startswith("<")
    number = float(text.lstrip("<").strip())
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"conductivity {text!r} is not a positive number")
    return math.log10(number), censored


def load_obelix(*, path: str | Path = OBELIX_CSV,
                partial_occupancy: Literal["keep_fractions", "skip"] = "keep_fractions") -> Loaded:
    """OBELiX train split: Li-ion conductors with room-temperature ionic conductivity.

    Target ``log10_conductivity`` (log10 of S/cm); values such as ``<1E-10`` are used as their bound
    (counted in the report's notes). The cell content is the "True Composition" (reduced formula × Z);
    space group and a b c α β γ come from the table. 256 entries have partial occupancies (e.g.
    ``Li6.4La3Zr1.4Ta0.6O12``): with ``keep_fractions`` their integer ``counts`` are rounded
    (at least 1 per element) and the exact amounts are kept in ``extra["exact_counts"]``, which the
    proxy features use; with ``skip`` they are reported and left out.
    """
    frame = pd.read_csv(path, dtype={"ID": str})
    report = SkipReport(source=f"obelix ({Path(path).name})", n_read=len(frame))
    crystals: list[Crystal] = []
    y: list[float] = []
    for i, rec in enumerate(frame.to_dict("records")):
        rid = str(rec["ID"])
        try:
            logc, censored = parse_conductivity(rec["Ionic conductivity (S cm-1)"])
        except (TypeError, ValueError) as exc:
            report.skip(i + 1, rid, "missing target", str(exc))
            continue
        try:
            amounts = Composition(str(rec["True Composition"])).get_el_amt_dict()
        except Exception as exc:
            report.skip(i + 1, rid, "unparsable composition", f"{rec['True Composition']!r}: {exc}")
            continue
        bad = out_of_vocabulary(amounts)
        if bad:
            report.skip(i + 1, rid, "element outside vocabulary", ", ".join(bad))
            continue
        fractional = any(abs(v - round(v)) > 1e-6 for v in amounts.values())
        if fractional and partial_occupancy == "skip":
            report.skip(i + 1, rid, "partial occupancy", str(rec["True Composition"]))
            continue
        try:
            sg = int(rec["Space group #"])
            lattice = [float(rec[k]) for k in ("a", "b", "c", "alpha", "beta", "gamma")]
        except (TypeError, ValueError) as exc:
            report.skip(i + 1, rid, "missing structure field", str(exc))
            continue
        if not (1 <= sg <= 230) or not all(math.isfinite(v) and v > 0 for v in lattice):
            report.skip(i + 1, rid, "missing structure field", f"space group {sg}, lattice {lattice}")
            continue
        extra: dict[str, object] = {"family": rec.get("Family"), "censored": censored}
        if fractional:
            report.notes["partial occupancy: counts rounded, exact fractions kept for features"] += 1
            extra[EXACT_COUNTS_KEY] = {str(k): float(v) for k, v in amounts.items()}
        if censored:
            report.notes["censored conductivity (<bound) used as the bound"] += 1
        counts = {str(k): max(1, round(v)) for k, v in amounts.items()}
        a, b, c, alpha, beta, gamma = lattice
        crystals.append(Crystal(space_group=sg, counts=counts, a=a, b=b, c=c, alpha=alpha, beta=beta, gamma=gamma,
                                id=rid, extra=extra))
        y.append(logc)
    report.n_kept = len(crystals)
    return Loaded(LabeledSet(crystals, np.array(y).reshape(-1, 1), (OBELIX_TARGET,)), report)


def load_composition_only(name: CompositionOnlyName, *, exclude_formulas: Iterable[str] = (),
                          max_rows: int | None = None) -> LoadedCompositions:
    """A composition-only MatBench set (``e_form`` in eV/atom, or ``gap`` in eV), by formula.

    ``exclude_formulas`` (any formula; compared by reduced formula) are removed and counted in the
    report — pass the evaluation formulas so that pre-training does not memorise them.
    ``max_rows`` reads only the first rows of the file (for quick checks).
    """
    if name not in COMPOSITION_ONLY_FILES:
        raise ValueError(f"composition-only set {name!r} is not one of {', '.join(COMPOSITION_ONLY_FILES)}")
    fname, target = COMPOSITION_ONLY_FILES[name]
    frame = pd.read_csv(DATA_DIR / "composition_only" / fname, nrows=max_rows)
    excluded = {Composition(f).reduced_formula for f in exclude_formulas}
    report = SkipReport(source=f"composition_only/{name}", n_read=len(frame))
    formulas: list[str] = []
    counts: list[dict[str, float]] = []
    y: list[float] = []
    for i, (formula, value) in enumerate(zip(frame["formula"], frame["target"], strict=True)):
        if not math.isfinite(float(value)):
            report.skip(i + 1, str(formula), "missing target")
            continue
        try:
            comp = Composition(str(formula))
        except Exception as exc:
            report.skip(i + 1, str(formula), "unparsable composition", str(exc)[:200])
            continue
        amounts = {str(k): float(v) for k, v in comp.get_el_amt_dict().items()}
        bad = out_of_vocabulary(amounts)
        if bad:
            report.skip(i + 1, str(formula), "element outside vocabulary", ", ".join(bad))
            continue
        if excluded and comp.reduced_formula in excluded:
            report.skip(i + 1, str(formula), "reserved for evaluation")
            continue
        formulas.append(str(formula))
        counts.append(amounts)
        y.append(float(value))
    report.n_kept = len(formulas)
    return LoadedCompositions(CompositionSet(formulas, counts, np.array(y).reshape(-1, 1), (target,)), report)


def load_crystal_csv(path: str | Path, label: str) -> Loaded:
    """Any crystal-table CSV (see :mod:`discovery.crystal`) with a numeric ``label`` column.

    Rows with a bad crystal field, a missing label or elements outside the vocabulary are reported.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    frame = pd.read_csv(path, dtype={"id": str})
    report = SkipReport(source=str(path), n_read=len(frame))
    if label not in frame.columns:
        raise ValueError(f"{path}: no label column {label!r}; columns are {', '.join(map(str, frame.columns))}")
    try:
        crystals = crystals_from_frame(frame, source=str(path))
        parsed: list[Crystal | str] = list(crystals)
    except CrystalTableError:  # find every bad row, not only the first
        parsed = []
        for i in range(len(frame)):
            try:
                parsed.append(crystals_from_frame(frame.iloc[[i]], source=f"row {i + 1}")[0])
            except CrystalTableError as exc:
                parsed.append(str(exc))
    values = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64)
    kept: list[Crystal] = []
    y: list[float] = []
    for i, item in enumerate(parsed):
        rid = str(frame["id"].iloc[i]) if "id" in frame.columns else f"row-{i}"
        if isinstance(item, str):
            report.skip(i + 1, rid, "bad crystal field", item)
        elif not math.isfinite(values[i]):
            report.skip(i + 1, rid, "missing target", f"{label}={frame[label].iloc[i]!r}")
        elif bad := out_of_vocabulary(item.counts):
            report.skip(i + 1, rid, "element outside vocabulary", ", ".join(bad))
        else:
            item.extra.pop(label, None)
            kept.append(item)
            y.append(float(values[i]))
    report.n_kept = len(kept)
    return Loaded(LabeledSet(kept, np.array(y).reshape(-1, 1), (label,)), report)


def load_cif_folder(directory: str | Path, labels_csv: str | Path, label: str, *, id_column: str = "id",
                    symprec: float = 0.1) -> Loaded:
    """A folder of CIFs plus a CSV of labels (column ``id_column`` = CIF file name without ``.cif``).

    Each CIF becomes its conventional standard cell (see :mod:`discovery.datasets.structures`).
    Labels without a CIF, unparsable CIFs, partial occupancies and missing labels are reported.
    """
    directory = Path(directory)
    labels = pd.read_csv(labels_csv, dtype={id_column: str})
    for col in (id_column, label):
        if col not in labels.columns:
            raise ValueError(f"{labels_csv}: no column {col!r}; columns are {', '.join(map(str, labels.columns))}")
    report = SkipReport(source=f"{directory} + {Path(labels_csv).name}", n_read=len(labels))
    values = pd.to_numeric(labels[label], errors="coerce").to_numpy(dtype=np.float64)
    crystals: list[Crystal] = []
    y: list[float] = []
    for i, rid in enumerate(labels[id_column].astype(str)):
        cif = directory / f"{rid}.cif"
        if not math.isfinite(values[i]):
            report.skip(i + 1, rid, "missing target", f"{label}={labels[label].iloc[i]!r}")
            continue
        if not cif.exists():
            report.skip(i + 1, rid, "no CIF", f"{cif.name} not in {directory}")
            continue
        try:
            crystal = crystal_from_structure(structure_from_cif(cif.read_text(errors="replace")), id=rid, symprec=symprec)
        except RowError as err:
            report.skip(i + 1, rid, err.reason, err.detail)
            continue
        crystals.append(crystal)
        y.append(float(values[i]))
    report.n_kept = len(crystals)
    return Loaded(LabeledSet(crystals, np.array(y).reshape(-1, 1), (label,)), report)


def composition_set_from(data: LabeledSet) -> CompositionSet:
    """The compositions (exact counts where known) and labels of a labelled set."""
    counts = [exact_counts(c) for c in data.crystals]
    return CompositionSet([c.formula for c in data.crystals], counts, data.targets, data.target_names)


def exact_counts(crystal: Crystal) -> dict[str, float]:
    """Atoms per cell, fractional where the source had partial occupancies."""
    extra = crystal.extra.get(EXACT_COUNTS_KEY)
    if isinstance(extra, dict):
        return {str(k): float(v) for k, v in extra.items()}
    return {k: float(v) for k, v in crystal.counts.items()}
