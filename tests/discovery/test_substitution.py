"""Substitution candidates: chemistry, symmetry, search-space checks, ranking and learned rates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import spglib
from hypothesis import given, settings
from hypothesis import strategies as st
from pymatgen.analysis.structure_prediction.volume_predictor import RLSVolumePredictor
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from discovery.chemistry import PAPER_ELEMENTS, is_smact_valid
from discovery.datasets.structures import crystal_from_structure
from discovery.gfn import SearchSpace
from discovery.substitution import (
    Parent,
    Proposal,
    SubstitutionRates,
    isovalent_pairs,
    propose_substitutions,
    seed_parents,
)

BENCH = SearchSpace(
    elements=("H", "Li", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "V", "Mn", "Fe",
              "Co", "Ni", "Cu", "Se"),
    min_elements=2, max_elements=3, max_atoms_per_element=8, max_atoms=12,
    length_range=(3.0, 9.0), angle_range=(60.0, 120.0),
)


def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def li3n() -> Structure:
    """Li₃N (P6/mmm): Li on two orbits, 1b (0, 0, ½) and 2c (⅓, ⅔, 0); N on 1a."""
    return Structure.from_spacegroup("P6/mmm", Lattice.hexagonal(3.65, 3.87), ["Li", "Li", "N"],
                                     [[0, 0, 0.5], [1 / 3, 2 / 3, 0], [0, 0, 0]])


@pytest.fixture(scope="module")
def parents() -> list[Parent]:
    return seed_parents(space=BENCH)


@pytest.fixture(scope="module")
def proposals(parents: list[Parent]) -> list[Proposal]:
    return propose_substitutions(parents, space=BENCH, n=60, seed=3)


# ------------------------------------------------------------------------------------------------ chemistry


def test_isovalent_pairs_are_symmetric_and_chemical() -> None:
    pairs = isovalent_pairs(PAPER_ELEMENTS)
    assert set(pairs) == set(PAPER_ELEMENTS)
    for a, partners in pairs.items():
        assert a not in partners
        for b in partners:
            assert a in pairs[b], (a, b)
    assert {"Li", "K"} <= set(pairs["Na"]) and "Cl" not in pairs["Na"]
    assert {"S", "Se"} <= set(pairs["O"]) and "F" not in pairs["O"]
    assert pairs["Cl"] == ("F",)
    # without the data-mined test, sharing an oxidation state alone is far more permissive
    loose = isovalent_pairs(PAPER_ELEMENTS, min_lambda=None)
    assert all(set(pairs[e]) <= set(loose[e]) for e in PAPER_ELEMENTS)
    assert sum(map(len, loose.values())) > sum(map(len, pairs.values()))


# ------------------------------------------------------------------------------------------------ known cases


def test_rock_salt_full_substitutions_keep_sites_and_rescale_like_pymatgen_rls() -> None:
    parent = Parent("nacl", nacl(), 0.0, "seed")
    props = propose_substitutions([parent], space=BENCH, n=50, seed=0, thompson=False)
    by_formula = {p.crystal.reduced_formula(): p for p in props}
    assert set(by_formula) == {"KCl", "LiCl", "CuCl", "NaF"}  # Na⁺ → K⁺, Li⁺, Cu⁺; Cl⁻ → F⁻
    kcl = by_formula["KCl"]
    assert kcl.id == "nacl:Na-K" and kcl.parent_id == "nacl"
    assert kcl.substitutions == (("Na", "K"),) and not kcl.partial
    assert kcl.crystal.space_group == 225 and kcl.crystal.counts == {"K": 4, "Cl": 4}
    sym = SpacegroupAnalyzer(kcl.structure, symprec=0.1).get_symmetrized_structure()
    assert sorted((s[0].specie.symbol, w) for s, w in zip(sym.equivalent_sites, sym.wyckoff_symbols, strict=True)) \
        == [("Cl", "4b"), ("K", "4a")]
    np.testing.assert_allclose(kcl.structure.frac_coords, parent.structure.frac_coords)
    # the volume rule is pymatgen's reference lattice scaling with ionic radii: 1.43 × (experiment: 1.39)
    ref, new = parent.structure.copy(), kcl.structure.copy()
    ref.add_oxidation_state_by_element({"Na": 1, "Cl": -1})
    new.add_oxidation_state_by_element({"K": 1, "Cl": -1})
    expected = RLSVolumePredictor(check_isostructural=False, use_bv=False).predict(new, ref)
    assert kcl.structure.volume == pytest.approx(expected, rel=1e-9)
    assert 1.35 < kcl.structure.volume / parent.structure.volume < 1.5
    assert kcl.crystal == crystal_from_structure(kcl.structure, id=kcl.id)


def test_partial_substitution_replaces_one_orbit_and_keeps_the_symmetry() -> None:
    parent = Parent("li3n", li3n(), 0.0, "seed")
    props = {p.id: p for p in propose_substitutions([parent], space=BENCH, n=50, seed=0)}
    one, two = props["li3n:Li-Na-o0"], props["li3n:Li-Na-o1"]  # Na on 1b, Na on 2c
    full = props["li3n:Li-Na"]
    assert one.partial and two.partial and not full.partial
    assert one.crystal.counts == {"Li": 2, "Na": 1, "N": 1}
    assert two.crystal.counts == {"Li": 1, "Na": 2, "N": 1}
    assert full.crystal.counts == {"Na": 3, "N": 1}
    for p in (one, two, full):
        assert p.crystal.space_group == 191
        assert p.substitutions == (("Li", "Na"),)
    sym = SpacegroupAnalyzer(one.structure, symprec=0.1).get_symmetrized_structure()
    wyckoff = {s[0].specie.symbol: w for s, w in zip(sym.equivalent_sites, sym.wyckoff_symbols, strict=True)}
    assert wyckoff == {"Na": "1b", "Li": "2c", "N": "1a"}


def _keeps_operations(parent: Structure, child: Structure) -> bool:
    """Every symmetry operation of ``parent`` (spglib, 0.1 Å) maps ``child`` onto itself, species included."""
    ops = spglib.get_symmetry((parent.lattice.matrix.tolist(), parent.frac_coords.tolist(), list(parent.atomic_numbers)),
                              symprec=0.1)
    assert ops is not None
    frac, z = child.frac_coords, np.array(child.atomic_numbers)
    tol = 0.1 / max(child.lattice.abc)
    for rot, trans in zip(ops["rotations"], ops["translations"], strict=True):
        moved = frac @ rot.T + trans
        diff = moved[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        match = (np.abs(diff) < 3 * tol).all(axis=2) & (z[:, None] == z[None, :])
        if not match.any(axis=1).all():
            return False
    return True


def test_partial_proposals_from_seed_parents_keep_the_parent_operations(parents: list[Parent]) -> None:
    by_id = {p.id: p for p in parents}
    props = [p for p in propose_substitutions(parents, space=BENCH, n=300, seed=1) if p.partial]
    assert len(props) >= 5  # rare in this space: most multi-orbit parents already have 3 elements
    for p in props:
        parent = by_id[p.parent_id]
        assert _keeps_operations(parent.structure, p.structure), p.id
        (old, new), = p.substitutions
        before = parent.structure.composition
        after = p.structure.composition
        assert 0 < after[new] < before[old] and after[old] + after[new] == before[old], p.id
        assert all(after[el] == before[el] for el in before.elements if str(el) != old)


# ------------------------------------------------------------------------------------------------ properties


def test_proposals_are_valid_in_space_distinct_and_as_stated(parents: list[Parent], proposals: list[Proposal]) -> None:
    assert len(proposals) == 60
    by_id = {p.id: p for p in parents}
    keys = {(p.crystal.reduced_formula(), p.crystal.space_group) for p in proposals}
    assert len(keys) == len(proposals) == len({p.id for p in proposals})
    priors = [p.prior for p in proposals]
    assert priors == sorted(priors, reverse=True) and all(0 < x <= 1 for x in priors)
    for p in proposals:
        c = p.crystal
        assert is_smact_valid(c.counts), p.id
        assert set(c.counts) <= set(BENCH.elements)
        assert 2 <= len(c.counts) <= 3 and c.n_atoms <= 12 and max(c.counts.values()) <= 8
        assert p.crystal.id == p.id and len(p.id) <= 120 and p.id.startswith(p.parent_id + ":")
        assert p.substitutions == tuple(sorted(p.substitutions))
        parent = by_id[p.parent_id].structure
        if not p.partial:  # the parent's composition with each old element renamed
            mapping = dict(p.substitutions)
            renamed = Composition({mapping.get(str(el), str(el)): n for el, n in parent.composition.items()})
            assert renamed == p.structure.composition, p.id
            assert c.space_group == crystal_from_structure(parent).space_group
        assert len(p.structure) == len(parent)
        assert 0.5 - 1e-9 <= p.structure.volume / parent.volume <= 2.0 + 1e-9
    again = propose_substitutions(parents, space=BENCH, n=60, seed=3)
    assert [p.id for p in again] == [p.id for p in proposals]
    assert [p.prior for p in again] == priors
    other = propose_substitutions(parents, space=BENCH, n=60, seed=4)
    assert [p.id for p in other] != [p.id for p in proposals]


def test_exclude_formulas_and_space_groups(parents: list[Parent], proposals: list[Proposal]) -> None:
    banned = {proposals[0].crystal.reduced_formula(), proposals[1].crystal.reduced_formula()}
    out = propose_substitutions(parents, space=BENCH, n=60, seed=3, exclude_formulas=banned)
    assert out and not {p.crystal.reduced_formula() for p in out} & banned
    # formulas are compared reduced, however they are written
    written = [Composition(f).formula for f in banned]  # "K4 Cl4"-style is reduced first
    assert {p.id for p in propose_substitutions(parents, space=BENCH, n=60, seed=3, exclude_formulas=written)} \
        == {p.id for p in out}
    cubic = BENCH.restrict(crystal_lattice_systems=["cubic"])
    assert all(p.crystal.space_group >= 195 for p in propose_substitutions(parents, space=cubic, n=30, seed=0))
    li3n_parent = [Parent("li3n", li3n(), 0.0, "seed")]
    assert any(p.partial for p in propose_substitutions(li3n_parent, space=BENCH, n=20, seed=0))
    assert not any(p.partial for p in propose_substitutions(li3n_parent, space=BENCH, n=20, seed=0, partial=False))


# ------------------------------------------------------------------------------------------------ ranking, rates


def test_ranking_follows_learned_rates(parents: list[Parent]) -> None:
    base = propose_substitutions(parents, space=BENCH, n=20, seed=0, thompson=False)
    top = base[0].substitutions
    rates = SubstitutionRates.from_outcomes([(top, False)] * 30 + [((("O", "Se"),), True)] * 30)
    ranked = propose_substitutions(parents, space=BENCH, n=20, seed=0, rates=rates, thompson=False)
    assert all(p.substitutions != top for p in ranked[:5])
    assert ranked[0].substitutions == (("O", "Se"),)
    thompson = [propose_substitutions(parents, space=BENCH, n=20, seed=s, rates=rates) for s in (0, 1)]
    assert sum(p.substitutions == (("O", "Se"),) for p in thompson[0][:10]) >= 5
    assert [p.id for p in thompson[0]] != [p.id for p in thompson[1]]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Na", "K", "O", "S"]), st.sampled_from(["Li", "Se"]), st.booleans()),
                max_size=30))
def test_rates_learn_and_round_trip(outcomes: list[tuple[str, str, bool]]) -> None:
    rates = SubstitutionRates()
    for old, new, ok in outcomes:
        before = rates.mean((old, new))
        rates.update([(old, new)], ok)
        after = rates.mean((old, new))
        assert (after > before) if ok else (after < before)
        assert 0 < after < 1
    again = SubstitutionRates.from_dict(json.loads(json.dumps(rates.to_dict())))
    assert again == rates
    assert SubstitutionRates.from_outcomes((([(o, n)], ok) for o, n, ok in outcomes)) == rates
    rng = np.random.default_rng(0)
    assert all(0 <= rates.sample(p, rng) <= 1 for p in rates.pairs)


def test_rates_prior_and_multi_pair_credit() -> None:
    rates = SubstitutionRates(a0=2.0, b0=2.0)
    assert rates.mean(("Na", "K")) == 0.5
    rates.update([("Na", "K"), ("Cl", "F"), ("Na", "K")], True)  # each distinct pair once
    assert rates.posterior(("Na", "K")) == (3.0, 2.0) and rates.posterior(("Cl", "F")) == (3.0, 2.0)
    assert rates.posterior(("K", "Na")) == (2.0, 2.0)  # ordered pairs
    with pytest.raises(ValueError, match="a0 > 0"):
        SubstitutionRates(a0=0.0)
    with pytest.raises(TypeError, match="unknown prior"):
        SubstitutionRates.from_outcomes([], c0=1.0)


def test_family_rates_learn_round_trip_and_rank_the_family_that_worked(parents: list[Parent]) -> None:
    rates = SubstitutionRates()
    assert rates.family_mean("mp-1") == rates.prior_mean == 1 / 3
    rates.update([("Na", "K")], True, family="mp-1")
    rates.update([("Na", "K")], False, family="mp-2")
    rates.update([("Na", "K")], False)  # no family: pairs only
    assert rates.family_posterior("mp-1") == (2.0, 2.0) and rates.family_posterior("mp-2") == (1.0, 3.0)
    assert rates.families == ("mp-1", "mp-2") and rates.posterior(("Na", "K")) == (2.0, 4.0)
    assert SubstitutionRates.from_dict(json.loads(json.dumps(rates.to_dict()))) == rates
    assert SubstitutionRates.from_outcomes([([("Na", "K")], True, "mp-1"), ([("Na", "K")], False, "mp-2"),
                                            ([("Na", "K")], False)]) == rates
    # before any family outcome the family factor is a constant: the same proposals as without it
    base = propose_substitutions(parents, space=BENCH, n=30, seed=5)
    assert [p.id for p in propose_substitutions(parents, space=BENCH, n=30, seed=5, family_rates=True)] == [
        p.id for p in base]
    # a host that worked moves its proposals up; one that failed moves them down
    bad = base[0].family
    good = next(p.family for p in reversed(base) if p.family != bad)
    assert all(p.family == p.parent_id for p in base)  # seed parents are their own family
    learned = SubstitutionRates.from_outcomes([((), True, good)] * 6 + [((), False, bad)] * 6)
    ranked = propose_substitutions(parents, space=BENCH, n=30, seed=5, rates=learned, family_rates=True)
    assert ranked[0].family == good and bad not in {p.family for p in ranked[:5]}
    # campaign parents carry their seed structure's family
    child = Parent(id="r001-sub-00003", structure=parents[0].structure, e_above_hull=0.0, origin="campaign",
                   family=parents[0].id)
    assert child.family_id == parents[0].id and parents[0].family_id == parents[0].id


# ------------------------------------------------------------------------------------------------ seed parents


def test_seed_parents_are_near_hull_and_fit_the_space(parents: list[Parent]) -> None:
    assert len(parents) > 300
    energies = [p.e_above_hull for p in parents]
    assert all(e is not None and 0 <= e <= 0.05 for e in energies)
    assert energies == sorted(energies)  # type: ignore[type-var]
    assert len({p.id for p in parents}) == len(parents) and all(p.origin == "seed" and p.id.startswith("mp-") for p in parents)
    allowed = isovalent_pairs([*BENCH.elements, *{str(e) for p in parents for e in p.structure.composition}])
    for p in parents[::25]:
        c = crystal_from_structure(p.structure)
        assert 2 <= len(c.counts) <= 3 and c.n_atoms <= 12 and max(c.counts.values()) <= 8
        assert all(el in BENCH.elements or set(allowed[el]) & set(BENCH.elements) for el in c.counts)
    strict = seed_parents(space=BENCH, max_e_above_hull=0.0)
    assert strict and all(p.e_above_hull == 0.0 for p in strict)
    first = seed_parents(space=BENCH, max_parents=40)
    assert [p.id for p in first] == [p.id for p in parents[:40]]
    assert all(a.structure is b.structure for a, b in zip(first, parents, strict=False))  # parsed once


def test_long_parent_ids_give_short_unique_ids() -> None:
    long_id = "campaign-" + "x" * 200
    props = propose_substitutions([Parent(long_id, nacl(), None, "campaign")], space=BENCH, n=10, seed=0)
    assert len(props) == 4 and len({p.id for p in props}) == 4
    assert all(len(p.id) <= 120 and p.parent_id == long_id for p in props)
    assert all(p.prior <= math.exp(-1) for p in props)  # unknown energy counts as 0.05 eV/atom: quality 1/e
