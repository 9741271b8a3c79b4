"""MP-20 (Materials Project, CDVAE benchmark subset) as crystal tables with labels.

Shipped files (``discovery/data/mp20/``):

* ``mp20_{split}_cif.csv.gz`` — the source rows with their CIFs (as published, CC BY 4.0);
* ``mp20_{split}.csv.gz`` — the crystal table rebuilt from each CIF's *conventional standard cell*
  (space group at symprec 0.1 Å, conventional composition, a b c α β γ), which is what the generator
  samples. Rebuild with ``python -m discovery.datasets.mp20`` (≈ 30 s); the loader reads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from discovery.crystal import LATTICE_COLUMNS, crystals_from_frame
from discovery.datasets.base import DATA_DIR, LabeledSet, Loaded, SkipReport
from discovery.datasets.structures import RowError, crystal_from_structure, structure_from_cif

MP20Split = Literal["train", "val"]
MP20Target = Literal["formation_energy_per_atom", "band_gap", "e_above_hull"]
MP20_TARGETS: tuple[str, ...] = get_args(MP20Target)
MP20_DIR = DATA_DIR / "mp20"


def raw_path(split: MP20Split) -> Path:
    return MP20_DIR / f"mp20_{split}_cif.csv.gz"


def table_path(split: MP20Split) -> Path:
    return MP20_DIR / f"mp20_{split}.csv.gz"


def build_mp20_table(raw: pd.DataFrame, *, source: str = "mp20", symprec: float = 0.1) -> tuple[pd.DataFrame, SkipReport]:
    """Crystal table (conventional cells) from MP-20 rows with a ``cif`` column.

    Keeps the three targets, ``formula`` and MP's own ``mp_space_group`` label. Rows whose CIF
    cannot be used go to the report; rows with missing targets are kept here (the loader reports
    them per target).
    """
    report = SkipReport(source=source, n_read=len(raw))
    rows: list[dict[str, object]] = []
    for i, rec in enumerate(raw.to_dict("records")):
        mid = str(rec["material_id"])
        try:
            crystal = crystal_from_structure(structure_from_cif(str(rec["cif"])), id=mid, symprec=symprec)
        except RowError as err:
            report.skip(i + 1, mid, err.reason, err.detail)
            continue
        row: dict[str, object] = {"id": mid, "space_group": crystal.space_group, "composition": crystal.formula}
        row.update(zip(LATTICE_COLUMNS, crystal.lattice, strict=True))
        row.update({t: rec[t] for t in MP20_TARGETS})
        row["formula"] = rec["pretty_formula"]
        row["mp_space_group"] = rec["spacegroup_number"]
        if int(rec["spacegroup_number"]) != crystal.space_group:
            report.notes["space group differs from MP label at symprec 0.1"] += 1
        rows.append(row)
    report.n_kept = len(rows)
    return pd.DataFrame(rows), report


def rebuild(splits: Sequence[MP20Split] = ("train", "val")) -> list[SkipReport]:
    """Recompute the shipped crystal tables from the shipped CIFs; returns one report per split."""
    reports = []
    for split in splits:
        frame, report = build_mp20_table(pd.read_csv(raw_path(split)), source=f"mp20/{split}")
        frame.to_csv(table_path(split), index=False, float_format="%.8g")
        reports.append(report)
    return reports


def load_mp20(split: MP20Split, target: MP20Target | Sequence[MP20Target] = "formation_energy_per_atom",
              *, recompute: bool = False) -> Loaded:
    """MP-20 ``split`` as a labelled set of conventional-cell crystals.

    ``target`` is one name or several (columns of ``targets``, in that order): formation energy in
    eV/atom (MP2020-corrected), band gap in eV, energy above hull in eV/atom. ``recompute=True``
    rebuilds from the CIFs instead of reading the shipped table (same result, ≈ 15 s per 1,000 rows).
    """
    if split not in get_args(MP20Split):
        raise ValueError(f"MP-20 split {split!r} is not one of {get_args(MP20Split)}")
    targets = (target,) if isinstance(target, str) else tuple(target)
    for t in targets:
        if t not in MP20_TARGETS:
            raise ValueError(f"MP-20 target {t!r} is not one of {', '.join(MP20_TARGETS)}")
    if recompute:
        frame, report = build_mp20_table(pd.read_csv(raw_path(split)), source=f"mp20/{split}")
    else:
        frame = pd.read_csv(table_path(split), dtype={"id": str})
        report = SkipReport(source=f"mp20/{split}", n_read=len(pd.read_csv(raw_path(split), usecols=["material_id"])))
        missing_ids = set(pd.read_csv(raw_path(split), usecols=["material_id"])["material_id"]) - set(frame["id"])
        for mid in sorted(missing_ids):
            report.skip(mid, mid, "unusable CIF", "left out when the shipped table was built (rebuild to see why)")
    y = frame[list(targets)].to_numpy(dtype=np.float64)
    ok = np.isfinite(y).all(axis=1)
    for i in np.flatnonzero(~ok):
        bad = [t for t, v in zip(targets, y[i], strict=True) if not math.isfinite(v)]
        report.skip(int(i) + 1, str(frame["id"].iloc[i]), "missing target", ", ".join(bad))
    frame = frame[ok].reset_index(drop=True)
    crystals = crystals_from_frame(frame.drop(columns=list(MP20_TARGETS)), source=f"mp20/{split}")
    report.n_kept = len(crystals)
    return Loaded(LabeledSet(crystals, y[ok], targets), report)


if __name__ == "__main__":  # pragma: no cover
    for rep in rebuild():
        print(rep.summary())
