"""The score decoder on the shipped checkpoint: exact space group and composition, determinism, errors."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
import spglib
from pymatgen.core import Element, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from discovery.crystal import Crystal
from discovery.decoder import DecoderError, SamplerSettings, ScoreDecoder

FAST = SamplerSettings(levels=4, steps=1)

# (space group, conventional-cell counts, lattice a, b, c, α, β, γ): every crystal system, special and general
# positions, 1–30 atoms
CASES: list[tuple[int, dict[str, int], tuple[float, float, float, float, float, float]]] = [
    (1, {"Si": 2, "O": 4}, (4.9, 5.1, 5.4, 80, 95, 100)),
    (2, {"Cu": 2, "O": 2}, (4.1, 4.3, 5.0, 85, 97, 104)),
    (11, {"K": 2, "Cl": 2}, (4.5, 4.1, 6.8, 90, 104, 90)),
    (12, {"Al": 4, "Cl": 12}, (5.9, 10.2, 6.2, 90, 108, 90)),
    (14, {"Fe": 4, "O": 8}, (5.0, 6.0, 7.0, 90, 100, 90)),
    (15, {"Cu": 4, "O": 4}, (4.7, 3.4, 5.1, 90, 99, 90)),
    (59, {"V": 4, "O": 10}, (11.5, 3.6, 4.4, 90, 90, 90)),
    (62, {"Ca": 4, "Ti": 4, "O": 12}, (5.4, 7.6, 5.4, 90, 90, 90)),
    (63, {"Cu": 4, "Ge": 4}, (3.9, 9.7, 5.1, 90, 90, 90)),
    (71, {"Ta": 2, "Ni": 4}, (3.1, 4.5, 8.7, 90, 90, 90)),
    (99, {"Pb": 1, "Ti": 1, "O": 3}, (3.9, 3.9, 4.2, 90, 90, 90)),
    (123, {"Cu": 1, "Au": 1}, (2.8, 2.8, 3.7, 90, 90, 90)),
    (129, {"Li": 2, "Fe": 2, "As": 2}, (3.8, 3.8, 6.4, 90, 90, 90)),
    (139, {"Ba": 2, "Fe": 4, "As": 4}, (3.9, 3.9, 13.0, 90, 90, 90)),
    (148, {"Fe": 6, "Ti": 6, "O": 18}, (5.1, 5.1, 14.1, 90, 90, 120)),
    (160, {"Ge": 3, "Te": 3}, (4.2, 4.2, 10.7, 90, 90, 120)),
    (164, {"Cd": 1, "I": 2}, (4.2, 4.2, 6.9, 90, 90, 120)),
    (166, {"Li": 3, "Co": 3, "O": 6}, (2.8, 2.8, 14.1, 90, 90, 120)),
    (186, {"Zn": 2, "O": 2}, (3.3, 3.3, 5.2, 90, 90, 120)),
    (191, {"Mg": 1, "B": 2}, (3.1, 3.1, 3.5, 90, 90, 120)),
    (194, {"Mg": 2}, (3.2, 3.2, 5.2, 90, 90, 120)),
    (216, {"Ga": 4, "As": 4}, (5.7, 5.7, 5.7, 90, 90, 90)),
    (221, {"Sr": 1, "Ti": 1, "O": 3}, (3.9, 3.9, 3.9, 90, 90, 90)),
    (223, {"Nb": 6, "Sn": 2}, (5.3, 5.3, 5.3, 90, 90, 90)),
    (225, {"Na": 4, "Cl": 4}, (5.6, 5.6, 5.6, 90, 90, 90)),
    (225, {"Ca": 4, "F": 8}, (5.5, 5.5, 5.5, 90, 90, 90)),
    (227, {"Si": 8}, (5.4, 5.4, 5.4, 90, 90, 90)),
]


@pytest.fixture(scope="module")
def decoder() -> ScoreDecoder:
    return ScoreDecoder.load(settings=FAST)


def _check(structure: Structure, sg: int, counts: dict[str, int]) -> None:
    """The cell's composition, and spglib's space group and standardised conventional cell (symprec 0.1, its
    default angle tolerance and pymatgen's 5°)."""
    assert {el.symbol: int(n) for el, n in structure.composition.items()} == counts
    cell = (structure.lattice.matrix.tolist(), structure.frac_coords.tolist(), [s.specie.Z for s in structure])
    for angle_tolerance in (-1.0, 5.0):
        ds = spglib.get_symmetry_dataset(cell, symprec=0.1, angle_tolerance=angle_tolerance)
        assert ds is not None and ds.number == sg
        assert dict(Counter(Element.from_Z(int(z)).symbol for z in ds.std_types)) == counts


def test_every_sample_has_the_requested_space_group_and_composition(decoder: ScoreDecoder) -> None:
    total = 0
    stats: Counter[str] = Counter()
    for i, (sg, counts, lattice) in enumerate(CASES):
        crystal = Crystal(sg, counts, *lattice)
        structures = decoder.decode(crystal, k=8, seed=i, use_lattice_hint=i % 3 != 0)
        stats.update(decoder.last_stats)
        assert len(structures) == 8
        for s in structures:
            _check(s, sg, counts)
            total += 1
    assert total >= 200
    # the Langevin samples, not the random-placement fallback, make most of the structures
    assert stats["fallback"] <= total // 4, stats


def test_deterministic_per_seed(decoder: ScoreDecoder) -> None:
    crystal = Crystal(62, {"Ca": 4, "Ti": 4, "O": 12}, 5.4, 7.6, 5.4, 90, 90, 90)
    a = decoder.decode(crystal, k=3, seed=7)
    b = decoder.decode(crystal, k=3, seed=7)
    c = decoder.decode(crystal, k=3, seed=8)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.frac_coords, y.frac_coords)
        assert np.array_equal(x.lattice.matrix, y.lattice.matrix)
        assert [str(s.specie) for s in x] == [str(s.specie) for s in y]
    assert any(not np.allclose(x.frac_coords, y.frac_coords) for x, y in zip(a, c, strict=True))


def test_pymatgen_agrees_on_a_sample(decoder: ScoreDecoder) -> None:
    crystal = Crystal(166, {"Li": 3, "Co": 3, "O": 6}, 2.8, 2.8, 14.1, 90, 90, 120)
    for s in decoder.decode(crystal, k=2, seed=5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(s, symprec=0.1)
            assert sga.get_space_group_number() == 166
            conv = sga.get_conventional_standard_structure()
        assert {el.symbol: int(n) for el, n in conv.composition.items()} == {"Li": 3, "Co": 3, "O": 6}


def test_lattice_hint_is_refined_not_replaced(decoder: ScoreDecoder) -> None:
    crystal = Crystal(225, {"Na": 4, "Cl": 4}, 5.6, 5.6, 5.6, 90, 90, 90)
    (s,) = decoder.decode(crystal, k=1, seed=0)
    assert abs(s.lattice.a - 5.6) / 5.6 < 0.15


@pytest.mark.parametrize(("sg", "counts"), [(225, {"Na": 1, "Cl": 1}), (229, {"Fe": 1}), (227, {"Si": 2, "O": 3})])
def test_impossible_composition(decoder: ScoreDecoder, sg: int, counts: dict[str, int]) -> None:
    with pytest.raises(DecoderError) as info:
        decoder.decode(Crystal(sg, counts, 5.0, 5.0, 5.0, 90, 90, 90), k=2)
    assert info.value.impossible
