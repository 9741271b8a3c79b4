"""Elemental reference states of the GPAW job: crystals from ASE, diatomic molecules for gases and halogens."""

from __future__ import annotations

import numpy as np
import pytest

from oracles.dft.gpaw_job import HALOGEN_BOND_A, MOLECULE_BOX_A, reference_atoms

P = {"kpts": None, "spin": "none", "relax_cell": True, "kpoint_density": 3.0}


@pytest.mark.parametrize(("symbol", "bond", "spin"), [("O", 1.21, "collinear"), ("N", 1.10, "none"),
                                                      ("F", 1.42, "none"), ("Cl", HALOGEN_BOND_A["Cl"], "none")])
def test_gases_and_halogens_are_molecules_in_a_box(symbol: str, bond: float, spin: str) -> None:
    atoms, params, what = reference_atoms(symbol, P)
    assert atoms.get_chemical_symbols() == [symbol, symbol] and "molecule" in what
    assert np.isclose(atoms.get_distance(0, 1), bond) and np.allclose(atoms.cell.lengths(), MOLECULE_BOX_A)
    assert params["kpts"] == [1, 1, 1] and params["relax_cell"] is False and params["spin"] == spin
    if symbol == "O":  # triplet O2
        assert list(atoms.get_initial_magnetic_moments()) == [1.0, 1.0]


def test_solids_use_the_ase_reference_crystal() -> None:
    atoms, params, what = reference_atoms("Na", P)
    assert set(atoms.get_chemical_symbols()) == {"Na"} and "crystal" in what and params["kpts"] is None
    with pytest.raises(ValueError):  # no atomic basis for S8 in ASE: no formation energy, said in provenance
        reference_atoms("S", P)
