"""Parents of substitution proposals (:mod:`discovery.substitution`): the :class:`Parent` record, its quality
weight in the ranking, and the near-hull MP-20 train structures every campaign may substitute into."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Literal

import pandas as pd
from pymatgen.core import Structure

from discovery.crystal import parse_composition
from discovery.datasets.base import DATA_DIR
from discovery.datasets.structures import RowError, structure_from_cif
from discovery.gfn.space import SearchSpace
from discovery.substitution_rates import isovalent_pairs

QUALITY_SCALE = 0.05  # eV/atom: a parent this far above the hull ranks e (2.718) times lower than one on it


@dataclass(frozen=True, slots=True)
class Parent:
    """A relaxed structure to substitute into."""

    id: str  # e.g. "mp-1234" or a campaign candidate id
    structure: Structure  # pymatgen; never mutated here
    e_above_hull: float | None  # eV/atom, None when unknown
    origin: Literal["seed", "campaign"]
    family: str | None = None  # the seed structure it descends from (its family rate); None: its own id

    @property
    def family_id(self) -> str:
        return self.family if self.family is not None else self.id


def parent_quality(e_above_hull: float | None) -> float:
    """``exp(-max(e, 0) / 0.05 eV/atom)`` in (0, 1]; an unknown energy counts as 0.05 eV/atom (the default
    near-hull cut of :func:`seed_parents`)."""
    e = QUALITY_SCALE if e_above_hull is None or not math.isfinite(e_above_hull) else max(float(e_above_hull), 0.0)
    return math.exp(-e / QUALITY_SCALE)


# ----------------------------------------------------------------------------------------------------------
# seed parents


MP20_TRAIN_CIF = DATA_DIR / "mp20" / "mp20_train_cif.csv.gz"
MP20_TRAIN_TABLE = DATA_DIR / "mp20" / "mp20_train.csv.gz"
_STRUCTURES: dict[str, Structure] = {}


@cache
def _seed_rows() -> tuple[tuple[str, str, float, int, tuple[tuple[str, int], ...]], ...]:
    """(material id, CIF, e_above_hull eV/atom, space group, conventional counts) of every MP-20 train row."""
    raw = pd.read_csv(MP20_TRAIN_CIF, usecols=["material_id", "cif", "e_above_hull"], dtype={"material_id": str})
    table = pd.read_csv(MP20_TRAIN_TABLE, usecols=["id", "space_group", "composition"], dtype={"id": str})
    conv = {str(r.id): (int(r.space_group), str(r.composition)) for r in table.itertuples(index=False)}
    rows = []
    for r in raw.itertuples(index=False):
        mid = str(r.material_id)
        if mid not in conv:  # rows the derived table skipped (unusable CIFs)
            continue
        sg, comp = conv[mid]
        rows.append((mid, str(r.cif), float(r.e_above_hull), sg, tuple(sorted(parse_composition(comp).items()))))
    return tuple(rows)


@cache
def _has_partner(element: str, elements: tuple[str, ...]) -> bool:
    return bool(isovalent_pairs([*elements, element])[element]) if element not in elements else True


def seed_parents(*, space: SearchSpace, max_e_above_hull: float = 0.05, max_parents: int | None = None) -> list[Parent]:
    """Near-hull MP-20 train structures (``mp20_train_cif.csv.gz``) that substitutions can bring into ``space``.

    Kept: ``e_above_hull <= max_e_above_hull`` (eV/atom); ``min_elements..max_elements`` elements; conventional
    cell (the shipped MP-20 crystal table) within ``max_atoms`` and ``max_atoms_per_element``; every element in
    ``space.elements`` or with an isovalent partner there; space group in ``space.space_groups`` when set (full
    and orbit substitutions keep the parent's group). Sorted by energy above hull, then id; the first
    ``max_parents``. Parsed structures are cached for the process (the first call parses ~1,700 CIFs, a few
    seconds).
    """
    allowed = set(space.elements)
    rows = []
    for mid, cif, e_hull, sg, counts_items in _seed_rows():
        counts = dict(counts_items)
        if not (e_hull <= max_e_above_hull and space.min_elements <= len(counts) <= space.max_elements):
            continue
        if sum(counts.values()) > space.max_atoms or max(counts.values()) > space.max_atoms_per_element:
            continue
        if space.space_groups is not None and sg not in space.space_groups:
            continue
        if any(el not in allowed and not _has_partner(el, space.elements) for el in counts):
            continue
        rows.append((e_hull, mid, cif))
    rows.sort(key=lambda r: (r[0], r[1]))
    if max_parents is not None:
        rows = rows[:max_parents]
    out = []
    for e_hull, mid, cif in rows:
        s = _STRUCTURES.get(mid)
        if s is None:
            try:
                s = _STRUCTURES[mid] = structure_from_cif(cif)
            except RowError:
                continue
        out.append(Parent(mid, s, e_hull, "seed"))
    return out
