"""S.U.N. labels (stable, unique, novel) of oracle results, and the one definition of a *hit*.

Per result, in campaign order (round, then batch rank), :class:`SunLabeler` gives a :class:`SunLabels`:

* ``converged``: the oracle's status is ``ok`` (an ``unconverged``, ``failed``, ``invalid`` or
  ``timeout`` result is never stable, never S.U.N. and never a hit);
* ``stable``: converged and ``e_above_hull`` (eV/atom) ≤ ``stable_at_most`` (the campaign's success bound,
  default 0.1 eV/atom);
* ``novel_formula``: the reduced formula is absent from the known formulas (the hull reference's and the
  seed data's, passed in) and from the reference structures;
* ``novel_structure``: the relaxed structure matches (pymatgen ``StructureMatcher``, ltol 0.2, stol 0.3,
  angle_tol 5°) no reference structure and no converged result of an *earlier round* of the campaign; a
  known formula none of whose structures is shipped cannot be checked and is *not* novel (the hull
  reference knows ~130,000 formulas but ships ~2,700 structures: crediting those would count
  rediscoveries such as rock-salt NaCl);
* ``unique``: the relaxed structure matches no converged result that comes earlier in the campaign
  (same round included): the first of its matcher group;
* ``relaxed_space_group``: spglib via pymatgen ``SpacegroupAnalyzer`` (symprec 0.1 Å) on the relaxed
  structure, next to the ``sampled_space_group`` the generator chose;
* ``dimensionality``: 0–3, Larsen's bonded-network method (``pymatgen.analysis.dimensionality``) on a
  ``MinimumDistanceNN(cutoff=5 Å)`` bond graph: 0 means a packing of isolated molecules or clusters;
* ``sun``: converged ∧ stable ∧ novel_structure ∧ unique, and, with ``zero_dimensional="exclude"``
  (default), a known dimensionality other than 0.

Matching compares only structures of the same reduced formula, so its cost grows with the number of
known polymorphs of a formula, not with the size of the reference. Only converged results enter the
campaign's matcher groups. A result without a structure has no structural labels (all false / None).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from discovery.datasets.reference_structures import ReferenceStructures

if TYPE_CHECKING:
    from pymatgen.core import Structure

ZeroDimensional = Literal["exclude", "include"]
LABEL_FIELDS: tuple[str, ...] = ("converged", "stable", "novel_formula", "novel_structure", "unique", "sun",
                                 "dimensionality", "relaxed_space_group", "sampled_space_group", "match")


def is_hit(status: str, value: float | None, *, at_most: float | None = None, at_least: float | None = None) -> bool:
    """A hit: status ``ok`` and ``value`` finite within [``at_least``, ``at_most``]. Every hit count uses this."""
    if status != "ok" or value is None or not math.isfinite(value):
        return False
    return (at_most is None or value <= at_most) and (at_least is None or value >= at_least)


@dataclass(frozen=True, slots=True)
class SunInput:
    """One oracle result to label: its status, E_hull (eV/atom, None when absent) and relaxed structure."""

    candidate_id: str
    round_index: int
    status: str
    e_above_hull: float | None
    structure: Structure | None
    sampled_space_group: int | None = None


@dataclass(frozen=True, slots=True)
class SunLabels:
    """The labels of one result (see the module docstring). ``match``: id of the first structure it matched."""

    candidate_id: str
    converged: bool
    stable: bool
    novel_formula: bool
    novel_structure: bool
    unique: bool
    sun: bool
    dimensionality: int | None
    relaxed_space_group: int | None
    sampled_space_group: int | None
    match: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SunSettings:
    """``stable_at_most``: E_hull bound in eV/atom; ``zero_dimensional``: whether 0-D packings can be S.U.N.;
    ``symprec``: Å for the relaxed space group; matcher tolerances as in ``StructureMatcher``."""

    stable_at_most: float = 0.1
    zero_dimensional: ZeroDimensional = "exclude"
    symprec: float = 0.1
    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0


@dataclass
class SunLabeler:
    """Labels results one at a time in campaign order, remembering converged structures by formula.

    ``known_formulas``: reduced formulas already known (hull reference, seed data). ``reference``: known
    structures by formula. Feed earlier results (already labelled) with :meth:`remember` before labelling
    new ones, so that uniqueness and novelty are judged against them.
    """

    known_formulas: Collection[str]
    reference: ReferenceStructures = field(default_factory=ReferenceStructures)
    settings: SunSettings = field(default_factory=SunSettings)
    _seen: dict[str, list[tuple[str, int, Structure]]] = field(default_factory=dict, repr=False)
    _matcher: Any = field(default=None, repr=False)

    def _fit(self, a: Structure, b: Structure) -> bool:
        if self._matcher is None:
            from pymatgen.analysis.structure_matcher import StructureMatcher

            s = self.settings
            self._matcher = StructureMatcher(ltol=s.ltol, stol=s.stol, angle_tol=s.angle_tol)
        return bool(self._matcher.fit(a, b))

    def remember(self, item: SunInput) -> None:
        """Add a converged result's structure to the campaign's matcher groups (others are ignored)."""
        if item.status == "ok" and item.structure is not None:
            self._seen.setdefault(item.structure.composition.reduced_formula, []).append(
                (item.candidate_id, item.round_index, item.structure))

    def label(self, item: SunInput) -> SunLabels:
        """Label ``item`` against the reference and every result remembered so far, then remember it."""
        converged = item.status == "ok"
        stable = is_hit(item.status, item.e_above_hull, at_most=self.settings.stable_at_most)
        s = item.structure
        if s is None:
            return SunLabels(item.candidate_id, converged, stable, False, False, False, False, None, None,
                             item.sampled_space_group)
        formula = s.composition.reduced_formula
        novel_formula = formula not in self.known_formulas and formula not in self.reference.formulas()
        known_structures = self.reference.get(formula)
        match = next((ident for ident, ref in known_structures if self._fit(s, ref)), None)
        # A known formula whose structures are not shipped cannot be checked: not novel (never credit a
        # possible rediscovery, e.g. rock-salt NaCl, which the MatBench formulas hold but MP-20 does not).
        novel_structure = match is None and (novel_formula or bool(known_structures))
        unique = True
        # Remembered in campaign order (earlier rounds first), so the first match settles both labels.
        for ident, round_index, other in self._seen.get(formula, ()):
            if self._fit(s, other):
                unique = False
                match = match or ident
                novel_structure = novel_structure and round_index >= item.round_index
                break
        dim = dimensionality(s)
        allowed_dim = dim is not None and (dim != 0 or self.settings.zero_dimensional == "include")
        sun = converged and stable and novel_structure and unique and allowed_dim
        self.remember(item)
        return SunLabels(item.candidate_id, converged, stable, novel_formula, novel_structure, unique, sun, dim,
                         relaxed_space_group(s, symprec=self.settings.symprec), item.sampled_space_group, match)

    def label_all(self, items: Iterable[SunInput]) -> list[SunLabels]:
        """Label ``items`` in the given order (the campaign's: round, then batch rank)."""
        return [self.label(item) for item in items]


def relaxed_space_group(structure: Structure, *, symprec: float = 0.1) -> int | None:
    """International space-group number (spglib, ``symprec`` in Å); None when spglib finds none."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception:  # spglib gives up on some distorted cells
        return None


def dimensionality(structure: Structure, *, cutoff: float = 5.0) -> int | None:
    """Dimensionality 0–3 of the bonded network (Larsen; bonds: ``MinimumDistanceNN``, ``cutoff`` in Å).

    ≈ 20 ms for a 10-atom cell; agrees with ``CrystalNN`` bonds on 149 of 150 MP-20 structures at a fifth
    of the cost. None when the bond graph cannot be built."""
    from pymatgen.analysis.dimensionality import get_dimensionality_larsen
    from pymatgen.analysis.graphs import StructureGraph
    from pymatgen.analysis.local_env import MinimumDistanceNN

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = StructureGraph.from_local_env_strategy(structure, MinimumDistanceNN(cutoff=cutoff))
            return int(get_dimensionality_larsen(graph))
    except Exception:
        return None


@dataclass(frozen=True, slots=True)
class SunCounts:
    """Counts over a set of labels: ``sun``; converged ``stable``/``novel`` (structure)/``novel_formula``/
    ``unique``; ``zero_dimensional_hits``: stable converged results that are 0-D packings; ``sun_novel_formula``:
    S.U.N. results whose formula is new too (new compounds rather than new polymorphs of known ones)."""

    results: int
    converged: int
    stable: int
    novel: int
    novel_formula: int
    unique: int
    sun: int
    zero_dimensional_hits: int
    sun_novel_formula: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count(labels: Sequence[SunLabels]) -> SunCounts:
    """Summary counts of ``labels`` (each count needs converged; see :class:`SunCounts`)."""
    ok = [x for x in labels if x.converged]
    return SunCounts(
        results=len(labels), converged=len(ok), stable=sum(x.stable for x in ok),
        novel=sum(x.novel_structure for x in ok), novel_formula=sum(x.novel_formula for x in ok),
        unique=sum(x.unique for x in ok), sun=sum(x.sun for x in ok),
        zero_dimensional_hits=sum(x.stable and x.dimensionality == 0 for x in ok),
        sun_novel_formula=sum(x.sun and x.novel_formula for x in ok),
    )
