"""The replay oracle: look candidates up in a labelled dataset (benchmarking strategies on known data).

Matching:

* crystal-table candidates: same reduced formula and same space-group number;
* structure candidates: among dataset rows with the same reduced formula, the first whose CIF
  pymatgen's ``StructureMatcher`` (default tolerances) matches; without a ``cif`` column, the
  structure's space group (``SpacegroupAnalyzer``, symprec 0.1 Å) and formula are used instead.

Sanity gates (:mod:`oracles.sanity`): a candidate whose cell is unphysical is ``invalid`` and never
matched (a rock-salt NaCl row with a = 30 Å shares formula and space group with NaCl but is a gas of
atoms): crystal-table rows by their volume per atom, structures by volume and isolated atoms (6 Å);
a matched entry whose own CIF fails the gates is ``invalid`` too.

When several rows match, the one with the lowest ``e_above_hull`` (else the first) is returned and
all matching ids are recorded. No match gives status ``failed`` with the reason. The dataset is a CSV
(or a folder of CSVs) with an id column (``id``/``material_id``), a formula column
(``composition``/``pretty_formula``/``formula``), a space-group column (``space_group``/
``spacegroup_number``), optional ``cif`` and numeric target columns (e.g. ``formation_energy_per_atom``
in eV/atom, ``e_above_hull`` in eV/atom, ``band_gap`` in eV). Default: the MP-20 train+val tables
with CIFs in ``discovery/data/mp20/``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict
from pymatgen.core import Composition, Structure

from oracles.base import Candidate, OracleResult, ProgressCallback, failed, library_versions
from oracles.sanity import Gates, check_structure, check_volume, gate_message

ORACLE_VERSION = "1"
DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "discovery" / "data" / "mp20"
DEFAULT_TARGETS = ("formation_energy_per_atom", "e_above_hull", "band_gap")
GATES = Gates()


class ReplayError(ValueError):
    """The dataset cannot be used; the message names the file and the fix."""


class ReplaySettings(BaseModel):
    """dataset: CSV file or folder of CSVs (default MP-20 with CIFs); targets: columns returned;
    match: how structure candidates are matched (``auto``: StructureMatcher when CIFs exist)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str | None = None
    targets: tuple[str, ...] = DEFAULT_TARGETS
    match: Literal["auto", "structure", "formula+spacegroup"] = "auto"


def _pick(df: pd.DataFrame, names: Sequence[str], what: str, source: str) -> str:
    for n in names:
        if n in df.columns:
            return n
    raise ReplayError(f"{source}: no {what} column (expected one of {', '.join(names)})")


