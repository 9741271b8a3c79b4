"""Rewards: the volume model's likelihood factor and its wrapper."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from discovery.crystal import Crystal
from discovery.gfn import VolumePriorReward, volume_log_likelihood
from discovery.proxy.lattice import default_lattice_prior


def _nacl(factor: float) -> Crystal:
    s = factor ** (1 / 3)
    return dataclasses.replace(Crystal(225, {"Na": 4, "Cl": 4}, 5.64, 5.64, 5.64, 90, 90, 90), a=5.64 * s, b=5.64 * s,
                               c=5.64 * s)


def test_likelihood_peaks_at_the_predicted_volume_and_stays_bounded() -> None:
    mean, _ = default_lattice_prior().volume.predict([_nacl(1.0)])
    v0_factor = float(np.exp(mean[0]) / _nacl(1.0).volume * 8)  # scale that puts NaCl at its predicted V₀
    factors = [v0_factor * f for f in (1e-3, 0.5, 0.8, 1.0, 1.25, 2.0, 1e3)]
    ll = volume_log_likelihood([_nacl(f) for f in factors])
    assert ll[3] == pytest.approx(0.0, abs=1e-9)
    assert ll[2] < 0 and ll[4] < 0 and ll[1] < ll[2] and ll[5] < ll[4]
    assert ll.min() > -25  # heavy tails: trajectory balance diverged with a Gaussian's −½z²


def test_wrapper_adds_the_likelihood_and_weight_zero_is_the_reward() -> None:
    crystals = [_nacl(1.0), _nacl(3.0)]

    def flat(cs: list[Crystal]) -> np.ndarray:
        return np.full(len(cs), 2.0)

    assert np.allclose(VolumePriorReward(flat, weight=0.0)(crystals), 2.0)
    wrapped = VolumePriorReward(flat, weight=2.0)(crystals)
    assert np.allclose(wrapped, 2.0 + 2.0 * volume_log_likelihood(crystals))
    assert wrapped[1] < wrapped[0]
    assert len(VolumePriorReward(flat)([])) == 0
