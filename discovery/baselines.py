"""Search baselines without a generator: uniform random crystals in a Crystal-GFN search space.

:class:`RandomCrystalSampler` draws crystals from the same constrained space the Crystal-GFN
builds (same element vocabulary, element/atom limits, space groups and lattice ranges, same
validity rules), with no learned preference:

1. number of distinct elements ``k`` uniform in ``[min_elements, max_elements]``;
2. ``k`` distinct elements uniform among the vocabulary;
3. atoms per element uniform in ``1..max_atoms_per_element`` each;
   rejected (back to 1) unless the total is ≤ ``max_atoms``, the composition passes SMACT
   (:func:`discovery.chemistry.is_smact_valid`, identical to ``smact_validity(..., include_alloys=False)``)
   and at least one allowed space group hosts it (:func:`discovery.symmetry.is_wyckoff_compatible`, exact);
4. space group uniform among the allowed groups compatible with the composition;
5. lattice parameters uniform in the space's ranges for the free parameters of the group's lattice
   system (cubic a; tetragonal/hexagonal a, c; orthorhombic a, b, c; monoclinic a, b, c, β;
   triclinic all six, γ uniform in the interval that keeps the cell valid given α and β), the
   others tied as the lattice system requires (90°, 120°, a = b = c).

A rejected draw restarts from step 1, so compositions are uniform among the valid ones *with the same
number of elements*, and ``k``'s share is proportional to the share of valid compositions among
``k``-element draws; space groups are uniform among those compatible with the composition. Nothing
is favoured by a model or a score. Pure numpy; no prefect/mlflow.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from discovery.chemistry import is_smact_valid
from discovery.crystal import Crystal
from discovery.gfn.space import FREE_DIMS, GAMMA_FIXED, SearchSpace, gamma_interval, lattice_system_of
from discovery.symmetry import is_wyckoff_compatible


class RandomCrystalSampler:
    """Uniform random valid crystals of ``space`` (see the module docstring for the distribution).

    Example::

        sampler = RandomCrystalSampler(SearchSpace(elements=("Li", "Mn", "O"), max_atoms=20))
        crystals = sampler.sample(1000, seed=0)
    """

    def __init__(self, space: SearchSpace, *, max_tries: int = 2_000_000) -> None:
        self.space = space
        self.max_tries = max_tries
        self._compatible_cache: dict[tuple[int, ...], tuple[int, ...]] = {}

    @cached_property
    def space_groups(self) -> tuple[int, ...]:
        return self.space.candidate_space_groups

    def compatible_space_groups(self, counts: tuple[int, ...]) -> tuple[int, ...]:
        """Allowed space groups whose Wyckoff positions host elements with these atom counts (exact)."""
        key = tuple(sorted(counts))
        if key not in self._compatible_cache:
            self._compatible_cache[key] = tuple(sg for sg in self.space_groups if is_wyckoff_compatible(sg, key))
        return self._compatible_cache[key]

    def _composition(self, rng: np.random.Generator) -> tuple[dict[str, int], tuple[int, ...]]:
        s = self.space
        elements = s.elements
        lo = min(s.min_elements, len(elements))
        hi = min(s.max_elements, len(elements))
        for _ in range(self.max_tries):
            k = int(rng.integers(lo, hi + 1))
            chosen = rng.choice(len(elements), size=k, replace=False)
            counts = rng.integers(1, s.max_atoms_per_element + 1, size=k)
            if int(counts.sum()) > s.max_atoms:
                continue
            comp = {elements[int(i)]: int(n) for i, n in zip(chosen, counts, strict=True)}
            if not is_smact_valid(comp):
                continue
            groups = self.compatible_space_groups(tuple(int(n) for n in counts))
            if groups:
                return comp, groups
        raise RuntimeError(f"no valid composition found in {self.max_tries} random draws; is the space feasible?")

    def _lattice(self, sg: int, rng: np.random.Generator) -> tuple[float, float, float, float, float, float]:
        lo, hi = self.space.length_range
        alo, ahi = self.space.angle_range
        system = lattice_system_of(sg)
        free = FREE_DIMS[system]
        a, b, c = (float(rng.uniform(lo, hi)) for _ in range(3))
        if not free[1]:
            b = a
        if not free[2]:
            c = a
        alpha = beta = gamma = 90.0
        if system == "triclinic":
            alpha, beta = float(rng.uniform(alo, ahi)), float(rng.uniform(alo, ahi))
            g_lo, g_hi = gamma_interval(np.array(alpha), np.array(beta), alo, ahi)
            gamma = float(rng.uniform(float(g_lo), float(g_hi)))
        elif system == "monoclinic":
            beta = float(rng.uniform(alo, ahi))
        gamma = GAMMA_FIXED.get(system, gamma)
        return a, b, c, alpha, beta, gamma

    def sample_one(self, rng: np.random.Generator, *, id: str = "") -> Crystal:
        comp, groups = self._composition(rng)
        sg = int(groups[int(rng.integers(len(groups)))])
        return Crystal(sg, comp, *self._lattice(sg, rng), id=id)

    def sample(self, n: int, *, seed: int = 0, progress: Callable[[int], None] | None = None) -> list[Crystal]:
        """``n`` independent random crystals (ids ``random-0`` …), deterministic for ``seed``."""
        rng = np.random.default_rng(seed)
        out: list[Crystal] = []
        for i in range(n):
            out.append(self.sample_one(rng, id=f"random-{i}"))
            if progress is not None and ((i + 1) % 256 == 0 or i + 1 == n):
                progress(i + 1)
        return out
