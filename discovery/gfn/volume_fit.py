"""Does a trained Crystal-GFN put its cell volumes where its reward does? (a diagnostic, no training).

A volume per atom outside a plausible range can have two causes: the reward tolerates it, or the sampler
has not learned the reward's shape along the volume. To tell them apart, each sampled crystal is rescaled
isotropically to volumes per atom ``V = exp(μ + z·σ)`` on a grid of ``z`` (μ, σ: the lattice prior's ln V₀
and its std for the composition), its log-reward evaluated at each, and the volume distribution a perfectly
trained sampler would draw *given the sample's composition, space group and cell shape* follows:

    p(z) ∝ R(z) · V(z)^(k/3)

``k`` is the number of free lattice lengths of the space group (1 cubic, 2 tetragonal / hexagonal, 3 else):
the policy draws lengths with densities on a linear scale, so an isotropic scale ``s`` of ``k`` free lengths
carries the measure ``s^k d ln s``. Scales that take a free length outside the space's range are excluded,
as the sampler cannot draw them. The share of that distribution inside a volume range, averaged over the
samples, is the *reward-implied* share, to compare with the samples' own share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from discovery.crystal import Crystal
from discovery.gfn.space import free_dims_table

DEFAULT_Z_GRID = np.linspace(-6.0, 6.0, 49)
"""z = (ln V − μ)/σ of the rescaled cells (0.25 apart: the volume model's σ of ln V₀ is ~0.12)."""


@dataclass(frozen=True)
class VolumeFit:
    """Reward-implied against sampled volume per atom (``n`` crystals profiled, ``vrange`` in Å³/atom)."""

    n: int
    vrange: tuple[float, float]
    implied_share_in_range: float
    sampled_share_in_range: float
    implied_share_below: float
    sampled_share_below: float
    implied_mean_z: float
    sampled_mean_z: float
    sampled_z_p5: float
    sampled_z_p95: float

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def rescaled(crystal: Crystal, volume_per_atom: float, *, current: float) -> Crystal:
    """``crystal`` with its lattice lengths scaled by (target / current volume per atom)^(1/3) (angles kept)."""
    s = float((volume_per_atom / current) ** (1.0 / 3.0))
    return dataclasses.replace(crystal, a=crystal.a * s, b=crystal.b * s, c=crystal.c * s)


def volume_fit(crystals: Sequence[Crystal], log_reward: Callable[[Sequence[Crystal]], np.ndarray], *,
               ln_v0: tuple[np.ndarray, np.ndarray], vrange: tuple[float, float],
               length_range: tuple[float, float], z_grid: np.ndarray = DEFAULT_Z_GRID) -> VolumeFit:
    """Compare the samples' volumes with the reward-implied distribution (module docstring).

    ``ln_v0``: (mean (n,), std (n,)) of ln V₀ (V₀ in Å³/atom) of ``crystals``; ``log_reward``: crystals → (m,)
    natural-log rewards (the training reward); ``length_range``: the space's lattice-length bounds (Å).
    Costs ``len(z_grid) · n`` reward evaluations."""
    from discovery.proxy.lattice import volumes_per_atom

    if not crystals:
        raise ValueError("volume_fit needs at least one crystal")
    mu, sd = (np.asarray(a, dtype=float) for a in ln_v0)
    v = volumes_per_atom(crystals)
    grid = np.asarray(z_grid, dtype=float)
    ln_v = mu[None, :] + grid[:, None] * sd[None, :]  # (G, n)
    free = free_dims_table()
    k = np.array([int(free[c.space_group][:3].sum()) for c in crystals])
    scale = np.exp((ln_v - np.log(v)[None, :]) / 3.0)  # (G, n) length scale of each rescaled cell
    lengths = np.array([[c.a, c.b, c.c] for c in crystals])  # (n, 3)
    lo, hi = length_range
    scaled = scale[:, :, None] * lengths[None, :, :]  # (G, n, 3)
    feasible = ((scaled >= lo - 1e-9) & (scaled <= hi + 1e-9)).all(axis=2)
    cells = [rescaled(c, float(np.exp(ln_v[g, i])), current=float(v[i]))
             for g in range(len(grid)) for i, c in enumerate(crystals)]
    log_r = np.asarray(log_reward(cells), dtype=float).reshape(len(grid), len(crystals))
    log_p = np.where(feasible & np.isfinite(log_r), log_r + ln_v * k[None, :] / 3.0, -np.inf)
    top = log_p.max(axis=0, keepdims=True)
    p = np.exp(log_p - np.where(np.isfinite(top), top, 0.0))
    total = p.sum(axis=0, keepdims=True)
    ok = total[0] > 0
    p = p[:, ok] / total[:, ok]
    volume = np.exp(ln_v[:, ok])
    inside = (volume >= vrange[0]) & (volume <= vrange[1])
    below = volume < vrange[0]
    z_s = (np.log(v) - mu) / sd
    return VolumeFit(
        n=int(ok.sum()), vrange=(float(vrange[0]), float(vrange[1])),
        implied_share_in_range=float((p * inside).sum(axis=0).mean()),
        sampled_share_in_range=float(((v >= vrange[0]) & (v <= vrange[1]))[ok].mean()),
        implied_share_below=float((p * below).sum(axis=0).mean()),
        sampled_share_below=float((v < vrange[0])[ok].mean()),
        implied_mean_z=float((p * grid[:, None]).sum(axis=0).mean()),
        sampled_mean_z=float(np.mean(z_s[ok])),
        sampled_z_p5=float(np.percentile(z_s[ok], 5)), sampled_z_p95=float(np.percentile(z_s[ok], 95)))
