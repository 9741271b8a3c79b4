"""Loaders on real slices of the shipped data (MP-20, OBELiX, composition-only) and on user files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Structure

from discovery.crystal import write_crystal_table
from discovery.datasets import (
    EXACT_COUNTS_KEY,
    MP20_TARGETS,
    load_cif_folder,
    load_composition_only,
    load_crystal_csv,
    load_mp20,
    load_obelix,
    parse_conductivity,
)
from discovery.datasets.mp20 import build_mp20_table, raw_path


@pytest.fixture(scope="module")
def mp20_val():
    return load_mp20("val", list(MP20_TARGETS))


def test_mp20_val_loads_every_row_with_three_targets(mp20_val):
    data, report = mp20_val
    assert len(data) == 318 and data.targets.shape == (318, 3)
    assert data.target_names == MP20_TARGETS
    assert report.n_read == 318 and report.n_skipped == 0
    # formation energies in eV/atom and non-negative gaps, as in MP
    assert data.targets[:, 0].min() > -5 and data.targets[:, 0].max() < 0.5
    assert (data.targets[:, 1] >= 0).all()


def test_mp20_table_matches_cifs_recomputed_as_conventional_cells(mp20_val):
    data, _ = mp20_val
    raw = pd.read_csv(raw_path("val")).iloc[:12]
    rebuilt, report = build_mp20_table(raw)
    assert report.n_skipped == 0
    shipped = {c.id: c for c in data.crystals}
    for row in rebuilt.to_dict("records"):
        c = shipped[row["id"]]
        assert c.space_group == row["space_group"] == row["mp_space_group"]
        assert c.formula == row["composition"]
        assert np.allclose(c.lattice, [row[k] for k in ("a", "b", "c", "alpha", "beta", "gamma")], rtol=1e-5)


def test_mp20_conventional_cells_are_not_skewed_primitive_cells(mp20_val):
    data, _ = mp20_val
    raw = pd.read_csv(raw_path("val"), usecols=["material_id", "alpha", "nsites", "spacegroup_number"])
    by_id = {c.id: c for c in data.crystals}
    fcc = raw[raw.spacegroup_number.isin([225, 227])].iloc[0]
    crystal = by_id[fcc.material_id]
    assert crystal.lattice[3:] == pytest.approx((90, 90, 90))  # primitive cell had 60°
    assert crystal.n_atoms == 4 * fcc.nsites  # F-centred: 4 primitive cells
    # rhombohedral groups in hexagonal axes
    for c in data.crystals:
        if c.space_group in (146, 148, 155, 160, 161, 166, 167):
            assert c.gamma == pytest.approx(120, abs=1e-3)
    assert raw.alpha.min() < 30  # the stored cells can be very skewed ...
    assert min(min(c.lattice[3:]) for c in data.crystals) > 45  # ... the conventional ones are not


def test_mp20_rejects_unknown_target_and_split():
    with pytest.raises(ValueError, match="band_gap"):
        load_mp20("val", "bandgap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        load_mp20("test")  # type: ignore[arg-type]


def test_parse_conductivity_handles_bounds():
    assert parse_conductivity("<1E-10") == (-10.0, True)
    assert parse_conductivity("1.58489e-06")[0] == pytest.approx(math.log10(1.58489e-06))
    with pytest.raises(ValueError):
        parse_conductivity("n/a")
    with pytest.raises(ValueError):
        parse_conductivity("0")


def test_obelix_keeps_partial_occupancies_as_exact_fractions():
    data, report = load_obelix()
    assert len(data) == 478 and report.n_skipped == 0
    assert data.target_names == ("log10_conductivity",)
    assert sum(v for k, v in report.notes.items() if k.startswith("censored")) == 29
    assert sum(v for k, v in report.notes.items() if k.startswith("partial occupancy")) == 256
    assert data.targets.min() > -20 and data.targets.max() < 0
    frac = [c for c in data.crystals if EXACT_COUNTS_KEY in c.extra]
    assert len(frac) == 256
    c = frac[0]
    exact = c.extra[EXACT_COUNTS_KEY]
    assert isinstance(exact, dict) and set(exact) == set(c.counts)
    assert any(abs(v - round(v)) > 1e-6 for v in exact.values())


def test_obelix_skip_mode_reports_partial_occupancies():
    data, report = load_obelix(partial_occupancy="skip")
    assert report.counts() == {"partial occupancy": 256}
    assert len(data) == 478 - 256 and report.n_kept == len(data)


def test_composition_only_excludes_evaluation_formulas():
    first, _ = load_composition_only("gap", max_rows=3000)
    held_out = [first.formulas[i] for i in (0, 10, 100)]
    data, report = load_composition_only("gap", exclude_formulas=held_out, max_rows=3000)
    assert report.counts()["reserved for evaluation"] >= 3
    assert len(data) + report.n_skipped == report.n_read == 3000
    reduced = {Composition(f).reduced_formula for f in data.formulas}
    assert not reduced & {Composition(f).reduced_formula for f in held_out}
    assert data.targets.shape == (len(data), 1) and (data.targets >= 0).all()


def test_crystal_csv_reports_every_bad_row(tmp_path, mp20_val):
    data, _ = mp20_val
    crystals = data.crystals[:8]
    path = write_crystal_table(crystals, tmp_path / "t.csv", extra={"y": list(data.targets[:8, 1])})
    frame = pd.read_csv(path, dtype={"id": str})
    frame.loc[1, "space_group"] = 999
    frame.loc[2, "y"] = np.nan
    frame.loc[3, "composition"] = "Am2 O3"  # Z = 95, outside the vocabulary
    frame["a"] = frame["a"].astype(object)
    frame.loc[4, "a"] = "abc"
    frame.to_csv(path, index=False)
    loaded, report = load_crystal_csv(path, "y")
    assert len(loaded) == 4 and report.n_read == 8
    assert report.counts() == {"bad crystal field": 2, "missing target": 1, "element outside vocabulary": 1}
    assert loaded.targets[:, 0] == pytest.approx(data.targets[[0, 5, 6, 7], 1])
    with pytest.raises(ValueError, match="no label column"):
        load_crystal_csv(path, "nope")


def test_cif_folder_with_labels(tmp_path):
    raw = pd.read_csv(raw_path("val")).iloc[:4]
    for rec in raw.to_dict("records"):
        (tmp_path / f"{rec['material_id']}.cif").write_text(rec["cif"])
    disordered = Structure.from_str(raw.cif.iloc[0], fmt="cif")
    disordered.replace_species({disordered.species[0]: {disordered.species[0]: 0.5, "Na": 0.5}})
    disordered.to(filename=str(tmp_path / "disordered.cif"))
    (tmp_path / "broken.cif").write_text("data_broken\n_cell_length_a oops\n")
    ids = [*raw.material_id, "disordered", "broken", "absent"]
    labels = pd.DataFrame({"id": ids, "gap": [*raw.band_gap, 1.0, 1.0, 1.0]})
    labels.loc[3, "gap"] = np.nan
    labels.to_csv(tmp_path / "labels.csv", index=False)
    data, report = load_cif_folder(tmp_path, tmp_path / "labels.csv", "gap")
    assert len(data) == 3
    assert report.counts() == {"missing target": 1, "partial occupancy": 1, "unparsable CIF": 1, "no CIF": 1}
    assert [c.space_group for c in data.crystals] == list(raw.spacegroup_number[:3])
    assert "no CIF: 1" in report.summary()
