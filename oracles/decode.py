"""Decoding crystal-table rows into 3-D structures (pyxtal Wyckoff placement in the sampled lattice).

A crystal-table row fixes the space group, the conventional-cell composition and the lattice
(a, b, c in Å, angles in degrees) but no atomic coordinates. :func:`decode_crystal` places the atoms
on Wyckoff positions with ``pyxtal.from_random`` *inside the given lattice*, retries with different
seeds, and rejects structures whose atoms are too close. pyxtal does not reject unphysical cells when
the lattice is given (NaCl with a = 3 Å gives 1.5 Å bonds), hence the distance check.

Distance criterion: for every pair of atoms (periodic images included), ``d_ij ≥ ratio · (r_i + r_j)``
with ASE's covalent radii ``r`` and ``ratio = DecodeSettings.min_distance_ratio``. With
``rescale_volume=True`` a too-small cell is enlarged isotropically (fractional coordinates fixed, so
all distances scale by the same factor) just enough to pass; the factor is reported.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers, covalent_radii
from pymatgen.core import Lattice, Structure

from discovery.crystal import Crystal
from oracles.deadline import TimeLimitExceeded, time_limit


class DecodeError(ValueError):
    """The crystal cannot be decoded; ``kind`` says whether it is impossible or just unlucky."""

    def __init__(self, message: str, *, impossible: bool) -> None:
        super().__init__(message)
        self.impossible = impossible


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeSettings:
    """Options for :func:`decode_crystal`.

    attempts: pyxtal placements tried (different seeds) before giving up.
    timeout_s: wall-clock limit for all attempts together, s (pyxtal can search for many minutes in a
        cell too small for its atoms).
    min_distance_ratio: minimum ``d_ij / (r_cov_i + r_cov_j)`` accepted (dimensionless).
    rescale_volume: enlarge a too-small cell isotropically instead of rejecting it.
    max_volume_scale: largest volume factor that rescaling may apply (dimensionless).
    """

    attempts: int = 8
    timeout_s: float = 60.0
    min_distance_ratio: float = 0.6
    rescale_volume: bool = True
    max_volume_scale: float = 8.0


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded structure; ``volume_scale`` > 1 when the cell was enlarged, ``attempt`` is 0-based."""

    structure: Structure
    attempt: int
    volume_scale: float
    min_distance_ratio: float


@functools.cache
def _lattice_type(space_group: int) -> str:
    from pyxtal.symmetry import Group

    return str(Group(space_group).lattice_type)


def min_distance_ratio(structure: Structure) -> float:
    """Smallest ``d_ij / (r_cov_i + r_cov_j)`` over all pairs and periodic images (``inf`` if none < 4 Å)."""
    radii = np.array([covalent_radii[atomic_numbers[site.specie.symbol]] for site in structure])
    cutoff = max(4.0, 2.0 * float(radii.max()))
    centers, neighbors, _, dists = structure.get_neighbor_list(cutoff)
    if len(dists) == 0:
        return math.inf
    ratios = dists / (radii[centers] + radii[neighbors])
    return float(ratios.min())


def _place(crystal: Crystal, rng: np.random.Generator) -> Structure:
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice as PxLattice

    # The crystal's own species order: for generated crystals the canonical (electronegativity) order, the
    # one in which discovery.symmetry_decode guarantees that pyxtal's sequential placement succeeds.
    species = list(crystal.counts)
    lattice = PxLattice.from_para(*crystal.lattice, ltype=_lattice_type(crystal.space_group), random_state=rng)
    xtal = pyxtal()
    xtal.from_random(3, crystal.space_group, species, [crystal.counts[s] for s in species],
                     lattice=lattice, random_state=rng)
    if not xtal.valid:
        raise RuntimeError("pyxtal could not place the atoms in this lattice")
    return xtal.to_pymatgen()


def decode_crystal(crystal: Crystal, *, seed: int = 0, settings: DecodeSettings | None = None) -> Decoded:
    """Decode one crystal into a 3-D structure; raises :class:`DecodeError` with the reason.

    Deterministic for a given ``seed``. ``impossible=True`` on the error means no seed can help
    (composition incompatible with the space group's Wyckoff positions, unknown element, bad cell).
    """
    from pyxtal.msg import Comp_CompatibilityError

    settings = settings or DecodeSettings()
    if not math.isfinite(crystal.volume):
        raise DecodeError(f"lattice angles {crystal.lattice[3:]} do not form a valid cell", impossible=True)
    unknown = [el for el in crystal.counts if el not in atomic_numbers]
    if unknown:
        raise DecodeError(f"unknown element(s) {unknown}", impossible=True)
    last_problem = "no attempt made"
    best: tuple[float, int, Structure] | None = None
    deadline = time.monotonic() + settings.timeout_s
    for attempt in range(settings.attempts):
        rng = np.random.default_rng([seed, attempt])
        try:
            with time_limit(max(deadline - time.monotonic(), 0.0)):
                structure = _place(crystal, rng)
        except TimeLimitExceeded:
            raise DecodeError(f"pyxtal found no acceptable placement within {settings.timeout_s:g} s "
                              f"({attempt + 1} of {settings.attempts} attempts started; last: {last_problem})",
                              impossible=False) from None
        except Comp_CompatibilityError:
            raise DecodeError(
                f"composition {crystal.formula} is not compatible with the Wyckoff positions of "
                f"space group {crystal.space_group}", impossible=True) from None
        except Exception as exc:  # pyxtal raises many kinds for unlucky placements
            last_problem = f"pyxtal failed ({type(exc).__name__}: {exc})"
            continue
        ratio = min_distance_ratio(structure)
        if ratio >= settings.min_distance_ratio:
            return Decoded(structure, attempt, 1.0, ratio)
        last_problem = (f"atoms too close (min d/(r_i+r_j) = {ratio:.2f} < {settings.min_distance_ratio})")
        if best is None or ratio > best[0]:
            best = (ratio, attempt, structure)
    if settings.rescale_volume and best is not None and best[0] > 0:
        ratio, attempt, structure = best
        length_scale = settings.min_distance_ratio / ratio * 1.001
        if length_scale**3 <= settings.max_volume_scale:
            lat = structure.lattice
            a, b, c = (x * length_scale for x in lat.abc)
            scaled = Structure(Lattice.from_parameters(a, b, c, *lat.angles), structure.species, structure.frac_coords)
            return Decoded(scaled, attempt, length_scale**3, min_distance_ratio(scaled))
        last_problem += f"; the cell would need a {length_scale**3:.1f}× volume (limit {settings.max_volume_scale}×)"
    raise DecodeError(f"no acceptable placement in {settings.attempts} attempts: {last_problem}", impossible=False)
