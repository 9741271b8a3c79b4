"""Rewards for the Crystal-GFN.

The generator knows nothing of proxies: it receives a :class:`Reward`, a callable from crystals to
natural-log rewards (n,). This module ships the exact density reward and the transforms later
stages apply to proxy predictions (Boltzmann for energies, a Gaussian well for target values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from discovery.crystal import Crystal, cell_volume, density_g_cm3

LOG_REWARD_FLOOR = -1.0e3  # keeps the trajectory-balance loss finite for hopeless crystals


class Reward(Protocol):
    """crystals → log-rewards, shape (n,), natural log."""

    def __call__(self, crystals: Sequence[Crystal]) -> np.ndarray: ...


def densities(crystals: Sequence[Crystal]) -> np.ndarray:
    """(n,) mass densities in g/cm³ (exact, from composition and cell volume)."""
    if not crystals:
        return np.zeros(0)
    vol = cell_volume(np.array([c.lattice for c in crystals]))
    return np.array([density_g_cm3(c.counts, float(v)) for c, v in zip(crystals, vol, strict=True)])


def boltzmann(values: np.ndarray, *, temperature: float, minimize: bool = True) -> np.ndarray:
    """log R = ∓ value / T (paper, formation energy: R = exp(−E/T), reference code T = 1/8)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    v = np.asarray(values, dtype=float)
    return np.clip((-v if minimize else v) / temperature, LOG_REWARD_FLOOR, None)


def target_value(values: np.ndarray, *, target: float, width: float) -> np.ndarray:
    """log R = −((value − target) / width)² (paper, band gap: R = exp(−8 (E_g − 1.34)²), width = 1/√8)."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    v = np.asarray(values, dtype=float)
    return np.clip(-(((v - target) / width) ** 2), LOG_REWARD_FLOOR, None)


@dataclass(frozen=True)
class DensityReward:
    """R = ρ^β with ρ the exact density in g/cm³, up to ``max_density``; above it the reward falls as
    fast as it rose (log R = β·(2·log ρ_max − log ρ)), since no solid at ambient pressure is denser
    than ~23 g/cm³ (osmium) and tiny cells would otherwise win. ``max_density=None`` disables the cap."""

    beta: float = 4.0
    max_density: float | None = 25.0

    def __call__(self, crystals: Sequence[Crystal]) -> np.ndarray:
        rho = densities(crystals)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_rho = np.log(rho)
            if self.max_density is not None:
                cap = np.log(self.max_density)
                log_rho = np.where(log_rho > cap, 2 * cap - log_rho, log_rho)
            out = self.beta * log_rho
        return np.nan_to_num(out, nan=LOG_REWARD_FLOOR, neginf=LOG_REWARD_FLOOR).clip(LOG_REWARD_FLOOR, None)


def volume_log_likelihood(crystals: Sequence[Crystal], *, prior_path: str | None = None, nu: float = 3.0) -> np.ndarray:
    """(n,) log-likelihood ratio of each cell's volume per atom under the lattice prior's volume model:
    Student-t with ``nu`` degrees of freedom on z = (ln V − μ)/σ, −(ν + 1)/2·ln(1 + z²/ν) (0 at the predicted
    equilibrium volume; μ, σ of ln V₀ from the composition; −0.6, −1.7, −2.8, −4.5 at z = 1, 2, 3, 5).

    Heavy-tailed on purpose: a Gaussian's −½z² reaches −450 for the untrained sampler's 1,000 Å³/atom
    cells, and trajectory balance on such rewards diverged (loss ~10⁵, collapse to sub-Å cells). Cells
    far from V₀ are priced by the strain energy instead. See :mod:`discovery.proxy.lattice`."""
    from discovery.proxy.lattice import default_lattice_prior, volumes_per_atom

    if not crystals:
        return np.zeros(0)
    mean, sd = default_lattice_prior(prior_path).volume.predict(crystals)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.log(volumes_per_atom(crystals)) - mean) / sd
    return np.nan_to_num(-(nu + 1) / 2 * np.log1p(z**2 / nu), nan=LOG_REWARD_FLOOR).clip(LOG_REWARD_FLOOR, None)


@dataclass(frozen=True)
class VolumePriorReward:
    """``reward`` times the volume model's likelihood ratio (:func:`volume_log_likelihood`) to the power
    ``weight``.

    A proxy trained on equilibrium crystals scores compositions; the lattice prior's strain energy
    (in the proxy's posterior) stops grossly unphysical cells but is flat within the volume model's
    error, and the Crystal-GFN's lattice is drawn from Betas over 0.9–100 Å, so without this factor
    samples spread over ±50 % in volume. Multiplying by the likelihood of the cell's volume (issue 13:
    "a learned volume model whose likelihood multiplies the reward") concentrates them where real
    crystals of that composition are."""

    reward: Reward
    weight: float = 1.0
    prior_path: str | None = None

    def __call__(self, crystals: Sequence[Crystal]) -> np.ndarray:
        base = np.asarray(self.reward(crystals), dtype=float)
        if self.weight == 0 or not len(crystals):
            return base
        extra = self.weight * volume_log_likelihood(crystals, prior_path=self.prior_path)
        return np.asarray((base + extra).clip(LOG_REWARD_FLOOR, None))


def uniform_reward(crystals: Sequence[Crystal]) -> np.ndarray:
    """log R = 0 for every crystal (a sampler trained on it samples valid crystals uniformly)."""
    return np.zeros(len(crystals))
