"""Wyckoff orbits of a space group: free parameters, orbit expansion, and assignments of a composition.

Each Wyckoff position of a space group (pyxtal's tables, the standard ITA settings; rhombohedral groups in
the hexagonal setting, so "conventional cell" means the same cell as ``discovery.symmetry``) is stored as
an affine map from its free parameters ``p`` (the subset of x, y, z its coordinate triplets use, ``dof``
of them) to the ``m`` sites of the orbit in fractional coordinates::

    site_i = J_i @ p + t_i   (mod 1),   J_i: (3, dof) integer matrix, t_i: (3,)

Because the J_i are integer, ``p mod 1`` changes every site by a lattice vector: the parameters live on a
torus, so periodic (wrapped) noise in ``p`` is well defined. A score on the ``m`` expanded sites
``s_i`` (fractional, shape (m, 3)) is projected back onto ``p`` by the chain rule, ``Σ_i J_iᵀ s_i``, and
preconditioned by ``G⁻¹ = (Σ_i J_iᵀ J_i)⁻¹`` (the orthogonal projection of a full-space Langevin step onto
the orbit's subspace); the Langevin noise in ``p`` then has covariance ``G⁻¹``.

An *assignment* places a composition (atoms per element in the conventional cell) on Wyckoff orbits:
zero-dof positions at most once in the whole cell, positions with free parameters any number of times.
Assignments are enumerated exactly (depth-first, most frequent positions first) and weighted by the
product of the positions' frequencies in the training data (Laplace-smoothed), which also prefers fewer
orbits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np

from discovery.symmetry import is_wyckoff_compatible

Orbit = tuple[str, int]  # (element symbol, index of the Wyckoff position in wyckoff_sites(sg))
Assignment = tuple[Orbit, ...]

MAX_ASSIGNMENTS = 2000  # enumeration cap per (space group, composition); the most frequent come first
NODE_BUDGET = 200_000  # depth-first search nodes per enumeration


class DecoderError(ValueError):
    """A crystal the decoder cannot turn into a structure.

    ``impossible`` is True when no Wyckoff assignment of the composition exists in the space group (no
    decoder can produce it), False for other failures (no valid sample found within the retries).
    """

    def __init__(self, message: str, *, impossible: bool = False) -> None:
        super().__init__(message)
        self.impossible = impossible


@dataclass(frozen=True, slots=True, eq=False)
class WyckoffSite:
    """One Wyckoff position of a space group.

    ``jac``: (m, 3, dof) integer Jacobians J_i; ``trans``: (m, 3) translations t_i (fractional);
    ``precond``: (dof, dof) G⁻¹; ``noise``: (dof, dof) a square root of G⁻¹ (``noise @ noise.T = G⁻¹``).
    """

    sg: int
    index: int
    letter: str
    multiplicity: int
    dof: int
    jac: np.ndarray
    trans: np.ndarray
    precond: np.ndarray
    noise: np.ndarray

    def expand(self, params: np.ndarray) -> np.ndarray:
        """Fractional coordinates (m, 3) in [0, 1) of the orbit for free parameters ``params`` (dof,)."""
        pos = np.einsum("mij,j->mi", self.jac, np.asarray(params, dtype=float).reshape(self.dof)) + self.trans
        return np.mod(pos, 1.0)


@cache
def wyckoff_sites(sg: int) -> tuple[WyckoffSite, ...]:
    """The Wyckoff positions of space group ``sg`` (index 0 = general position), from pyxtal's tables."""
    from pyxtal.symmetry import Group

    if not 1 <= int(sg) <= 230:
        raise DecoderError(f"space group {sg} is not in 1–230", impossible=True)
    group = Group(int(sg))
    sites = []
    for index, wp in enumerate(group.Wyckoff_positions):
        rots = np.array([op.rotation_matrix for op in wp.ops], dtype=float)  # (m, 3, 3)
        trans = np.array([op.translation_vector for op in wp.ops], dtype=float)
        free = [k for k in range(3) if np.any(np.abs(rots[:, :, k]) > 1e-9)]
        dof = int(wp.get_dof())
        if len(free) != dof:
            raise AssertionError(f"sg {sg} {wp.letter}: free coordinates {free} but dof {dof}")
        jac = np.round(rots[:, :, free]).astype(float)
        gram = np.einsum("mia,mib->ab", jac, jac)
        if dof:
            precond = np.linalg.inv(gram)
            noise = np.linalg.cholesky(precond)
        else:
            precond = noise = np.zeros((0, 0))
        sites.append(WyckoffSite(int(sg), index, str(wp.letter), int(wp.multiplicity), dof, jac,
                                 np.mod(trans, 1.0), precond, noise))
    return tuple(sites)


