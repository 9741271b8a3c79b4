"""`python -m orchestration.bench_gfn retrain`: retraining cost and movement between campaign rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from discovery.crystal import Crystal
from orchestration.bench_gfn import RandomFeatureReward, _overlap, run_bench_retrain


def test_random_feature_reward_is_fixed_by_its_seed_and_boosts_chemical_systems() -> None:
    elements = ("Li", "Fe", "O", "S")
    crystals = [Crystal(1, {"Li": 2, "O": 1}, 5, 5, 5, 90, 90, 90), Crystal(2, {"Fe": 1, "S": 1}, 5, 5, 5, 90, 90, 90)]
    base = RandomFeatureReward(elements, seed=3)
    assert np.array_equal(base(crystals), RandomFeatureReward(elements, seed=3)(crystals))
    assert not np.array_equal(base(crystals), RandomFeatureReward(elements, seed=4)(crystals))
    boosted = RandomFeatureReward(elements, seed=3, boost=2.0, boosted=frozenset({frozenset({"Fe", "S"})}))
    assert np.allclose(boosted(crystals) - base(crystals), [0.0, 2.0])


def test_overlap_counts_positions_and_histograms() -> None:
    a, b = (Crystal(1, {"Li": 1, "Cl": 1}, 5, 5, 5, 90, 90, 90), Crystal(2, {"Na": 1, "Cl": 1}, 5, 5, 5, 90, 90, 90))
    assert _overlap([a, b], [b, a]) == {"identical": 0.0, "histogram": 1.0, "chemsys": 1.0}
    assert _overlap([a, a], [a, b]) == {"identical": 0.5, "histogram": 0.5, "chemsys": 0.5}


@pytest.mark.slow
def test_retrain_bench_reports_every_variant() -> None:
    torch.set_num_threads(1)
    result = run_bench_retrain(first=3, per_round=2, samples=40, offline=5)
    variants = [f"{m}_{r}" for m in ("finetune", "fresh") for r in ("same", "changed", "changed_offline")]
    for name in variants:
        v = result[name]
        assert v["iterations"] == (2 if name.startswith("finetune") else 3) and v["train_s"] >= 0
        assert v["offline_used"] == (result["offline_in_boosted_systems"] if name.endswith("offline") else 0)
        assert all(0 <= x <= 1 for x in v["overlap_round0"].values())
    assert 0 < result["offline_in_boosted_systems"] <= 5
