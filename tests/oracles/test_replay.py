"""Replay from a labelled dataset (MP-20)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Structure

from discovery.crystal import crystals_from_frame
from oracles.base import Candidate
from oracles.replay import ReplayOracle


@pytest.fixture(scope="module")
def val_rows(mp20_dir: Path) -> pd.DataFrame:
    path = next(p for p in sorted(mp20_dir.glob("*val*.csv*")) if "cif" in p.name)
    return pd.read_csv(path).head(5)


def test_structures_replay_their_labels_via_structure_matcher(mp20_dir: Path, val_rows: pd.DataFrame) -> None:
    # a relaxed candidate never equals the dataset CIF exactly: strain it by 3 % in volume
    structures = [Structure.from_str(r.cif, fmt="cif") for r in val_rows.itertuples()]
    cands = [Candidate.from_structure(s.scale_lattice(s.volume * 1.03), id=f"s{i}") for i, s in enumerate(structures)]
    results = ReplayOracle(dataset=str(mp20_dir)).evaluate(cands)
    for res, row in zip(results, val_rows.itertuples(), strict=True):
        assert res.status == "ok", res.message
        assert res.provenance["matched_id"] == row.material_id and res.provenance["matched_by"] == "StructureMatcher"
        assert res.targets["formation_energy_per_atom"] == pytest.approx(row.formation_energy_per_atom)


def test_crystal_rows_replay_by_formula_and_space_group(mp20_dir: Path) -> None:
    path = next(p for p in sorted(mp20_dir.glob("*val*.csv*")) if "cif" not in p.name) if any(
        "cif" not in p.name for p in mp20_dir.glob("*val*.csv*")) else None
    if path is None:
        pytest.skip("no crystal-table version of MP-20 here")
    table = pd.read_csv(path).head(5)
    crystals = crystals_from_frame(table.drop(columns=[c for c in ("formula",) if c in table.columns]))
    results = ReplayOracle(dataset=str(mp20_dir)).evaluate([Candidate.from_crystal(c) for c in crystals])
    assert all(r.status == "ok" for r in results)
    assert [r.targets["e_above_hull"] for r in results] == pytest.approx(list(table["e_above_hull"]), abs=1e-6)


def test_unknown_material_is_a_failed_result_not_an_error(mp20_dir: Path) -> None:
    from tests.oracles.helpers import nacl_crystal

    odd = nacl_crystal(id="odd", counts={"Na": 4, "Cl": 4})
    res = ReplayOracle(dataset=str(mp20_dir)).evaluate([Candidate.from_crystal(odd)])[0]
    assert res.status in ("ok", "failed")
    missing = ReplayOracle(dataset="/nonexistent.csv").evaluate([Candidate.from_crystal(odd)])[0]
    assert missing.status == "failed" and "not found" in missing.message
