"""Offline trajectories (labelled crystals replayed in training, GFlowNet-AL) and retraining afresh."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

from discovery.crystal import Crystal
from discovery.gfn import CrystalGFN, DensityReward, PolicyConfig, SearchSpace, TrainConfig
from discovery.gfn.replay import in_space, offline_trajectories

SPACE = SearchSpace(elements=("Li", "Na", "Mn", "Fe", "Cl", "O", "S"), max_elements=2, max_atoms_per_element=4,
                    max_atoms=8, length_range=(3.0, 9.0), angle_range=(60.0, 120.0))


def _model(seed: int = 0) -> CrystalGFN:
    return CrystalGFN(SPACE, seed=seed, policy=PolicyConfig(hidden=64, layers=2),
                      train=TrainConfig(batch_size=16, lr=2e-3, lr_log_z=0.1))


def _key(c: Crystal) -> tuple[int, str]:
    return c.space_group, c.formula


@pytest.fixture(scope="module")
def targets() -> list[Crystal]:
    """Three crystals of the space, drawn by an untrained model, that the reward below favours."""
    drawn = _model(seed=3).sample(200, seed=5)
    picked: dict[tuple[int, str], Crystal] = {}
    for c in drawn:
        if c.space_group > 15:  # a few symmetric ones, unlikely for an untrained policy
            picked.setdefault(_key(c), c)
    return list(picked.values())[:3]


def _favouring(targets: Sequence[Crystal]) -> Callable[[Sequence[Crystal]], np.ndarray]:
    keys = {_key(c) for c in targets}

    def log_reward(crystals: Sequence[Crystal]) -> np.ndarray:
        return np.array([9.0 if _key(c) in keys else 0.0 for c in crystals])

    return log_reward


def _share(gfn: CrystalGFN, targets: Sequence[Crystal], n: int = 400) -> float:
    keys = {_key(c) for c in targets}
    return sum(_key(c) in keys for c in gfn.sample(n, seed=9)) / n


def test_offline_crystals_are_replayed_and_gain_probability(targets: list[Crystal]) -> None:
    assert len(targets) == 3 and all(in_space(_model().env, c) for c in targets)
    reward = _favouring(targets)
    plain, offline = _model(), _model()
    r_plain = plain.train(reward, iterations=100)
    r_off = offline.train(reward, iterations=100, offline=targets, offline_batch=3)
    assert (r_plain.offline_used, r_plain.offline_trajectories) == (0, 0)
    assert (r_off.offline_used, r_off.offline_dropped, r_off.offline_trajectories) == (3, 0, 300)
    assert r_off.history[-1]["mean_offline_log_reward"] == pytest.approx(9.0)
    before, without, with_offline = _share(_model(), targets), _share(plain, targets), _share(offline, targets)
    assert with_offline > 0.3
    assert with_offline > without + 0.2 and with_offline > before + 0.2


def test_offline_crystals_outside_the_space_are_dropped(targets: list[Crystal]) -> None:
    good = targets[0]
    outside = [
        Crystal(225, {"Zn": 4, "O": 4}, 5, 5, 5, 90, 90, 90),  # element not in the vocabulary
        Crystal(1, {"Li": 5, "Cl": 5}, 5, 6, 7, 80, 85, 95),  # too many atoms per element and in total
        Crystal(1, {"Li": 1}, 5, 6, 7, 80, 85, 95),  # one element, two needed
        Crystal(1, {"Li": 1, "Cl": 1}, 12.0, 6, 7, 80, 85, 95),  # a outside 3–9 Å
        Crystal(2, {"Li": 1, "Cl": 1}, 5, 6, 7, 50.0, 85, 95),  # α outside 60–120°
        Crystal(225, {"Li": 1, "Cl": 1}, 5, 5, 5, 90, 90, 90),  # Fm-3m cannot host one formula unit
        Crystal(1, {"Li": 1, "Na": 1}, 5, 6, 7, 80, 85, 95),  # not charge balanced (SMACT)
        Crystal(1, {"Li": 1, "Cl": 1}, 5, 6, 7, 80, 85, float("nan")),
        Crystal(0, {"Li": 1, "Cl": 1}, 5, 6, 7, 80, 85, 95),  # not a space group
        Crystal(1.5, {"Li": 1, "Cl": 1}, 5, 6, 7, 80, 85, 95),  # type: ignore[arg-type]  # nor this
    ]
    gfn = _model()
    assert in_space(gfn.env, Crystal(1, {"Li": 1, "Cl": 1}, 5, 6, 7, 80, 85, 95))
    assert in_space(gfn.env, Crystal(225, {"Li": 4, "Cl": 4}, 5, 5, 5, 90, 90, 90))  # four formula units fit
    assert not any(in_space(gfn.env, c) for c in outside)
    report = gfn.train(DensityReward(), iterations=3, offline=[*outside, good], offline_batch=4)
    assert (report.offline_used, report.offline_dropped, report.offline_trajectories) == (1, len(outside), 3)
    report = gfn.train(DensityReward(), iterations=2, offline=outside)
    assert (report.offline_used, report.offline_dropped, report.offline_trajectories) == (0, len(outside), 0)


def test_offline_trajectories_rebuild_tied_lattice_parameters() -> None:
    gfn = _model()
    tetragonal = Crystal(123, {"Fe": 1, "O": 1}, 4.0, 4.3, 5.0, 90, 90, 90)  # P4/mmm, b should equal a
    (rebuilt,), dropped = offline_trajectories(gfn.env, [tetragonal])
    assert dropped == 0 and rebuilt.counts == tetragonal.counts and rebuilt.space_group == 123
    assert rebuilt.a == pytest.approx(4.0) and rebuilt.b == pytest.approx(4.0) and rebuilt.c == pytest.approx(5.0)


def test_fresh_like_keeps_space_and_settings_with_new_weights() -> None:
    trained = _model()
    trained.train(DensityReward(), iterations=3)
    fresh = CrystalGFN.fresh_like(trained, seed=7)
    assert (fresh.space, fresh.policy_cfg, fresh.train_cfg) == (trained.space, trained.policy_cfg, trained.train_cfg)
    assert fresh.iterations_done == 0 and fresh.seed == 7
    assert not torch.equal(next(fresh.forward_policy.parameters()), next(trained.forward_policy.parameters()))
    same_seed = CrystalGFN.fresh_like(trained)
    untrained = _model(seed=trained.seed)
    for a, b in zip(same_seed.forward_policy.parameters(), untrained.forward_policy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_with_offline_crystals_is_deterministic(targets: list[Crystal]) -> None:
    runs = []
    for _ in range(2):
        gfn = _model(seed=4)
        report = gfn.train(DensityReward(), iterations=4, offline=targets, offline_batch=2)
        runs.append((report.loss, [_key(c) for c in gfn.sample(50, seed=1)],
                     [p.detach().clone() for p in gfn.forward_policy.parameters()]))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][2], runs[1][2], strict=True))
