"""Dedupe and diverse batch selection on small known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from discovery.crystal import Crystal
from discovery.selection import (
    DistanceWeights,
    dedupe,
    dedupe_key,
    diversity_summary,
    pairwise_distances,
    select_batch,
)


def cx(counts: dict[str, int], sg: int = 225, a: float = 5.0, id: str = "") -> Crystal:
    return Crystal(space_group=sg, counts=counts, a=a, b=a, c=a, alpha=90, beta=90, gamma=90, id=id)


NACL = cx({"Na": 4, "Cl": 4})
NACL_BIG = cx({"Na": 8, "Cl": 8}, a=7.0)  # same reduced formula and group as NACL
NACL_221 = cx({"Na": 1, "Cl": 1}, sg=221, a=3.0)
LIF = cx({"Li": 4, "F": 4}, a=4.0)
MGO = cx({"Mg": 4, "O": 4}, sg=216, a=4.2)


def test_dedupe_key_uses_reduced_formula_and_group() -> None:
    assert dedupe_key(NACL) == dedupe_key(NACL_BIG) == ("NaCl", 225)
    assert dedupe_key(NACL_221) == ("NaCl", 221)


def test_dedupe_against_known_and_within_batch() -> None:
    res = dedupe([NACL, LIF, NACL_BIG, NACL_221, MGO, LIF], known={("MgO", 216)})
    assert res.kept == [0, 1, 3]
    assert (res.n_known, res.n_repeated) == (1, 2)
    assert dedupe([]).kept == []


def test_distance_properties() -> None:
    d = pairwise_distances([NACL, NACL_BIG, NACL_221, LIF, MGO])
    assert d.shape == (5, 5)
    assert np.allclose(np.diag(d), 0) and np.allclose(d, d.T)
    assert ((d >= 0) & (d <= 1)).all()
    # Same composition and group, different size: only lattice differs.
    assert 0 < d[0, 1] < d[0, 2] < d[0, 3]
    # Composition-only weights: NaCl in 225 and 221 are identical.
    w = DistanceWeights(composition=1, space_group=0, lattice=0)
    assert pairwise_distances([NACL, NACL_221, LIF], weights=w)[0, 1] == pytest.approx(0)
    assert pairwise_distances([NACL, NACL_221, LIF], weights=w)[0, 2] == pytest.approx(1)
    with pytest.raises(ValueError):
        DistanceWeights(composition=-1)


def test_greedy_is_top_scores() -> None:
    crystals = [NACL, NACL_BIG, NACL_221, LIF, MGO]
    assert select_batch(crystals, [5, 4, 3, 2, 1], batch_size=3, method="greedy") == [0, 1, 2]


def test_mmr_trades_score_for_diversity() -> None:
    # Two near-identical NaCl cells score highest; MMR takes one of them and then LiF.
    crystals = [NACL, NACL_BIG, LIF, MGO]
    scores = [1.0, 0.95, 0.9, 0.0]
    assert select_batch(crystals, scores, batch_size=2, method="mmr", diversity=0.0) == [0, 1]
    assert select_batch(crystals, scores, batch_size=2, method="mmr", diversity=0.5) == [0, 2]
    assert select_batch(crystals, scores, batch_size=2, method="mmr", diversity=1.0)[1] in {2, 3}


def test_k_center_farthest_first_in_pool() -> None:
    crystals = [NACL, NACL_BIG, NACL_221, LIF, MGO]
    out = select_batch(crystals, [1.0, 0.9, 0.8, 0.7, 0.0], batch_size=2, method="k_center", pool_factor=2)
    assert out[0] == 0 and out[1] in {2, 3}  # pool = best 4 (MgO excluded), far from NaCl
    assert out[1] == 3  # LiF differs in composition, which weighs most


def test_deterministic_and_seeded_ties() -> None:
    crystals = [cx({"Na": 1, "Cl": 1}, sg=221, a=3.0 + 0.0 * i, id=str(i)) for i in range(6)]
    scores = np.ones(6)
    a = select_batch(crystals, scores, batch_size=3, seed=1)
    assert a == select_batch(crystals, scores, batch_size=3, seed=1)
    picks = {tuple(select_batch(crystals, scores, batch_size=3, seed=s)) for s in range(10)}
    assert len(picks) > 1, "the seed changes how ties are broken"


def test_edge_cases() -> None:
    crystals = [NACL, LIF, MGO]
    assert select_batch(crystals, [np.nan, 1.0, 0.5], batch_size=3)[:2] == [1, 2]
    assert sorted(select_batch(crystals, [1, 2, 3], batch_size=10)) == [0, 1, 2]
    assert select_batch([], [], batch_size=3) == []
    with pytest.raises(ValueError, match="scores"):
        select_batch(crystals, [1.0], batch_size=1)
    with pytest.raises(ValueError, match="method"):
        select_batch(crystals, [1, 2, 3], batch_size=1, method="random")  # type: ignore[arg-type]


def test_mmr_batch_is_more_diverse_than_greedy() -> None:
    rng = np.random.default_rng(0)
    pool = [NACL, LIF, MGO, NACL_221]
    crystals = [cx(dict(pool[i % 4].counts), sg=pool[i % 4].space_group, a=4 + 0.01 * i) for i in range(40)]
    scores = np.array([3.0 if i % 4 == 0 else 1.0 for i in range(40)]) + rng.normal(0, 0.01, 40)
    greedy = [crystals[i] for i in select_batch(crystals, scores, batch_size=4, method="greedy")]
    mmr = [crystals[i] for i in select_batch(crystals, scores, batch_size=4, method="mmr", diversity=0.7)]
    assert diversity_summary(greedy)["distinct_compositions"] == 1
    assert diversity_summary(mmr)["distinct_compositions"] == 3
    assert diversity_summary(mmr)["distinct_space_groups"] >= 2 > diversity_summary(greedy)["distinct_space_groups"]


def test_unique_structures_after_relaxation() -> None:
    from pymatgen.core import Lattice, Structure

    from discovery.selection import unique_structures

    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rocksalt_strained = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.70), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cscl_type = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    lif = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.03), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert unique_structures([rocksalt, rocksalt_strained, cscl_type, lif]) == [0, 2, 3]
    assert unique_structures([rocksalt_strained, lif], known=[rocksalt]) == [1]


def test_groups_are_scored_on_their_own_scale() -> None:
    """An outlier in one group (a proxy σ of 50 eV/atom on a strained generator cell) must not flatten another
    group's scores: within the substitution group, the best score wins over a far but poor candidate."""
    context = [cx({"Na": 4, "Cl": 4})]
    near_good = cx({"Na": 4, "Cl": 3, "F": 1}, id="near-good")  # close to the context, best substitution score
    far_poor = cx({"Mg": 4, "O": 4}, sg=216, a=4.2, id="far-poor")  # far from everything, poor score
    outlier = cx({"Se": 6, "N": 1}, sg=215, a=8.5, id="outlier")
    crystals, scores = [near_good, far_poor, outlier], [0.30, 0.0, 80.0]
    groups, quota = ["substitution", "substitution", "generator"], {"substitution": 1, "generator": 1}
    chosen = select_batch(crystals, scores, batch_size=2, diversity=0.5, context=context, groups=groups, quota=quota)
    assert sorted(chosen) == [0, 2]
    # one scale for all (no groups, or "pooled"): the two substitution scores are 0.4 % apart and distance decides
    assert select_batch(crystals, scores, batch_size=2, diversity=0.5, context=context)[1] == 1
    assert sorted(select_batch(crystals, scores, batch_size=2, diversity=0.5, context=context, groups=groups,
                               quota=quota, score_scale="pooled")) == [1, 2]
