"""Featurisation of crystals (space group, composition, lattice) into tensors for the proxies.

Element vocabulary: Z = 1 … 94 (index = Z; index 0 is unused). Per-element physical properties come
from pymatgen's element data (missing values filled with the vocabulary mean) and are standardised.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
import spglib
import torch
from pymatgen.core import Element

from discovery.crystal import Crystal
from discovery.datasets.base import MAX_Z, out_of_vocabulary
from discovery.datasets.sources import exact_counts

N_ELEMENTS = MAX_Z + 1  # embedding rows (index 0 unused)
N_PERIODS = 8  # index = period 1 … 7
N_GROUPS = 19  # index = group 1 … 18
N_SPACE_GROUPS = 230
PROPERTY_NAMES: tuple[str, ...] = (
    "Z", "period", "group", "electronegativity", "atomic_radius", "atomic_mass", "mendeleev_no",
    "molar_volume", "melting_point", "ionization_energy", "electron_affinity", "ionic_radius",
    "n_s_valence", "n_p_valence", "n_d_valence", "n_f_valence", "block_s", "block_p", "block_d", "block_f",
)
LATTICE_FEATURES: tuple[str, ...] = (
    "log_a", "log_b", "log_c", "cos_alpha", "cos_beta", "cos_gamma", "log_volume_per_atom",
    "density", "log_n_atoms", "log_max_over_min_length",
    "triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic",
    "centring_P", "centring_ABC", "centring_I", "centring_F", "centring_R",
)


@dataclass(frozen=True)
class ElementTable:
    """Per-element data, row index = Z. ``props``: (95, P) standardised float32."""

    period: np.ndarray
    group: np.ndarray
    props: np.ndarray
    mass: np.ndarray


def _valence(el: Element) -> tuple[float, float, float, float]:
    shells = el.full_electronic_structure
    n_max = max(n for n, _, _ in shells)
    s = sum(o for n, orb, o in shells if orb == "s" and n == n_max)
    p = sum(o for n, orb, o in shells if orb == "p" and n == n_max)
    d = sum(o for n, orb, o in shells if orb == "d" and n == n_max - 1)
    f = sum(o for n, orb, o in shells if orb == "f" and n == n_max - 2)
    return float(s), float(p), float(d), float(f)


def _num(value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


@lru_cache(maxsize=1)
def element_table() -> ElementTable:
    """Build (once per process, ≈ 0.2 s) the element table from pymatgen's element data."""
    rows = np.full((N_ELEMENTS, len(PROPERTY_NAMES)), np.nan)
    period = np.zeros(N_ELEMENTS, dtype=np.int64)
    group = np.zeros(N_ELEMENTS, dtype=np.int64)
    mass = np.zeros(N_ELEMENTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, N_ELEMENTS):
            el = Element.from_Z(z)
            period[z], group[z], mass[z] = el.row, el.group, float(el.atomic_mass)
            block = str(el.block)
            rows[z] = [
                z, el.row, el.group, _num(el.X), _num(el.atomic_radius), _num(el.atomic_mass), _num(el.mendeleev_no),
                _num(el.molar_volume), _num(el.melting_point), _num(el.ionization_energy),
                _num(el.electron_affinity), _num(el.average_ionic_radius) or math.nan, *_valence(el),
                block == "s", block == "p", block == "d", block == "f",
            ]
    body = rows[1:]
    mean = np.nanmean(body, axis=0)
    body = np.where(np.isnan(body), mean, body)
    std = body.std(axis=0)
    std[std == 0] = 1.0
    props = np.zeros_like(rows)
    props[1:] = (body - mean) / std
    return ElementTable(period=period, group=group, props=props.astype(np.float32), mass=mass)


@lru_cache(maxsize=1)
def _space_group_table() -> np.ndarray:
    """(231, 12) float32: crystal-system one-hot (7) and centring one-hot (5), row = space group."""
    table = np.zeros((N_SPACE_GROUPS + 1, 12), dtype=np.float32)
    seen: set[int] = set()
    for hall in range(1, 531):
        sgt = spglib.get_spacegroup_type(hall)
        if sgt is None or sgt.number in seen:
            continue
        seen.add(sgt.number)
        n = sgt.number
        system = 0 if n <= 2 else 1 if n <= 15 else 2 if n <= 74 else 3 if n <= 142 else 4 if n <= 167 else 5 if n <= 194 else 6
        letter = sgt.international_short[0]
        centring = {"P": 0, "A": 1, "B": 1, "C": 1, "I": 2, "F": 3, "R": 4}[letter]
        table[n, system] = 1.0
        table[n, 7 + centring] = 1.0
    return table


