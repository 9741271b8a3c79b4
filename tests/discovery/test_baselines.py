"""The random-search baseline: every sample valid, inside the space, spread over it, uniform where promised."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from pymatgen.core import Composition
from smact.screening import smact_validity

from discovery.baselines import RandomCrystalSampler
from discovery.chemistry import is_smact_valid
from discovery.gfn import SearchSpace
from discovery.gfn.validity import lattice_ok
from discovery.symmetry import is_wyckoff_compatible, space_group

SMALL = SearchSpace(elements=("H", "Li", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "S", "Cl", "Fe", "Cu"),
                    max_elements=3, max_atoms_per_element=8, max_atoms=12, length_range=(3.0, 9.0),
                    angle_range=(60.0, 120.0))


@pytest.fixture(scope="module")
def samples() -> list:
    return RandomCrystalSampler(SMALL).sample(1500, seed=3)


def test_every_sample_is_valid_and_inside_the_space(samples: list) -> None:
    lo, hi = SMALL.length_range
    alo, ahi = SMALL.angle_range
    for c in samples[:300]:  # the reference SMACT implementation is slow; the exact copy checks all
        assert smact_validity(Composition(c.counts), include_alloys=False)
    for c in samples:
        assert is_smact_valid(c.counts)
        assert is_wyckoff_compatible(c.space_group, c.counts.values())
        assert lattice_ok(c)
        assert set(c.counts) <= set(SMALL.elements)
        assert SMALL.min_elements <= len(c.counts) <= SMALL.max_elements
        assert max(c.counts.values()) <= SMALL.max_atoms_per_element and c.n_atoms <= SMALL.max_atoms
        assert all(lo <= x <= hi for x in c.lattice[:3])
        assert all(alo <= x <= ahi or x == 120.0 for x in c.lattice[3:])


def test_samples_spread_over_the_space(samples: list) -> None:
    assert {el for c in samples for el in c.counts} == set(SMALL.elements)
    assert {len(c.counts) for c in samples} == {2, 3}
    assert {space_group(c.space_group).lattice_system for c in samples} == {
        "triclinic", "monoclinic", "orthorhombic", "tetragonal", "hexagonal", "cubic"}
    assert len({c.space_group for c in samples}) > 120
    keys = {(c.reduced_formula(), c.space_group) for c in samples}
    assert len(keys) > 0.9 * len(samples)
    a = np.array([c.a for c in samples])
    assert a.min() < 3.5 and a.max() > 8.5 and abs(np.median(a) - 6.0) < 0.5  # uniform on [3, 9]


def test_deterministic_for_a_seed() -> None:
    s = RandomCrystalSampler(SMALL)
    assert s.sample(20, seed=5) == s.sample(20, seed=5)
    assert s.sample(20, seed=5) != s.sample(20, seed=6)


def test_compositions_uniform_among_valid_ones_with_the_same_number_of_elements() -> None:
    """Binary compositions of 4 elements, 1–3 atoms each: every valid one equally likely."""
    space = SearchSpace(elements=("Li", "Na", "O", "F"), min_elements=2, max_elements=2, max_atoms_per_element=3,
                        max_atoms=6, length_range=(3.0, 9.0), angle_range=(60.0, 120.0))
    valid = {frozenset({a: n, b: m}.items())
             for a, b in itertools.combinations(space.elements, 2) for n in (1, 2, 3) for m in (1, 2, 3)
             if is_smact_valid({a: n, b: m})}
    counts = Counter(frozenset(c.counts.items()) for c in RandomCrystalSampler(space).sample(4000, seed=0))
    assert set(counts) == valid
    expected = 4000 / len(valid)
    chi2 = sum((counts[k] - expected) ** 2 / expected for k in valid)
    assert chi2 < 2.5 * len(valid)  # a 2:1 bias on one composition alone would exceed this


def test_space_groups_uniform_among_compatible_ones() -> None:
    space = SearchSpace(elements=("Li", "F"), min_elements=2, max_elements=2, max_atoms_per_element=4, max_atoms=8,
                        length_range=(3.0, 9.0), angle_range=(60.0, 120.0))
    sampler = RandomCrystalSampler(space)
    rng = np.random.default_rng(0)
    draws = [sampler.sample_one(rng) for _ in range(3000)]
    lif4 = [c.space_group for c in draws if c.counts == {"Li": 4, "F": 4}]
    compatible = sampler.compatible_space_groups((4, 4))
    assert set(lif4) <= set(compatible) and len(compatible) > 100
    assert len(set(lif4)) > 0.6 * min(len(compatible), len(lif4))
    per_system = Counter(space_group(g).lattice_system for g in lif4)
    expected = Counter(space_group(g).lattice_system for g in compatible)
    for system, n in expected.items():  # shares follow the number of compatible groups per system
        assert abs(per_system[system] / len(lif4) - n / len(compatible)) < 0.08
