"""The Crystal-GFN search space and sample-time restrictions.

A :class:`SearchSpace` fixes the action space a model is trained on (element vocabulary, atom
limits, space groups, lattice ranges). :meth:`SearchSpace.restrict` narrows it at sample time
without retraining (the paper's experiments A–D): fewer elements, fewer atoms, a subset of space
groups (by number, crystal-lattice system or point symmetry), narrower length/angle ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property

import numpy as np

from discovery.chemistry import PAPER_ELEMENTS, canonical_order, element_chem
from discovery.gfn.constraints import CompositionConstraints, CompositionRules
from discovery.symmetry import space_group, space_groups_where

# Free lattice parameters per lattice system, in the order a, b, c, alpha, beta, gamma.
FREE_DIMS: dict[str, tuple[bool, ...]] = {
    "triclinic": (True, True, True, True, True, True),
    "monoclinic": (True, True, True, False, True, False),
    "orthorhombic": (True, True, True, False, False, False),
    "tetragonal": (True, False, True, False, False, False),
    "hexagonal": (True, False, True, False, False, False),
    "cubic": (True, False, False, False, False, False),
}
GAMMA_FIXED: dict[str, float] = {"hexagonal": 120.0}
ANGLE_MARGIN = 1.0  # degrees kept away from the cell-validity limits of triclinic angles


@dataclass(frozen=True)
class SearchSpace:
    """What the generator may build. Lengths in Å, angles in degrees."""

    elements: tuple[str, ...] = PAPER_ELEMENTS
    max_elements: int = 5
    min_elements: int = 2
    max_atoms_per_element: int = 16
    max_atoms: int = 80
    space_groups: tuple[int, ...] | None = None
    length_range: tuple[float, float] = (0.9, 100.0)
    angle_range: tuple[float, float] = (50.0, 150.0)

    def __post_init__(self) -> None:
        for el in self.elements:
            element_chem(el)  # raises a clear ValueError for unknown or unusable elements
        object.__setattr__(self, "elements", canonical_order(self.elements))
        if self.space_groups is not None:
            sgs = tuple(sorted({int(s) for s in self.space_groups}))
            if not sgs or sgs[0] < 1 or sgs[-1] > 230:
                raise ValueError(f"space_groups must be numbers in 1–230, got {self.space_groups}")
            object.__setattr__(self, "space_groups", sgs)
        lo, hi = (float(x) for x in self.length_range)
        if not 0 < lo < hi:
            raise ValueError(f"length_range {self.length_range} must satisfy 0 < min < max (Å)")
        alo, ahi = (float(x) for x in self.angle_range)
        grid = np.linspace(alo, ahi, 61)
        g_lo, g_hi = gamma_interval(grid[:, None], grid[None, :], alo, ahi)
        if not 0 < alo < ahi < 180 or not (g_hi - g_lo > 1.0).all():
            raise ValueError(
                f"angle_range {self.angle_range} must satisfy 0 < min < max < 180 and leave room for valid "
                "triclinic cells (α + β > γ, α + β + γ < 360 for all α, β in range), e.g. 50–150 or 75–135"
            )
        object.__setattr__(self, "length_range", (lo, hi))
        object.__setattr__(self, "angle_range", (alo, ahi))
        if self.max_atoms < self.min_elements:
            raise ValueError(f"max_atoms={self.max_atoms} is below min_elements={self.min_elements}")
        self.rules  # validates the limits  # noqa: B018

    @cached_property
    def rules(self) -> CompositionRules:
        return CompositionRules(
            self.elements,
            max_elements=min(self.max_elements, len(self.elements)),
            min_elements=min(self.min_elements, len(self.elements)),
            max_per_element=self.max_atoms_per_element,
            max_atoms=self.max_atoms,
        )

    @cached_property
    def constraints(self) -> CompositionConstraints:
        """Look-ahead tables, from the on-disk table cache where it has them (:mod:`discovery.gfn.tables`)."""
        return CompositionConstraints.cached(self.rules)

    @cached_property
    def candidate_space_groups(self) -> tuple[int, ...]:
        return self.space_groups if self.space_groups is not None else tuple(range(1, 231))

    @cached_property
    def feasible_space_groups(self) -> tuple[int, ...]:
        """Space groups that host at least one valid composition (builds the look-ahead tables)."""
        return tuple(sg for sg in self.candidate_space_groups if self.constraints.space_group_feasible(sg))

    def check_feasible(self) -> None:
        """Raise ``ValueError`` with a clear message if no valid crystal exists in this space."""
        if not self.feasible_space_groups:
            raise ValueError(
                f"impossible search space: no composition of {', '.join(self.elements)} with "
                f"{self.min_elements}–{self.max_elements} elements, ≤ {self.max_atoms_per_element} atoms per element "
                f"and ≤ {self.max_atoms} atoms is both SMACT-valid (charge neutral, Pauling test) and "
                f"Wyckoff-compatible with space group(s) {_short(self.candidate_space_groups)}; allow more elements, "
                "more atoms or other space groups"
            )

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["elements"] = list(self.elements)
        d["space_groups"] = list(self.space_groups) if self.space_groups is not None else None
        d["length_range"] = list(self.length_range)
        d["angle_range"] = list(self.angle_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> SearchSpace:
        kw = dict(d)
        for k in ("elements", "space_groups", "length_range", "angle_range"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])  # type: ignore[call-overload,arg-type]
        return cls(**kw)  # type: ignore[arg-type]

    def restrict(
        self,
        *,
        elements: Sequence[str] | None = None,
        max_atoms_per_element: int | None = None,
        max_atoms: int | None = None,
        max_elements: int | None = None,
        space_groups: Iterable[int] | None = None,
        crystal_lattice_systems: Iterable[str] | None = None,
        point_symmetries: Iterable[str] | None = None,
        length_range: tuple[float, float] | None = None,
        angle_range: tuple[float, float] | None = None,
    ) -> SearchSpace:
        """A narrower space for sampling a model trained on this one (never a wider one)."""
        if elements is not None:
            extra = sorted(set(elements) - set(self.elements))
            if extra:
                raise ValueError(f"restricted elements {extra} are not in the model's vocabulary {list(self.elements)}")
        sgs: tuple[int, ...] | None = self.space_groups
        if space_groups is not None or crystal_lattice_systems is not None or point_symmetries is not None:
            chosen = set(space_groups_where(
                crystal_lattice_systems=crystal_lattice_systems, point_symmetries=point_symmetries, numbers=space_groups,
            ))
            sgs = tuple(sorted(chosen & set(self.candidate_space_groups)))
            if not sgs:
                raise ValueError("the space-group restriction leaves no space group of the model's space")
        for rname, rnew, rold in (("length_range", length_range, self.length_range), ("angle_range", angle_range, self.angle_range)):
            if rnew is not None and not (rold[0] <= rnew[0] < rnew[1] <= rold[1]):
                raise ValueError(f"{rname} {rnew} must lie inside the model's {rname} {rold}")
        for name, new, old in (
            ("max_atoms_per_element", max_atoms_per_element, self.max_atoms_per_element),
            ("max_atoms", max_atoms, self.max_atoms),
            ("max_elements", max_elements, self.max_elements),
        ):
            if new is not None and not 1 <= new <= old:
                raise ValueError(f"{name}={new} must be in 1..{old} (the model's limit)")
        out = replace(
            self,
            elements=tuple(elements) if elements is not None else self.elements,
            max_atoms_per_element=max_atoms_per_element or self.max_atoms_per_element,
            max_atoms=max_atoms or self.max_atoms,
            max_elements=max_elements or self.max_elements,
            space_groups=sgs,
            length_range=length_range or self.length_range,
            angle_range=angle_range or self.angle_range,
        )
        out.check_feasible()
        return out


def gamma_interval(alpha: np.ndarray, beta: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Range of γ (degrees) giving a valid cell for angles α, β (degrees), within [lo, hi].

    A cell is valid (positive volume) iff |α − β| < γ < min(α + β, 360 − α − β); a margin of
    ``ANGLE_MARGIN`` keeps cells away from the degenerate limit.
    """
    g_lo = np.maximum(lo, np.abs(alpha - beta) + ANGLE_MARGIN)
    g_hi = np.minimum(np.minimum(hi, alpha + beta - ANGLE_MARGIN), 360.0 - alpha - beta - ANGLE_MARGIN)
    return g_lo, g_hi


def lattice_system_of(sg: int) -> str:
    return space_group(sg).lattice_system


def free_dims_table() -> np.ndarray:
    """(231, 6) bool: free lattice parameters of each space group (row 0 unused)."""
    out = np.zeros((231, 6), dtype=bool)
    for sg in range(1, 231):
        out[sg] = FREE_DIMS[lattice_system_of(sg)]
    return out


def _short(sgs: Sequence[int]) -> str:
    return ", ".join(map(str, sgs)) if len(sgs) <= 8 else f"{sgs[0]}…{sgs[-1]} ({len(sgs)} groups)"
