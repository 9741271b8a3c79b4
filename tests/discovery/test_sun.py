"""S.U.N. labels on constructed cases: known MP-20 structures are not novel, two packings of one structure
are one unique, a non-ok result is never stable/S.U.N./a hit, a molecular packing is 0-D and not S.U.N.,
and the relaxed space group is measured on the structure, not copied from the sampled one."""

from __future__ import annotations

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from discovery.datasets.base import DATA_DIR
from discovery.datasets.reference_structures import ReferenceStructures, load_reference_structures
from discovery.sun import (
    SunInput,
    SunLabeler,
    SunSettings,
    count,
    dimensionality,
    is_hit,
    relaxed_space_group,
)


def rock_salt(a: float = 5.64, species: tuple[str, str] = ("Na", "Cl")) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def n2_packing() -> Structure:
    """Four N2 molecules (1.10 Å bonds) in a 6 Å cubic box, ≥ 3 Å apart: a molecular crystal."""
    x = 1.10 / 6.0
    coords: list[list[float]] = [[0, 0, 0], [x, 0, 0], [0.5, 0.5, 0], [0.5 + x, 0.5, 0],
              [0.5, 0, 0.5], [0.5, x, 0.5], [0, 0.5, 0.5], [0, 0.5, 0.5 + x]]
    return Structure(Lattice.cubic(6.0), ["N"] * 8, coords)


def item(cid: str, s: Structure | None, *, status: str = "ok", e_hull: float | None = 0.0, round_index: int = 0,
         sampled: int | None = None) -> SunInput:
    return SunInput(cid, round_index, status, e_hull, s, sampled)


def test_is_hit_needs_status_ok_and_a_finite_value_in_bounds() -> None:
    assert is_hit("ok", 0.05, at_most=0.1) and not is_hit("ok", 0.2, at_most=0.1)
    for status in ("unconverged", "failed", "invalid", "timeout"):
        assert not is_hit(status, -1.0, at_most=0.1)
    assert not is_hit("ok", None, at_most=0.1) and not is_hit("ok", float("nan"), at_most=0.1)
    assert is_hit("ok", 2.0, at_least=1.5) and not is_hit("ok", 1.0, at_least=1.5)


def test_a_known_mp20_structure_is_neither_a_novel_formula_nor_a_novel_structure() -> None:
    row = pd.read_csv(DATA_DIR / "mp20" / "mp20_val_cif.csv.gz", nrows=1).iloc[0]
    known = Structure.from_str(row["cif"], fmt="cif")
    moved = known.copy()
    moved.translate_sites(list(range(len(moved))), [0.13, 0.07, 0.31])  # another origin, same crystal
    labeler = SunLabeler(known_formulas=set(), reference=load_reference_structures())
    first, second = labeler.label_all([item("a", known), item("b", moved, round_index=1)])
    for lab in (first, second):
        assert not lab.novel_formula and not lab.novel_structure and not lab.sun and lab.converged and lab.stable
    assert first.match == row["material_id"] and first.unique and not second.unique


def test_a_li_fe_o_reference_structure_is_known() -> None:
    ref = load_reference_structures(("li-fe-o",))
    assert "LiFeO2" in ref.formulas()
    ident, s = ref.get("LiFeO2")[0]
    lab = SunLabeler(known_formulas=set(), reference=ref).label(item("x", s))
    assert not lab.novel_structure and not lab.novel_formula and not lab.sun and lab.match == ident


def test_two_packings_of_one_structure_are_one_unique() -> None:
    base = rock_salt(4.2, ("Mg", "O")).get_primitive_structure()
    packings = [base.copy() * (2, 1, 1), base.copy()]
    reordered = Structure.from_sites(list(reversed(packings[0].sites)))  # permuted sites
    reordered.translate_sites(list(range(len(reordered))), [0.25, 0.1, 0.0])
    labeler = SunLabeler(known_formulas=set())  # no reference: novelty only against the campaign
    labels = labeler.label_all([item("first", packings[1]), item("supercell", packings[0]),
                                item("permuted", reordered, round_index=1)])
    assert [x.unique for x in labels] == [True, False, False]
    assert [x.sun for x in labels] == [True, False, False]
    # same round: still novel (not known before the round) but not unique; a later round: not novel either
    assert labels[1].novel_structure and not labels[2].novel_structure
    assert labels[1].match == "first" and labels[2].match == "first"
    assert count(labels).sun == 1 and count(labels).unique == 1


