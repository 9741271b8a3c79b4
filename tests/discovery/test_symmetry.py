"""Space-group tables and the exact Wyckoff compatibility check."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from discovery.symmetry import (
    all_space_groups,
    is_wyckoff_compatible,
    space_group,
    space_groups_where,
    wyckoff_algebra,
)


def test_tables_cover_230_groups_with_paper_counts() -> None:
    groups = all_space_groups()
    assert [g.number for g in groups] == list(range(1, 231))
    ps = Counter(g.point_symmetry for g in groups)
    assert ps == {"enantiomorphic-polar": 20, "centrosymmetric": 92, "polar": 48, "enantiomorphic": 45,
                  "non-centrosymmetric": 25}
    cls = Counter(g.crystal_lattice_system for g in groups)
    assert cls["trigonal-rhombohedral"] == 7 and cls["cubic"] == 36 and cls["triclinic"] == 2
    assert space_group(166).crystal_lattice_system == "trigonal-rhombohedral"
    assert space_group(166).lattice_system == "hexagonal"  # hexagonal axes, as pymatgen and pyxtal use
    assert space_group(225).symbol == "Fm-3m"
    assert [(w.multiplicity, w.dof) for w in space_group(225).wyckoff][-3:] == [(8, 0), (4, 0), (4, 0)]


def test_space_group_filters() -> None:
    assert space_groups_where(crystal_lattice_systems=["cubic"]) == tuple(range(195, 231))
    assert len(space_groups_where(point_symmetries=["polar"])) == 48
    with pytest.raises(ValueError, match="unknown crystal-lattice system"):
        space_groups_where(crystal_lattice_systems=["cubbic"])


def _brute_force(sg: int, counts: list[int]) -> bool:
    """Independent check: assign individual Wyckoff positions (not multiplicity classes) to elements."""
    wps = space_group(sg).wyckoff
    fixed = [w.multiplicity for w in wps if w.dof == 0]
    free = sorted({w.multiplicity for w in wps if w.dof > 0})

    def free_sum(n: int) -> bool:
        reach = [True] + [False] * n
        for t in range(1, n + 1):
            reach[t] = any(m <= t and reach[t - m] for m in free)
        return reach[n]

    def place(i: int, used: frozenset[int]) -> bool:
        if i == len(counts):
            return True
        avail = [j for j in range(len(fixed)) if j not in used and fixed[j] <= counts[i]]
        for k in range(len(avail) + 1):
            for subset in itertools.combinations(avail, k):
                rest = counts[i] - sum(fixed[j] for j in subset)
                if rest >= 0 and free_sum(rest) and place(i + 1, used | frozenset(subset)):
                    return True
        return False

    return place(0, frozenset())


def test_wyckoff_check_matches_brute_force_on_all_groups() -> None:
    rng = random.Random(0)
    checked = 0
    for sg in range(1, 231):
        for _ in range(12):
            counts = [rng.randint(1, 16) for _ in range(rng.randint(1, 4))]
            assert is_wyckoff_compatible(sg, counts) == _brute_force(sg, counts), (sg, counts)
            checked += 1
    assert checked == 230 * 12


def test_wyckoff_known_cases() -> None:
    assert is_wyckoff_compatible(225, [4, 4])  # NaCl
    assert is_wyckoff_compatible(225, [4, 8])  # CaF2
    assert not is_wyckoff_compatible(225, [4, 4, 4, 8])  # only 4a, 4b, 8c hold ≤ 16 atoms
    assert not is_wyckoff_compatible(225, [3])
    assert is_wyckoff_compatible(221, [15, 16, 17, 21])  # pyxtal issue 305 example
    assert is_wyckoff_compatible(1, [7, 13])
    alg = wyckoff_algebra(229)
    assert alg.fixed_mults == (2, 6, 8, 12)
