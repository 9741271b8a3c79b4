"""Sanity gates (:mod:`oracles.sanity`) and the CHGNet oracle refusing unphysical cells.

Before the gates, cells of up to 13,500 Å³/atom came back ``ok`` from CHGNet at +1.1 to +1.7 eV/atom
(isolated atoms, zero relaxation steps).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from oracles.base import Candidate
from oracles.chgnet import CHGNetOracle
from oracles.relax import load_chgnet_model
from oracles.sanity import (
    MAX_VOLUME_PER_ATOM_A3,
    MIN_VOLUME_PER_ATOM_A3,
    Gates,
    check_structure,
    check_volume,
    isolated_atoms,
    model_cutoff,
)
from tests.oracles.helpers import FaultFactory, nacl_crystal, rocksalt, small_structures


def nacl_30() -> Structure:
    """Rock-salt NaCl with a = 30 Å (conventional cell, 8 atoms): Na-Cl 15 Å apart, 3,375 Å³/atom."""
    return Structure.from_spacegroup(225, Lattice.cubic(30.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def lone_atom() -> Structure:
    """Seven atoms in a corner of a 14 Å cube and one Cl at its centre, 9.2 Å from the nearest:
    343 Å³/atom (inside the volume bounds), so only the neighbour gate can refuse it."""
    corner = [[0, 0, 0], [2.8, 0, 0], [0, 2.8, 0], [0, 0, 2.8], [2.8, 2.8, 0], [2.8, 0, 2.8], [0, 2.8, 2.8]]
    species = ["Na", "Cl", "Cl", "Cl", "Na", "Na", "Na", "Cl"]
    return Structure(Lattice.cubic(14.0), species, [*corner, [7.0, 7.0, 7.0]], coords_are_cartesian=True)


def test_bounds_hold_every_mp20_crystal(mp20_dir: Path) -> None:
    import pandas as pd

    for path in sorted(p for p in mp20_dir.glob("*.csv*") if "cif" in p.name):
        for cif in pd.read_csv(path)["cif"]:
            s = Structure.from_str(cif, fmt="cif")
            assert check_structure(s) is None, (path.name, s.composition.reduced_formula)


def test_volume_gate_names_the_volume_and_the_bound() -> None:
    assert check_volume(20.0 * 4, 4) is None
    big = check_volume(13_500.0, 1)
    assert big is not None and "13500.0 Å³/atom" in big and f"{MAX_VOLUME_PER_ATOM_A3:g} Å³/atom" in big
    small = check_volume(2.0 * 8, 8)
    assert small is not None and "2.00 Å³/atom" in small and f"{MIN_VOLUME_PER_ATOM_A3:g}" in small
    assert check_volume(float("nan"), 2) is not None and check_volume(10.0, 0) is not None
    assert check_volume(1000.0, 1, gates=Gates(max_volume_per_atom_A3=2000.0)) is None


def test_neighbour_gate_names_the_isolated_atom() -> None:
    s = lone_atom()
    assert isolated_atoms(s, cutoff_A=6.0) == [7]
    reason = check_structure(s, gates=Gates(cutoff_A=6.0, cutoff_source="test"))
    assert reason is not None and "atom 7 (Cl)" in reason and "within 6 Å" in reason and "(test)" in reason
    assert check_structure(s, gates=Gates(cutoff_A=10.0)) is None  # 9.2 Å away: within a 10 Å cutoff
    # one atom per cell: its own periodic images are its neighbours
    assert isolated_atoms(Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]]), cutoff_A=6.0) == []


def test_near_equilibrium_cells_pass() -> None:
    for name, s in small_structures().items():
        assert check_structure(s) is None, name


def test_cutoff_is_read_from_the_chgnet_model() -> None:
    model = load_chgnet_model("cpu")
    assert model_cutoff(model) == pytest.approx(model.graph_converter.atom_graph_cutoff) == pytest.approx(6.0)
    assert model_cutoff(object()) is None


@pytest.mark.parametrize("mode", ["relax", "static"])
def test_chgnet_refuses_a_30_angstrom_nacl_cell(mode: str, mp20_dir: Path) -> None:
    oracle = CHGNetOracle(workers=0, mode=mode, steps=40, mp20_dir=str(mp20_dir))
    batch = [Candidate.from_structure(nacl_30(), id="nacl-30"), Candidate.from_crystal(nacl_crystal(id="table-30", a=30.0)),
             Candidate.from_structure(lone_atom(), id="lone"),
             Candidate.from_structure(rocksalt("Na", "Cl", 5.69), id="nacl")]
    results = {r.candidate_id: r for r in oracle.evaluate(batch)}
    for cid in ("nacl-30", "table-30"):
        r = results[cid]
        assert r.status == "invalid" and not r.targets and r.n_steps == 0, (cid, r.status, r.message)
        assert r.message.startswith("unphysical input structure: volume per atom 3375.0 Å³/atom"), r.message
    assert results["lone"].status == "invalid" and "atom 7 (Cl)" in results["lone"].message
    assert "atom-graph cutoff" in results["lone"].message
    assert results["nacl"].status == "ok"
    for r in results.values():
        assert r.provenance["sanity_gates"]["neighbor_cutoff_A"] == pytest.approx(6.0)
        assert r.provenance["reference"] == "mp20+matbench"


def test_chgnet_refuses_a_relaxation_that_ends_exploded(mp20_dir: Path) -> None:
    """An injected outward stress blows the cell up; with the volume-change limit lifted, the gate on the
    relaxed structure must still refuse it (the input passed). ``FaultFactory`` injects its fault at the ASE
    calculator, so the ASE engine is asked for (the batched engine's own exploding structure is in
    tests/oracles/test_batched.py)."""
    oracle = CHGNetOracle(engine="ase", workers=0, steps=60, max_volume_change=1e6, mp20_dir=str(mp20_dir),
                          calculator_factory=FaultFactory({"NaCl": "explode"}))
    r = oracle.evaluate([Candidate.from_structure(rocksalt("Na", "Cl", 5.69), id="boom")])[0]
    assert r.status == "invalid" and r.message.startswith("unphysical final structure: volume per atom"), r.message
    assert not r.targets and r.n_steps > 0 and r.structure_cif