def test_a_distinct_polymorph_of_the_same_formula_stays_unique() -> None:
    salt = rock_salt(5.0, ("Li", "Cl"))
    cscl = Structure(Lattice.cubic(3.2), ["Li", "Cl"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    labels = SunLabeler(known_formulas=set()).label_all([item("rs", salt), item("cs", cscl)])
    assert all(x.unique and x.novel_structure and x.novel_formula and x.sun for x in labels)


def test_a_known_formula_without_shipped_structures_is_never_novel() -> None:
    """LiCl is a known compound (its formula is in the hull reference) but no LiCl structure is shipped:
    novelty cannot be checked, so neither polymorph counts as novel or S.U.N."""
    salt = rock_salt(5.0, ("Li", "Cl"))
    cscl = Structure(Lattice.cubic(3.2), ["Li", "Cl"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    labels = SunLabeler(known_formulas={"LiCl"}).label_all([item("rs", salt), item("cs", cscl)])
    assert all(x.unique and not x.novel_structure and not x.novel_formula and not x.sun for x in labels)


@pytest.mark.parametrize("status", ["unconverged", "failed", "timeout", "invalid"])
def test_a_non_ok_result_is_never_stable_sun_or_a_hit(status: str) -> None:
    labeler = SunLabeler(known_formulas=set())
    lab = labeler.label(item("u", rock_salt(4.2, ("Mg", "O")), status=status, e_hull=-0.3))
    assert not lab.converged and not lab.stable and not lab.sun and not is_hit(status, -0.3, at_most=0.1)
    assert lab.relaxed_space_group == 225  # structural labels are still measured
    # ... but its structure never enters the campaign's matcher groups: a later ok copy is unique
    later = labeler.label(item("ok", rock_salt(4.2, ("Mg", "O"))))
    assert later.unique and later.sun
    assert count([lab, later]).stable == 1 and count([lab]).converged == 0


def test_a_result_without_structure_has_no_structural_labels() -> None:
    lab = SunLabeler(known_formulas=set()).label(item("f", None, status="failed", e_hull=None, sampled=12))
    assert (lab.converged, lab.stable, lab.novel_structure, lab.unique, lab.sun) == (False,) * 5
    assert lab.dimensionality is None and lab.relaxed_space_group is None and lab.sampled_space_group == 12


def test_a_molecular_packing_is_zero_dimensional_and_not_sun() -> None:
    mol = n2_packing()
    assert dimensionality(mol) == 0 and dimensionality(rock_salt()) == 3
    lab = SunLabeler(known_formulas=set()).label(item("n2", mol, e_hull=-0.5))
    assert lab.dimensionality == 0 and lab.stable and lab.novel_structure and lab.unique and not lab.sun
    assert count([lab]).zero_dimensional_hits == 1 and count([lab]).sun == 0
    included = SunLabeler(known_formulas=set(), settings=SunSettings(zero_dimensional="include")).label(item("n2", mol))
    assert included.sun


def test_relaxed_space_group_of_rock_salt_is_225_whatever_was_sampled() -> None:
    salt = rock_salt()
    p1 = Structure(salt.lattice, salt.species, salt.frac_coords)  # same atoms, no symmetry information kept
    assert relaxed_space_group(p1) == 225
    lab = SunLabeler(known_formulas={"NaCl"}).label(item("nacl", p1, sampled=1))
    assert (lab.relaxed_space_group, lab.sampled_space_group) == (225, 1)
    shaken = p1.copy()
    shaken.perturb(0.02, min_distance=0.01, seed=0)  # a relaxation's noise stays within symprec 0.1 Å
    assert relaxed_space_group(shaken) == 225


def test_stability_uses_the_given_bound() -> None:
    labeler = SunLabeler(known_formulas=set(), settings=SunSettings(stable_at_most=0.0))
    assert not labeler.label(item("a", rock_salt(), e_hull=0.05)).stable
    assert SunLabeler(known_formulas=set()).label(item("b", rock_salt(), e_hull=0.05)).stable


def test_reference_index_from_structures_parses_by_formula() -> None:
    ref = ReferenceStructures.from_structures([("rs", rock_salt()), ("mgo", rock_salt(4.2, ("Mg", "O")))])
    assert ref.formulas() == {"NaCl", "MgO"} and len(ref) == 2 and ref.get("KF") == []
    lab = SunLabeler(known_formulas=set(), reference=ref).label(item("x", rock_salt() * (1, 1, 2)))
    assert lab.match == "rs" and not lab.novel_structure and not lab.novel_formula
