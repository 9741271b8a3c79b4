"""Annealed Langevin dynamics (SMLD) on Wyckoff free parameters and free lattice parameters.

For a batch of cells of one space group (each with its own Wyckoff assignment) the state is the vector
``P`` of all orbits' free parameters (on the torus) and, per cell, the free lattice parameters ``q``.
Levels ``i = 0 … L−1`` with ``t_i = i/(L−1)`` (σ geometric from σ_max to σ_min), ``steps`` updates each,
step ``α = η σ_i²``::

    P ← P + α_x/2 · G⁻¹ Aᵀ s_x + √α_x · G^{-½} z          (A: orbit expansion, block-diagonal G⁻¹ per orbit)
    q ← q + α_L/2 · Tᵀ s_y + τ √α_L · z,  τ = 0.15      (the lattice at low temperature, as in the paper)

then one denoising step (Tweedie) ``P += σ_min² G⁻¹ Aᵀ s_x``, ``q += σ_L,min² Tᵀ s_y``.

Start: ``P`` uniform on the torus. Lattice without hint: the learned prior — the cell volume from the
per-element volume fit, the shape (length ratios, free angles) the mean of the training cells of the space
group (of the lattice system when the group has fewer than 3), plus Gaussian noise σ_L,max in ``q``; the lattice chain runs at every level. With a lattice hint: ``q`` starts
exactly at the hint's free parameters, stays fixed (the network told it is at noise level
``hint_sigma``) while σ_L,i > ``hint_sigma``, and runs the low-temperature chain on the remaining levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Element

from discovery.decoder.graph import lattice_tying
from discovery.decoder.model import GraphBatch, ScoreNet
from discovery.decoder.wyckoff import Assignment, wyckoff_sites


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """Langevin schedule: ``levels`` noise levels × ``steps`` updates, step ``η σ²``."""

    levels: int = 20
    steps: int = 8
    eta: float = 0.3
    lattice_temperature: float = 0.15
    hint_sigma: float = 0.02  # ln-length units: ~2 % length noise
    min_distance: float = 0.7  # Å, samples with closer atoms are redrawn


def _level_t(sigma: float, s_max: float, s_min: float) -> float:
    return min(max(math.log(sigma / s_max) / math.log(s_min / s_max), 0.0), 1.0)


@dataclass(slots=True)
class LangevinSample:
    """One sampled cell: free lattice parameters ``q`` and per orbit its free parameters (in [0, 1))."""

    q: np.ndarray
    params: list[np.ndarray]


def langevin(model: ScoreNet, sg: int, assignments: list[Assignment], *, log_l0: float,
             hint_q: np.ndarray | None, prior: np.ndarray, settings: SamplerSettings, gen: torch.Generator
             ) -> list[LangevinSample]:
    """Sample one cell per assignment (all in space group ``sg``); ``log_l0`` = ⅓ ln(prior volume, Å³);
    ``prior``: the prior cell's free lattice parameters (:func:`discovery.decoder.graph.prior_q`)."""
    cfg = model.config
    sites = wyckoff_sites(sg)
    y0_np, t_np, system = lattice_tying(sg)
    b = len(assignments)
    # static expansion: atom rows (3N) × parameter columns (D)
    z_list: list[int] = []
    batch_list: list[int] = []
    blocks: list[tuple[int, int, int]] = []  # (cell, param offset, atom offset) per orbit
    n_atoms = n_par = 0
    orbit_sites = []
    for c, assignment in enumerate(assignments):
        for el, idx in assignment:
            site = sites[idx]
            orbit_sites.append(site)
            blocks.append((c, n_par, n_atoms))
            z_list += [Element(el).Z] * site.multiplicity
            batch_list += [c] * site.multiplicity
            n_atoms += site.multiplicity
            n_par += site.dof
    A = torch.zeros(3 * n_atoms, n_par, dtype=torch.float64)
    t0 = torch.zeros(3 * n_atoms, dtype=torch.float64)
    ginv = torch.zeros(n_par, n_par, dtype=torch.float64)
    groot = torch.zeros(n_par, n_par, dtype=torch.float64)
    for site, (_, po, ao) in zip(orbit_sites, blocks, strict=True):
        m, d = site.multiplicity, site.dof
        t0[3 * ao:3 * (ao + m)] = torch.as_tensor(site.trans).reshape(-1)
        if d:
            A[3 * ao:3 * (ao + m), po:po + d] = torch.as_tensor(site.jac).reshape(3 * m, d)
            ginv[po:po + d, po:po + d] = torch.as_tensor(site.precond)
            groot[po:po + d, po:po + d] = torch.as_tensor(site.noise)
    z = torch.as_tensor(z_list, dtype=torch.long)
    batch = torch.as_tensor(batch_list, dtype=torch.long)
    T = torch.as_tensor(t_np)
    y0 = torch.as_tensor(y0_np)
    nf = T.shape[1]

    P = torch.rand(n_par, generator=gen, dtype=torch.float64)
    if hint_q is not None:
        Q = torch.as_tensor(np.asarray(hint_q, dtype=float)).expand(b, nf).clone()
        t_hint = _level_t(settings.hint_sigma, cfg.sigma_l_max, cfg.sigma_l_min)
    else:
        Q = torch.as_tensor(np.asarray(prior, dtype=float)).expand(b, nf) + cfg.sigma_l_max * torch.randn(b, nf, generator=gen,
                                                                                      dtype=torch.float64)
        t_hint = 0.0
    system_t = torch.full((b,), system, dtype=torch.long)
    l0 = torch.full((b,), log_l0, dtype=torch.float64)

    def scores(t_x: float, t_l: float) -> tuple[torch.Tensor, torch.Tensor]:
        frac = torch.remainder(A @ P + t0, 1.0).reshape(n_atoms, 3)
        y = y0 + Q @ T.T
        g = GraphBatch(z, frac, batch, y, system_t, l0, torch.full((b,), t_x, dtype=torch.float64),
                       torch.full((b,), t_l, dtype=torch.float64))
        pos, lat = (x.to(torch.float64) for x in model(g))
        return ginv @ (A.T @ pos.reshape(-1)), lat @ T

    levels = max(settings.levels, 2)
    with torch.no_grad():
        for i in range(levels):
            t = i / (levels - 1)
            sig_x = cfg.sigma_x_max * (cfg.sigma_x_min / cfg.sigma_x_max) ** t
            sig_l = cfg.sigma_l_max * (cfg.sigma_l_min / cfg.sigma_l_max) ** t
            lattice_on = hint_q is None or sig_l <= settings.hint_sigma
            t_l = t if lattice_on else t_hint
            a_x, a_l = settings.eta * sig_x**2, settings.eta * sig_l**2
            for _ in range(settings.steps):
                s_p, s_q = scores(t, t_l)
                P = P + 0.5 * a_x * s_p + math.sqrt(a_x) * (groot @ torch.randn(n_par, generator=gen,
                                                                                 dtype=torch.float64))
                P = torch.remainder(P, 1.0)
                if lattice_on:
                    Q = Q + 0.5 * a_l * s_q + settings.lattice_temperature * math.sqrt(a_l) * torch.randn(
                        b, nf, generator=gen, dtype=torch.float64)
                    Q = _clamp_lattice(Q, y0, T)
        s_p, s_q = scores(1.0, 1.0)
        P = torch.remainder(P + cfg.sigma_x_min**2 * s_p, 1.0)
        Q = _clamp_lattice(Q + cfg.sigma_l_min**2 * s_q, y0, T)
    out = [LangevinSample(Q[c].numpy().copy(), []) for c in range(b)]
    for site, (c, po, _) in zip(orbit_sites, blocks, strict=True):
        out[c].params.append(P[po:po + site.dof].numpy().copy())
    return out


def _clamp_lattice(Q: torch.Tensor, y0: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Keep lengths in [1, 60] Å and free angles in [55°, 125°] (only free ones move)."""
    y = y0 + Q @ T.T
    lo = torch.tensor([0.0, 0.0, 0.0, math.radians(55)] + [math.radians(55)] * 2, dtype=y.dtype)
    hi = torch.tensor([math.log(60.0)] * 3 + [math.radians(125)] * 3, dtype=y.dtype)
    y = torch.maximum(torch.minimum(y, hi), lo)
    return (y - y0) @ torch.linalg.pinv(T).T  # T has orthogonal columns: the exact inverse on its range