def _element_options(sites: tuple[WyckoffSite, ...], n: int, used: frozenset[int], order: list[int],
                     start: int = 0) -> Iterator[tuple[int, ...]]:
    """Multisets of site indices (in ``order`` positions ≥ start, non-decreasing) whose multiplicities sum
    to ``n``, zero-dof sites not in ``used`` and at most once."""
    if n == 0:
        yield ()
        return
    for k in range(start, len(order)):
        site = sites[order[k]]
        if site.multiplicity > n or (site.dof == 0 and site.index in used):
            continue
        nxt_used = used | {site.index} if site.dof == 0 else used
        nxt_start = k + 1 if site.dof == 0 else k
        for rest in _element_options(sites, n - site.multiplicity, nxt_used, order, nxt_start):
            yield (site.index, *rest)


def enumerate_assignments(sg: int, counts: Mapping[str, int], *, frequencies: Mapping[str, float] | None = None,
                          limit: int = MAX_ASSIGNMENTS) -> list[Assignment]:
    """Wyckoff assignments of ``counts`` (conventional cell) in ``sg``, at most ``limit`` of them.

    Positions are tried most frequent first (``frequencies``: letter → weight), so a capped enumeration
    keeps the likely ones. Raises :class:`DecoderError` (impossible) when there is none.
    """
    sites = wyckoff_sites(sg)
    freq = frequencies or {}
    order = sorted(range(len(sites)), key=lambda i: (-freq.get(sites[i].letter, 0.0), -sites[i].multiplicity, i))
    elements = sorted(counts, key=lambda el: (-int(counts[el]), el))
    if any(int(counts[el]) < 1 for el in elements) or not elements:
        raise DecoderError(f"composition {dict(counts)} has a non-positive count", impossible=True)
    if not is_wyckoff_compatible(sg, [int(counts[el]) for el in elements]):
        raise DecoderError(f"no Wyckoff assignment of {dict(counts)} in space group {sg}", impossible=True)
    found: list[Assignment] = []
    budget = [NODE_BUDGET]

    def dfs(e: int, used: frozenset[int], acc: tuple[Orbit, ...]) -> bool:
        if e == len(elements):
            found.append(acc)
            return len(found) >= limit
        el = elements[e]
        budget[0] -= 1
        if budget[0] < 0:
            return True
        for option in _element_options(sites, int(counts[el]), used, order):
            new_used = used | {i for i in option if sites[i].dof == 0}
            if dfs(e + 1, new_used, acc + tuple((el, i) for i in option)):
                return True
        return False

    dfs(0, frozenset(), ())
    if not found:  # compatible, but the search budget ran out before the first assignment
        raise DecoderError(f"no Wyckoff assignment of {dict(counts)} in space group {sg} found within "
                           f"{NODE_BUDGET} search nodes")
    return found


def assignment_log_weight(sg: int, assignment: Assignment, frequencies: Mapping[str, float] | None) -> float:
    """log Π_orbits P(letter | sg), P Laplace-smoothed from the training counts (uniform without data)."""
    sites = wyckoff_sites(sg)
    freq = frequencies or {}
    total = sum(freq.get(s.letter, 0.0) for s in sites) + 0.5 * len(sites)
    return float(sum(math.log((freq.get(sites[i].letter, 0.0) + 0.5) / total) for _, i in assignment))


def assignment_distribution(sg: int, counts: Mapping[str, int], *, frequencies: Mapping[str, float] | None = None
                            ) -> tuple[list[Assignment], np.ndarray]:
    """The enumerated assignments and their probabilities (∝ weight)."""
    options = enumerate_assignments(sg, counts, frequencies=frequencies)
    logw = np.array([assignment_log_weight(sg, a, frequencies) for a in options])
    w = np.exp(logw - logw.max())
    return options, w / w.sum()


def sample_assignments(sg: int, counts: Mapping[str, int], k: int, rng: np.random.Generator, *,
                       frequencies: Mapping[str, float] | None = None,
                       distribution: tuple[list[Assignment], np.ndarray] | None = None) -> list[Assignment]:
    """``k`` assignments drawn independently with probability ∝ their weight (``distribution``: precomputed
    :func:`assignment_distribution`)."""
    options, p = distribution or assignment_distribution(sg, counts, frequencies=frequencies)
    picks = rng.choice(len(options), size=k, p=p)
    return [options[int(i)] for i in picks]