@dataclass(frozen=True)
class CrystalFeatures:
    """Tensors for n crystals.

    ``fractions``: (n, 95) atom fractions by Z; ``space_group``: (n,) int64 in 0 … 229 (number − 1);
    ``lattice``: (n, 22) raw lattice/symmetry features (see ``LATTICE_FEATURES``);
    ``stats``: (n, 4P + 3) composition statistics (weighted mean, mean absolute deviation, min, max
    of each standardised element property; number of elements, fraction entropy, largest fraction).
    """

    fractions: torch.Tensor
    space_group: torch.Tensor
    lattice: torch.Tensor
    stats: torch.Tensor

    def __len__(self) -> int:
        return int(self.fractions.shape[0])

    def index(self, idx: torch.Tensor) -> CrystalFeatures:
        return CrystalFeatures(self.fractions[idx], self.space_group[idx], self.lattice[idx], self.stats[idx])


def composition_arrays(counts: Sequence[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Padded (n, K) atomic numbers and (n, K) amounts (atoms per cell; 0 = padding).

    Raises ``ValueError`` naming the first composition with an element outside Z ≤ 94.
    """
    k = max((len(c) for c in counts), default=1)
    zs = np.zeros((len(counts), k), dtype=np.int64)
    amounts = np.zeros((len(counts), k))
    for i, c in enumerate(counts):
        bad = out_of_vocabulary(c)
        if bad:
            raise ValueError(f"composition {c} (row {i + 1}) has element(s) outside the proxy vocabulary (Z ≤ 94): {bad}")
        for j, (el, n) in enumerate(c.items()):
            zs[i, j] = _atomic_number(el)
            amounts[i, j] = n
    return zs, amounts


@cache
def _atomic_number(symbol: str) -> int:
    return int(Element(symbol).Z)


def composition_stats(zs: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """(n, 4P + 3) float32 statistics of element properties over each composition."""
    table = element_table()
    frac = amounts / amounts.sum(axis=1, keepdims=True)
    present = frac > 0
    props = table.props[zs]  # (n, K, P)
    mean = np.einsum("nk,nkp->np", frac, props)
    dev = np.einsum("nk,nkp->np", frac, np.abs(props - mean[:, None, :]))
    big = np.float32(1e6)
    pmin = np.where(present[..., None], props, big).min(axis=1)
    pmax = np.where(present[..., None], props, -big).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(present, frac * np.log(np.where(present, frac, 1.0)), 0.0).sum(axis=1)
    extra = np.stack([present.sum(axis=1), entropy, frac.max(axis=1)], axis=1)
    return np.concatenate([mean, dev, pmin, pmax, extra], axis=1).astype(np.float32)


def dense_fractions(zs: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """(n, 95) float32 atom fractions indexed by Z."""
    out = np.zeros((zs.shape[0], N_ELEMENTS), dtype=np.float32)
    frac = amounts / amounts.sum(axis=1, keepdims=True)
    np.add.at(out, (np.repeat(np.arange(zs.shape[0]), zs.shape[1]), zs.ravel()), frac.ravel())
    out[:, 0] = 0.0
    return out


def featurize(crystals: Sequence[Crystal]) -> CrystalFeatures:
    """Features of crystals (exact fractional counts from ``extra["exact_counts"]`` where present).

    Lengths in Å enter as logs, angles as cosines; volume per atom in Å³ (log); density in g/cm³.
    """
    counts = [exact_counts(c) for c in crystals]
    zs, amounts = composition_arrays(counts)
    n_atoms = amounts.sum(axis=1)
    lat = np.array([c.lattice for c in crystals], dtype=np.float64).reshape(-1, 6)
    cosines = np.cos(np.radians(lat[:, 3:]))
    ca, cb, cg = cosines.T
    gram = np.clip(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg, 1e-6, None)
    volume = lat[:, 0] * lat[:, 1] * lat[:, 2] * np.sqrt(gram)
    mass_g = (element_table().mass[zs] * amounts).sum(axis=1) / 6.02214076e23
    density = mass_g / (volume * 1e-24)
    sg = np.array([c.space_group for c in crystals], dtype=np.int64).reshape(-1)
    if sg.size and (sg.min() < 1 or sg.max() > N_SPACE_GROUPS):
        raise ValueError("space groups must be in 1–230")
    lattice = np.concatenate([
        np.log(lat[:, :3]), cosines, np.log(volume / n_atoms)[:, None], density[:, None],
        np.log(n_atoms)[:, None], np.log(lat[:, :3].max(axis=1) / lat[:, :3].min(axis=1))[:, None],
        _space_group_table()[sg],
    ], axis=1)
    return CrystalFeatures(
        fractions=torch.from_numpy(dense_fractions(zs, amounts)),
        space_group=torch.from_numpy(sg - 1),
        lattice=torch.from_numpy(lattice.astype(np.float32)),
        stats=torch.from_numpy(composition_stats(zs, amounts)),
    )
