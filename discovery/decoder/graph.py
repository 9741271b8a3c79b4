"""Periodic neighbour multigraph of a batch of cells, and the lattice parametrisation per crystal system.

The graph is the paper's multigraph in its radius form: an edge i → j for every periodic image of atom
j within ``cutoff`` Å of atom i (several edges between the same pair when the cell is small). Edge
vectors are Cartesian; the score network uses only their lengths for messages and their directions for
the per-atom output vectors, so it is invariant to rotations, translations and permutations, and a cell
with space-group symmetry gives outputs that transform with the symmetry operations (the projection onto
the Wyckoff free parameters loses nothing).

Lattice: ``y = (ln a, ln b, ln c, α, β, γ)`` (Å, radians) is ``y0 + T q`` with ``q`` the parameters free in
the crystal system (standard settings, rhombohedral groups in the hexagonal cell, monoclinic unique axis
b): cubic ``(ln a)``, tetragonal and hexagonal ``(ln a, ln c)``, orthorhombic ``(ln a, ln b, ln c)``,
monoclinic ``(ln a, ln b, ln c, β)``, triclinic all six.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

from discovery.symmetry import space_group

LATTICE_SYSTEM_INDEX = {"triclinic": 0, "monoclinic": 1, "orthorhombic": 2, "tetragonal": 3, "hexagonal": 4,
                        "cubic": 5}


@cache
def lattice_tying(sg: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(y0 (6,), T (6, n_free), lattice-system index)`` for space group ``sg``."""
    system = space_group(sg).lattice_system
    right, hexa = math.pi / 2, 2 * math.pi / 3
    y0 = np.array([0.0, 0.0, 0.0, right, right, right])
    cols: list[list[float]]
    if system == "cubic":
        cols = [[1, 1, 1, 0, 0, 0]]
    elif system in ("tetragonal", "hexagonal"):
        cols = [[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]]
        if system == "hexagonal":
            y0[5] = hexa
    elif system == "orthorhombic":
        cols = [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]]
    elif system == "monoclinic":
        cols = [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]]
        y0[4] = 0.0
    else:
        cols = np.eye(6).tolist()
        y0[3:] = 0.0
    return y0, np.array(cols, dtype=float).T, LATTICE_SYSTEM_INDEX[system]


def lattice_to_q(sg: int, params: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Free lattice parameters ``q`` of ``(a, b, c, α, β, γ)`` (Å, degrees): least-squares fit ``y0 + T q``."""
    a, b, c, al, be, ga = (float(x) for x in params)
    y = np.array([math.log(a), math.log(b), math.log(c), math.radians(al), math.radians(be), math.radians(ga)])
    y0, T, _ = lattice_tying(sg)
    return np.linalg.lstsq(T, y - y0, rcond=None)[0]


def q_to_parameters(sg: int, q: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """``(a, b, c, α, β, γ)`` in Å and degrees from free parameters ``q``."""
    y0, T, _ = lattice_tying(sg)
    y = y0 + T @ np.asarray(q, dtype=float)
    return (math.exp(y[0]), math.exp(y[1]), math.exp(y[2]),
            math.degrees(y[3]), math.degrees(y[4]), math.degrees(y[5]))


def prior_q(sg: int, log_l0: float, shape: np.ndarray | list[float] | None = None) -> np.ndarray:
    """Free lattice parameters of the prior cell: ``shape`` = mean ``(ln a, ln b, ln c) − ⅓ ln V`` and mean angles
    (rad) of training cells (None: equal lengths, the system's fixed angles, 90° for free ones), projected onto
    the crystal system and scaled to volume ``exp(3 log_l0)`` Å³."""
    y0, T, _ = lattice_tying(sg)
    cand = y0.copy() if shape is None else np.asarray(shape, dtype=float).copy()
    cand[:3] = (0.0, 0.0, 0.0) if shape is None else cand[:3]
    y = y0 + T @ (np.linalg.pinv(T) @ (cand - y0))
    params = np.array([*np.exp(y[:3]), *np.degrees(y[3:])])
    vol = float(np.abs(np.linalg.det(_matrix_np(params))))
    y[:3] += log_l0 - math.log(max(vol, 1e-9)) / 3
    return np.linalg.pinv(T) @ (y - y0)


def _matrix_np(params: np.ndarray) -> np.ndarray:
    return lattice_matrix(torch.as_tensor(np.array([[*np.log(params[:3]), *np.radians(params[3:])]]))).numpy()[0]


def lattice_matrix(y: torch.Tensor) -> torch.Tensor:
    """Row-vector lattice matrices (B, 3, 3) in Å from ``y`` (B, 6) = (ln a, ln b, ln c, α, β, γ)."""
    a, b, c = torch.exp(y[:, 0]), torch.exp(y[:, 1]), torch.exp(y[:, 2])
    ca, cb, cg = torch.cos(y[:, 3]), torch.cos(y[:, 4]), torch.cos(y[:, 5])
    sg = torch.sin(y[:, 5]).clamp_min(1e-3)
    cy = (ca - cb * cg) / sg
    cz = torch.sqrt((1 - cb**2 - cy**2).clamp_min(1e-4))
    zero = torch.zeros_like(a)
    va = torch.stack([a, zero, zero], -1)
    vb = torch.stack([b * cg, b * sg, zero], -1)
    vc = torch.stack([c * cb, c * cy, c * cz], -1)
    return torch.stack([va, vb, vc], 1)


def radius_graph(frac: torch.Tensor, lattice: torch.Tensor, batch: torch.Tensor, cutoff: float, *,
                 max_images: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Periodic radius graph. ``frac`` (N, 3) fractional, ``lattice`` (B, 3, 3) rows in Å, ``batch`` (N,)
    structure index. Returns ``src`` (E,), ``dst`` (E,), ``vec`` (E, 3) Cartesian Å from src to dst's image.
    Images per axis: enough to cover ``cutoff`` (the perpendicular width), at most ``max_images``."""
    srcs, dsts, vecs = [], [], []
    frac = torch.remainder(frac, 1.0)
    counts = torch.bincount(batch, minlength=lattice.shape[0]).tolist()
    offset = 0
    for b, n in enumerate(counts):
        if n == 0:
            continue
        lat = lattice[b]
        f = frac[offset:offset + n]
        vol = torch.abs(torch.det(lat))
        cross = torch.stack([torch.linalg.cross(lat[1], lat[2]), torch.linalg.cross(lat[2], lat[0]),
                             torch.linalg.cross(lat[0], lat[1])])
        width = vol / cross.norm(dim=1).clamp_min(1e-6)
        reps = [min(max_images, math.ceil(cutoff / max(float(w), 1e-6))) for w in width]
        rng = [torch.arange(-r, r + 1, dtype=f.dtype) for r in reps]
        images = torch.cartesian_prod(*rng).reshape(-1, 3)  # (K, 3)
        d = f[None, :, None, :] + images[None, None, :, :] - f[:, None, None, :]  # (n, n, K, 3)
        cart = d @ lat  # (n, n, K, 3)
        dist = cart.norm(dim=-1)
        mask = (dist < cutoff) & (dist > 1e-6)
        i, j, _ = mask.nonzero(as_tuple=True)
        srcs.append(i + offset)
        dsts.append(j + offset)
        vecs.append(cart[mask])
        offset += n
    return torch.cat(srcs), torch.cat(dsts), torch.cat(vecs)
