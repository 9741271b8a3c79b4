"""Reference data, MP2020 formation energies and hull distances (numbers pinned to MP's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.core import Composition

from oracles.reference import (
    ReferenceDataError,
    elemental_references,
    load_reference,
    mp2020_parameters,
)


def _lowest(ref, formula: str) -> float:
    return min(e.e_form for e in ref.entries if e.composition.reduced_formula == formula)


def test_lifeo_phase_diagram_reproduces_mp_formation_energies() -> None:
    ref = load_reference("li-fe-o")
    assert _lowest(ref, "Fe2O3") == pytest.approx(-1.71, abs=0.01)
    assert _lowest(ref, "Li2O") == pytest.approx(-2.06, abs=0.01)
    diagram = ref.phase_diagram(frozenset({"Li", "Fe", "O"}))
    stable = {e.composition.reduced_formula for e in diagram.stable_entries}
    assert {"Fe2O3", "FeO", "Li2O", "Li2O2", "LiFeO2", "Li5FeO4", "Li2FeO3", "Li", "Fe", "O2"} <= stable
    # pymatgen's own formation energy from the diagram agrees with ours (same elemental references)
    fe2o3 = min((e for e in diagram.stable_entries if e.composition.reduced_formula == "Fe2O3"),
                key=lambda e: e.energy_per_atom)
    assert diagram.get_form_energy_per_atom(fe2o3) == pytest.approx(-1.71, abs=0.01)


def test_e_above_hull_is_signed_against_the_reference() -> None:
    ref = load_reference("li-fe-o")
    fe2o3 = Composition("Fe2O3")
    assert ref.e_above_hull(fe2o3, -1.71) == pytest.approx(0.0, abs=0.01)
    assert ref.e_above_hull(fe2o3, -1.61) == pytest.approx(0.1, abs=0.01)
    assert ref.e_above_hull(fe2o3, -1.81) == pytest.approx(-0.1, abs=0.01)  # below the hull: negative


def test_mp2020_declares_gga_plus_u_like_mp() -> None:
    params = mp2020_parameters(Composition("Fe2O3"))
    assert params["run_type"] == "GGA+U" and params["hubbards"] == {"Fe": 5.3}
    assert mp2020_parameters(Composition("FeSi"))["run_type"] == "GGA"  # no U without O/F


def test_elemental_references_cover_the_crystal_gfn_elements() -> None:
    mu = elemental_references()
    for el in ["H", "Li", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "V", "Mn", "Fe", "Co", "Ni", "Cu", "Se"]:
        assert el in mu and mu[el] < 0


def test_default_reference_records_its_sources(mp20_dir: Path) -> None:
    ref = load_reference("mp20+li-fe-o", mp20_dir=mp20_dir)
    prov = ref.provenance()
    assert prov["reference"] == "mp20+li-fe-o" and prov["n_reference_entries"] > 2500
    assert any("Li-Fe-O" in f for f in prov["reference_files"]) and any("mp20" in f for f in prov["reference_files"])
    assert "MaterialsProject2020Compatibility" in prov["correction_scheme"] and prov["pymatgen"]


def test_missing_mp20_tables_fail_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ReferenceDataError, match="MP-20 reference entries not found"):
        load_reference("mp20+li-fe-o", mp20_dir=tmp_path)


def test_dense_reference_puts_matbench_on_the_mp2020_scale() -> None:
    ref = load_reference("mp20+matbench")
    prov = ref.provenance()
    assert prov["reference"] == "mp20+matbench" and prov["matbench_entries"] > 120_000
    assert any("matbench_mp_e_form" in f for f in prov["reference_files"])
    # the per-element fit moves MatBench's legacy corrections onto MP2020 (checked on the shared formulas)
    assert prov["matbench_scale_fit_formulas"] > 2000
    assert prov["matbench_scale_mae_after_eV_per_atom"] < 0.6 * prov["matbench_scale_mae_before_eV_per_atom"]
    # Li-Fe-O stays MP's exact MP2020 system: MatBench does not add entries there
    assert not [e for e in ref.system_entries(frozenset({"Li", "Fe", "O"})) if e.id.startswith("matbench")]
    assert ref.e_above_hull(Composition("Fe2O3"), -1.71) == pytest.approx(0.0, abs=0.01)
    # systems absent from MP-20 get their MP phases: MgF2 and NaCl lie on the hull within the scale residual
    assert load_reference("mp20+li-fe-o").e_above_hull(Composition("MgF2"), -3.70) < -3.0
    for formula, mp2020_e_form in (("MgF2", -3.80), ("NaCl", -2.10)):
        assert ref.hull_energy_per_atom(Composition(formula)) == pytest.approx(mp2020_e_form, abs=0.08)
    # every hull energy is a formation energy of the hull: ≤ 0, and e_above_hull is measured from it
    c = Composition("Na2Cl6")
    h = ref.hull_energy_per_atom(c)
    assert h <= 0 and ref.e_above_hull(c, h + 0.25) == pytest.approx(0.25, abs=1e-6)
    assert ref.phase_diagram(frozenset({"Na", "Cl"})) is ref.phase_diagram(frozenset({"Na", "Cl"}))  # cached


def test_system_entries_are_the_entries_within_the_elements() -> None:
    ref = load_reference("li-fe-o")
    subsystem = ref.system_entries(frozenset({"Fe", "O"}))
    assert subsystem and {el.symbol for e in subsystem for el in e.composition.elements} <= {"Fe", "O"}
    assert len(ref.system_entries(frozenset({"Li", "Fe", "O"}))) == len(ref.entries)


@pytest.mark.slow
def test_dense_reference_reproduces_mp_hull_distances_better_than_mp20_alone() -> None:
    from oracles.reference import check_against_mp20

    sparse, dense = check_against_mp20("mp20+li-fe-o"), check_against_mp20("mp20+matbench")
    assert sparse["entries"] == dense["entries"] == 2369
    assert dense["mae_e_above_hull_eV_per_atom"] < 0.8 * sparse["mae_e_above_hull_eV_per_atom"]
    assert dense["share_within_0p05"] > 0.95 and dense["pearson_r"] > sparse["pearson_r"]


def test_the_dense_reference_is_the_default_everywhere() -> None:
    from oracles.chgnet import CHGNetSettings
    from oracles.dft.settings import DFTSettings
    from oracles.reference import DEFAULT_REFERENCE

    assert DEFAULT_REFERENCE == "mp20+matbench"
    assert CHGNetSettings().reference == DFTSettings().reference == DEFAULT_REFERENCE
    assert load_reference() is load_reference("mp20+matbench")  # built once per process
    assert load_reference().provenance()["reference"] == "mp20+matbench"
