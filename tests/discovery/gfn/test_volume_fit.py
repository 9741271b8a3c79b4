"""The reward-implied volume distribution of :mod:`discovery.gfn.volume_fit` on rewards with a known answer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from scipy.stats import norm

from discovery.crystal import Crystal
from discovery.gfn.volume_fit import rescaled, volume_fit
from discovery.proxy.lattice import volumes_per_atom

MU, SD = np.log(12.0), 0.1  # ln V₀ (Å³/atom) and its std, the same for every crystal here


def _gaussian_reward(crystals: Sequence[Crystal]) -> np.ndarray:
    """log R = −z²/2 with z = (ln V − μ)/σ: a perfect sampler draws z ~ N(k·σ/3, 1) (the k-length measure)."""
    z = (np.log(volumes_per_atom(crystals)) - MU) / SD
    return -0.5 * z**2


def _compressed(n: int, *, z: float) -> list[Crystal]:
    base = Crystal(225, {"Na": 4, "Cl": 4}, 5.0, 5.0, 5.0, 90.0, 90.0, 90.0)  # cubic: one free length
    v = float(volumes_per_atom([base])[0])
    return [rescaled(base, float(np.exp(MU + z * SD)), current=v) for _ in range(n)]


def test_a_sampler_off_its_gaussian_reward_is_told_apart_from_the_reward() -> None:
    crystals = _compressed(4, z=-3.0)
    lo = float(np.exp(MU - 2.0 * SD))
    fit = volume_fit(crystals, _gaussian_reward, ln_v0=(np.full(4, MU), np.full(4, SD)), vrange=(lo, 1e3),
                     length_range=(0.5, 100.0), z_grid=np.linspace(-8, 8, 641))
    shift = SD / 3.0  # cubic: p(z) ∝ R·V^(1/3), a Gaussian shifted by σ/3 in z
    assert fit.implied_mean_z == pytest.approx(shift, abs=0.01)
    assert fit.implied_share_below == pytest.approx(norm.cdf(-2.0 - shift), abs=0.01)
    assert fit.implied_share_in_range == pytest.approx(1.0 - fit.implied_share_below, abs=1e-9)
    assert fit.sampled_share_below == 1.0 and fit.sampled_share_in_range == 0.0
    assert fit.sampled_mean_z == pytest.approx(-3.0, abs=1e-6)


def test_scales_the_space_cannot_draw_are_excluded() -> None:
    """A length range ending at V₀'s lattice length leaves only the compressed half of the Gaussian."""
    crystals = _compressed(2, z=0.0)
    a0 = crystals[0].a
    fit = volume_fit(crystals, _gaussian_reward, ln_v0=(np.full(2, MU), np.full(2, SD)), vrange=(1.0, 1e3),
                     length_range=(0.5, a0), z_grid=np.linspace(-8, 8, 641))
    assert fit.implied_mean_z == pytest.approx(-np.sqrt(2 / np.pi), abs=0.03)  # half-normal mean, negative side


def test_needs_crystals() -> None:
    with pytest.raises(ValueError, match="at least one"):
        volume_fit([], _gaussian_reward, ln_v0=(np.zeros(0), np.zeros(0)), vrange=(1.0, 2.0), length_range=(1.0, 9.0))