@functools.cache
def load_dataset(path: str) -> pd.DataFrame:
    """Normalised dataset: id, reduced_formula, space_group, optional cif, target columns."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.csv*") if "cif" in f.name) or sorted(p.glob("*.csv*"))
    else:
        files = [p]
    if not files or not all(f.exists() for f in files):
        raise ReplayError(f"replay dataset not found at {p}; pass dataset=PATH (a CSV or a folder of CSVs)")
    frames = []
    for f in files:
        df = pd.read_csv(f)
        id_col = _pick(df, ("id", "material_id"), "id", str(f))
        formula_col = _pick(df, ("composition", "pretty_formula", "formula"), "formula", str(f))
        sg_col = _pick(df, ("space_group", "spacegroup_number"), "space-group", str(f))
        out = df.rename(columns={id_col: "id", sg_col: "space_group"})
        out["reduced_formula"] = [Composition(str(x)).reduced_formula for x in df[formula_col]]
        out["id"] = out["id"].astype(str)
        frames.append(out)
    data = pd.concat(frames, ignore_index=True).drop_duplicates("id")
    data["space_group"] = data["space_group"].astype(int)
    return data


class ReplayOracle:
    """Labels from a dataset by formula + space group, or by StructureMatcher for structures."""

    settings_model: ClassVar[type[BaseModel]] = ReplaySettings
    name = "replay"

    def __init__(self, **settings: Any) -> None:
        self.settings = ReplaySettings(**settings)
        self.dataset_path = str(Path(self.settings.dataset) if self.settings.dataset else DEFAULT_DATASET)

    def evaluate(self, candidates: Sequence[Candidate], *, seed: int = 0,
                 progress: ProgressCallback | None = None) -> list[OracleResult]:
        prov = {"oracle": self.name, "oracle_version": ORACLE_VERSION, "settings": self.settings.model_dump(mode="json"),
                "dataset": self.dataset_path, "sanity_gates": GATES.provenance(), "versions": library_versions()}
        try:
            data = load_dataset(self.dataset_path)
        except Exception as exc:
            return [failed(c.id, "failed", f"replay dataset unusable: {exc}", provenance=dict(prov)) for c in candidates]
        by_formula = {k: v for k, v in data.groupby("reduced_formula", sort=False)}
        out: list[OracleResult] = []
        for i, cand in enumerate(candidates, start=1):
            t0 = time.perf_counter()
            try:
                res = self._one(cand, by_formula)
            except Exception as exc:
                res = failed(cand.id, "failed", f"{type(exc).__name__}: {exc}")
            res.wall_time_s = time.perf_counter() - t0
            res.provenance = {**prov, **res.provenance}
            out.append(res)
            if progress is not None:
                progress(i, len(candidates))
        return out

    def _one(self, cand: Candidate, by_formula: dict[str, pd.DataFrame]) -> OracleResult:
        refused = _input_gate(cand)
        if refused is not None:
            return failed(cand.id, "invalid", refused)
        formula = cand.reduced_formula
        rows = by_formula.get(formula)
        if rows is None:
            return failed(cand.id, "failed", f"no entry with formula {formula} in the dataset")
        use_structure = (cand.structure is not None and "cif" in rows.columns and self.settings.match != "formula+spacegroup")
        if use_structure:
            assert cand.structure is not None
            matched = rows[[_matches(cand.structure, str(cif)) for cif in rows["cif"]]]
            how = "StructureMatcher"
        else:
            sg = cand.crystal.space_group if cand.crystal is not None else _space_group(cand.structure)
            matched = rows[rows["space_group"] == sg]
            how = f"formula+spacegroup ({formula}, {sg})"
        if matched.empty:
            return failed(cand.id, "failed", f"no dataset entry matches by {how}")
        if "e_above_hull" in matched.columns:
            matched = matched.sort_values("e_above_hull", kind="stable")
        best = matched.iloc[0]
        targets = {t: float(best[t]) for t in self.settings.targets if t in best.index and pd.notna(best[t])}
        cif = str(best["cif"]) if "cif" in best.index and pd.notna(best["cif"]) else None
        refused = check_structure(_parse_cif(cif), gates=GATES) if cif is not None else None
        if refused is not None:
            return failed(cand.id, "invalid", f"matched dataset entry {best['id']} is unphysical: {refused}",
                          provenance={"matched_id": str(best["id"])})
        return OracleResult(candidate_id=cand.id, status="ok", targets=targets, structure_cif=cif,
                            provenance={"matched_id": str(best["id"]), "matched_by": how,
                                        "all_matches": [str(x) for x in matched["id"]]})


def _input_gate(cand: Candidate) -> str | None:
    """Why the candidate's cell is unphysical (see :mod:`oracles.sanity`), or ``None``."""
    if cand.crystal is not None:
        reason = check_volume(cand.crystal.volume, cand.crystal.n_atoms, gates=GATES)
    else:
        assert cand.structure is not None
        reason = check_structure(cand.structure, gates=GATES)
    return None if reason is None else gate_message("input", reason)


def _space_group(structure: Structure | None) -> int:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    assert structure is not None
    return int(SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number())


@functools.lru_cache(maxsize=4096)
def _parse_cif(cif: str) -> Structure:
    return Structure.from_str(cif, fmt="cif")


def _matches(structure: Structure, cif: str) -> bool:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return bool(StructureMatcher().fit(structure, _parse_cif(cif)))
