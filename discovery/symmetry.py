"""Crystallographic tables for the 230 space groups and the exact Wyckoff compatibility check.

The tables are read from ``discovery/data/space_groups.json`` (regenerate with
``python -m discovery.symmetry_build``); nothing here calls pyxtal at run time.

Wyckoff compatibility (exact). A composition (atoms per element in the conventional cell) fits a
space group when each element's count is a sum of Wyckoff multiplicities where positions with
zero degrees of freedom are occupied at most once *in the whole cell* and positions with free
parameters may be reused. Positions with equal multiplicity are interchangeable for counting, so
the fixed positions form a small *resource vector* (how many fixed positions of each multiplicity
are still free), and each element count maps resource states to resource states. The check is a
search over these states, exact where pyxtal's greedy ``check_compatible`` is not (pyxtal
issue 305).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

CrystalLatticeSystem = Literal[
    "triclinic", "monoclinic", "orthorhombic", "tetragonal",
    "trigonal-rhombohedral", "trigonal-hexagonal", "hexagonal", "cubic",
]
PointSymmetry = Literal["enantiomorphic-polar", "centrosymmetric", "polar", "enantiomorphic", "non-centrosymmetric"]
LatticeSystem = Literal["triclinic", "monoclinic", "orthorhombic", "tetragonal", "hexagonal", "cubic"]

CRYSTAL_LATTICE_SYSTEMS: tuple[str, ...] = (
    "triclinic", "monoclinic", "orthorhombic", "tetragonal",
    "trigonal-rhombohedral", "trigonal-hexagonal", "hexagonal", "cubic",
)
POINT_SYMMETRIES: tuple[str, ...] = (
    "enantiomorphic-polar", "centrosymmetric", "polar", "enantiomorphic", "non-centrosymmetric",
)
LATTICE_SYSTEMS: tuple[str, ...] = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "hexagonal", "cubic")


@dataclass(frozen=True, slots=True)
class WyckoffPosition:
    multiplicity: int  # sites in the conventional cell
    letter: str
    dof: int  # free coordinates; 0 means the position can be occupied once


@dataclass(frozen=True, slots=True)
class SpaceGroupInfo:
    number: int
    symbol: str
    point_group: str
    crystal_lattice_system: CrystalLatticeSystem
    point_symmetry: PointSymmetry
    lattice_system: LatticeSystem
    wyckoff: tuple[WyckoffPosition, ...]

    def fixed_multiplicities(self, max_count: int) -> tuple[int, ...]:
        """Multiplicities (≤ ``max_count``) of the zero-dof positions, one entry per position."""
        return tuple(sorted(w.multiplicity for w in self.wyckoff if w.dof == 0 and w.multiplicity <= max_count))

    def free_multiplicities(self, max_count: int) -> tuple[int, ...]:
        """Distinct multiplicities (≤ ``max_count``) of the positions with free parameters."""
        return tuple(sorted({w.multiplicity for w in self.wyckoff if w.dof > 0 and w.multiplicity <= max_count}))


@cache
def _load() -> tuple[SpaceGroupInfo, ...]:
    raw = json.loads(resources.files("discovery").joinpath("data/space_groups.json").read_text())
    return tuple(
        SpaceGroupInfo(
            number=d["number"],
            symbol=d["symbol"],
            point_group=d["point_group"],
            crystal_lattice_system=d["crystal_lattice_system"],
            point_symmetry=d["point_symmetry"],
            lattice_system=d["lattice_system"],
            wyckoff=tuple(WyckoffPosition(m, letter, dof) for m, letter, dof in d["wyckoff"]),
        )
        for d in raw["space_groups"]
    )


def space_group(number: int) -> SpaceGroupInfo:
    if not 1 <= int(number) <= 230:
        raise ValueError(f"space group {number} is outside 1–230")
    return _load()[int(number) - 1]


def all_space_groups() -> tuple[SpaceGroupInfo, ...]:
    return _load()


def space_groups_where(
    *,
    crystal_lattice_systems: Iterable[str] | None = None,
    point_symmetries: Iterable[str] | None = None,
    numbers: Iterable[int] | None = None,
) -> tuple[int, ...]:
    """Space-group numbers matching every given filter (a filter left ``None`` matches all)."""
    cls = set(crystal_lattice_systems) if crystal_lattice_systems is not None else None
    ps = set(point_symmetries) if point_symmetries is not None else None
    nums = {int(n) for n in numbers} if numbers is not None else None
    for name in cls or ():
        if name not in CRYSTAL_LATTICE_SYSTEMS:
            raise ValueError(f"unknown crystal-lattice system {name!r}; choose from {', '.join(CRYSTAL_LATTICE_SYSTEMS)}")
    for name in ps or ():
        if name not in POINT_SYMMETRIES:
            raise ValueError(f"unknown point symmetry {name!r}; choose from {', '.join(POINT_SYMMETRIES)}")
    return tuple(
        g.number for g in _load()
        if (cls is None or g.crystal_lattice_system in cls)
        and (ps is None or g.point_symmetry in ps)
        and (nums is None or g.number in nums)
    )


# ---------------------------------------------------------------------------------------------
# Exact Wyckoff compatibility through resource states
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WyckoffAlgebra:
    """Resource-state transitions of one space group for element counts 1..``max_count``.

    ``radices[j]`` is the number of zero-dof positions of multiplicity ``fixed_mults[j]``; a resource
    state is the tuple of how many of each are still free, encoded in mixed radix as an int in
    ``[0, n_states)``; state ``n_states - 1`` is "all free" (the start). ``transitions[n]`` lists,
    for every state, the distinct states reachable by placing one element with ``n`` atoms.
    """

    fixed_mults: tuple[int, ...]
    radices: tuple[int, ...]
    free_mults: tuple[int, ...]
    max_count: int
    transitions: tuple[tuple[tuple[int, ...], ...], ...]  # [n][state] -> successor states
    tag: tuple[object, ...] = ()  # distinguishes restricted algebras (discovery.symmetry_decode)

    @property
    def n_states(self) -> int:
        if self.tag:  # restricted algebras list their (reachable) states explicitly
            return len(self.transitions[1])
        out = 1
        for r in self.radices:
            out *= r + 1
        return out

    @property
    def start(self) -> int:
        return self.n_states - 1

    @property
    def key(self) -> tuple[object, ...]:
        """Space groups with equal keys have identical count algebra (used to share tables)."""
        return (self.fixed_mults, self.radices, self.free_mults, self.max_count, self.tag)

    def successors(self, state: int, n: int) -> tuple[int, ...]:
        return self.transitions[n][state] if 1 <= n <= self.max_count else ()

    def feasible_states(self, counts: Iterable[int]) -> set[int]:
        """Resource states reachable after placing elements with these counts (empty: incompatible)."""
        states = {self.start}
        for n in counts:
            states = {s2 for s in states for s2 in self.successors(s, int(n))}
            if not states:
                break
        return states


def _free_reach(free_mults: Sequence[int], limit: int) -> list[bool]:
    reach = [False] * (limit + 1)
    reach[0] = True
    for total in range(1, limit + 1):
        reach[total] = any(m <= total and reach[total - m] for m in free_mults)
    return reach


@cache
def wyckoff_algebra(sg: int, max_count: int = 16) -> WyckoffAlgebra:
    info = space_group(sg)
    counter = Counter(info.fixed_multiplicities(max_count))
    fixed = tuple(sorted(counter))
    radices = tuple(counter[m] for m in fixed)
    free = info.free_multiplicities(max_count)
    reach = _free_reach(free, max_count)
    n_states = 1
    for r in radices:
        n_states *= r + 1

    def decode(s: int) -> list[int]:
        out = []
        for r in reversed(radices):
            out.append(s % (r + 1))
            s //= r + 1
        return out[::-1]

    def encode(v: Sequence[int]) -> int:
        s = 0
        for x, r in zip(v, radices, strict=True):
            s = s * (r + 1) + x
        return s

    trans: list[tuple[tuple[int, ...], ...]] = [()]
    for n in range(1, max_count + 1):
        per_state = []
        for s in range(n_states):
            avail = decode(s)
            nxt = set()
            for use in itertools.product(*(range(a + 1) for a in avail)):
                used = sum(u * m for u, m in zip(use, fixed, strict=True))
                if used <= n and reach[n - used]:
                    nxt.add(encode([a - u for a, u in zip(avail, use, strict=True)]))
            per_state.append(tuple(sorted(nxt)))
        trans.append(tuple(per_state))
    return WyckoffAlgebra(fixed, radices, free, max_count, tuple(trans))


def is_wyckoff_compatible(sg: int, counts: Iterable[int]) -> bool:
    """Exact: can elements with these atom counts occupy Wyckoff positions of ``sg``?"""
    counts = [int(c) for c in counts]
    if not counts or min(counts) < 1:
        return False
    return bool(wyckoff_algebra(sg, max(16, max(counts))).feasible_states(counts))
