"""Known crystal structures grouped by reduced formula, for structural novelty checks.

Shipped sources (``discovery/data/``):

* ``mp20``: every MP-20 train and validation CIF (``mp20/mp20_{train,val}_cif.csv.gz``, ~2,350 structures);
* ``li-fe-o``: the structures of the complete Li-Fe-O system from MP (``mp_reference/Li-Fe-O.json.gz``, 375).

Only the formula index is built when loading (≈ 0.3 s); a formula's structures are parsed the first time
they are asked for and then cached, so a novelty check costs one parse per formula actually met.
"""

from __future__ import annotations

import functools
import gzip
import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from discovery.datasets.base import DATA_DIR

if TYPE_CHECKING:
    from pymatgen.core import Structure

ReferenceSource = Literal["mp20", "li-fe-o"]
REFERENCE_SOURCES: tuple[ReferenceSource, ...] = ("mp20", "li-fe-o")


@dataclass
class ReferenceStructures:
    """Structures by reduced formula; ``get(formula)`` parses them lazily (id, structure) and caches them."""

    _loaders: dict[str, list[tuple[str, Callable[[], Structure]]]] = field(default_factory=dict)
    _parsed: dict[str, list[tuple[str, Structure]]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_structures(cls, items: Iterable[tuple[str, Structure]]) -> ReferenceStructures:
        """An index over already-built structures (``(id, structure)`` pairs)."""
        out = cls()
        for ident, s in items:
            out._loaders.setdefault(s.composition.reduced_formula, []).append((ident, functools.partial(_same, s)))
        return out

    def formulas(self) -> frozenset[str]:
        """Every reduced formula that has at least one structure."""
        return frozenset(self._loaders)

    def get(self, formula: str) -> list[tuple[str, Structure]]:
        """The (id, structure) pairs of reduced formula ``formula`` (empty when none)."""
        if formula not in self._parsed:
            with warnings.catch_warnings():  # CIF rounding notes, harmless
                warnings.simplefilter("ignore")
                self._parsed[formula] = [(ident, load()) for ident, load in self._loaders.get(formula, ())]
        return self._parsed[formula]

    def __len__(self) -> int:
        return sum(len(v) for v in self._loaders.values())


def _same(s: Structure) -> Structure:
    return s


def _from_cif(text: str) -> Structure:
    from pymatgen.core import Structure

    return Structure.from_str(text, fmt="cif")


def _from_dict(d: dict[str, object]) -> Structure:
    from pymatgen.core import Structure

    return Structure.from_dict(d)


def _reduced(formula: str | dict[str, float]) -> str:
    from pymatgen.core import Composition

    return Composition(formula).reduced_formula


@functools.cache
def load_reference_structures(sources: Sequence[ReferenceSource] = REFERENCE_SOURCES) -> ReferenceStructures:
    """The shipped known structures of ``sources`` (cached per process; see the module docstring)."""
    out = ReferenceStructures()
    with warnings.catch_warnings():  # pymatgen notes elements without an electronegativity (He), harmless
        warnings.simplefilter("ignore")
        _index(out, tuple(sources))
    return out


def _index(out: ReferenceStructures, sources: tuple[ReferenceSource, ...]) -> None:
    import pandas as pd

    for source in sources:
        if source == "mp20":
            for split in ("train", "val"):
                df = pd.read_csv(DATA_DIR / "mp20" / f"mp20_{split}_cif.csv.gz", usecols=["material_id", "pretty_formula", "cif"])
                for mid, formula, cif in df.itertuples(index=False):
                    out._loaders.setdefault(_reduced(str(formula)), []).append(
                        (str(mid), functools.partial(_from_cif, str(cif))))
        elif source == "li-fe-o":
            with gzip.open(DATA_DIR / "mp_reference" / "Li-Fe-O.json.gz", "rt") as fh:
                for d in json.load(fh):
                    out._loaders.setdefault(_reduced(d["composition"]), []).append(
                        (str(d["entry_id"]), functools.partial(_from_dict, d["structure"])))
        else:
            raise ValueError(f"unknown reference structure source {source!r}; choose from {', '.join(REFERENCE_SOURCES)}")
