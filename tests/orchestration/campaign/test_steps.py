"""Campaign steps: the acquisition scores a formation-energy target against a reference hull when asked."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from discovery.crystal import Crystal
from discovery.testing import FixedProxy
from orchestration.campaign import steps
from orchestration.config import parse_config


def _camp(**acquisition: object) -> SimpleNamespace:
    cfg = parse_config({"name": "t", "targets": [{"name": "formation_energy_per_atom", "goal": "minimize"}],
                        "search_space": {"elements": ["Na", "Cl", "Mg", "F"]}, "seed_data": {"dataset": "mp20"},
                        "candidates_per_round": 10, "batch_size": 2, "oracle": {"name": "density"}, "rounds": 1,
                        "acquisition": {"kind": "ucb", "kappa": 1.0, **acquisition}})
    return SimpleNamespace(config=cfg, store=None)


CRYSTALS = [Crystal(225, {"Na": 4, "Cl": 4}, 5.6, 5.6, 5.6, 90, 90, 90),
            Crystal(136, {"Mg": 2, "F": 4}, 4.6, 4.6, 3.0, 90, 90, 90),
            Crystal(221, {"Na": 1, "Cl": 3}, 5.0, 5.0, 5.0, 90, 90, 90)]


def test_hull_relative_scores_are_the_predicted_distance_to_the_reference_hull() -> None:
    proxies = {"formation_energy_per_atom": FixedProxy(-2.0, std=0.1, target_name="formation_energy_per_atom")}
    plain, preds = steps.acquisition(_camp(), 0, proxies, CRYSTALS)
    np.testing.assert_allclose(plain, [2.1, 2.1, 2.1], rtol=1e-6)  # −(μ − κσ): the same for every crystal
    hull = steps.hull_energies("mp20+matbench", CRYSTALS)
    assert hull[1] < hull[0] < hull[2] <= 0  # MgF2 lies deeper than NaCl; NaCl3 has no phase of its own
    relative, _ = steps.acquisition(_camp(relative_to_hull="mp20+matbench"), 0, proxies, CRYSTALS)
    np.testing.assert_allclose(relative, plain + hull, rtol=1e-5)  # −(μ − E_hull − κσ)
    assert relative.argmax() == 2  # the one predicted furthest below its known phases wins
    assert preds[0]["formation_energy_per_atom_mean"] == pytest.approx(-2.0)  # predictions stay formation energies
