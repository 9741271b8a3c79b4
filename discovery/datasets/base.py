"""Labelled sets and the report of rows a loader could not use.

Every loader returns ``Loaded(data, report)``: ``data`` holds only usable rows and ``report`` names
every row that was left out, with a reason, so that nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pymatgen.core import Element

from discovery.crystal import Crystal

#: Highest atomic number the proxies know (H … Pu); MP-20 and OBELiX stay inside it.
MAX_Z = 94
VOCABULARY: frozenset[str] = frozenset(Element.from_Z(z).symbol for z in range(1, MAX_Z + 1))
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """One row a loader left out: its 1-based row number (or file name), id, reason category and detail."""

    row: int | str
    id: str
    reason: str
    detail: str = ""


@dataclass(slots=True)
class SkipReport:
    """What a loader read, kept and left out (with reasons), plus notes on rows it adjusted."""

    source: str
    n_read: int = 0
    n_kept: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)

    def skip(self, row: int | str, id: str, reason: str, detail: str = "") -> None:
        self.skipped.append(SkippedRow(row, id, reason, detail))

    def counts(self) -> dict[str, int]:
        """Number of skipped rows per reason category."""
        return dict(Counter(s.reason for s in self.skipped))

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        """One paragraph: ``source: kept 2040 of 2051 rows; skipped 11 (reason: n, ...); notes ...``."""
        text = f"{self.source}: kept {self.n_kept} of {self.n_read} rows"
        if self.skipped:
            text += f"; skipped {self.n_skipped} (" + ", ".join(f"{k}: {v}" for k, v in self.counts().items()) + ")"
        if self.notes:
            text += "; notes: " + ", ".join(f"{k}: {v}" for k, v in self.notes.items())
        return text


@dataclass(frozen=True, slots=True)
class LabeledSet:
    """Crystals with real-valued labels.

    ``targets`` has shape (n, m), one column per name in ``target_names`` (units as the source gives
    them, e.g. eV/atom for formation energy, eV for band gap, log10(S/cm) for conductivity).
    """

    crystals: list[Crystal]
    targets: np.ndarray
    target_names: tuple[str, ...]

    def __post_init__(self) -> None:
        t = np.asarray(self.targets, dtype=np.float64)
        if t.ndim == 1:
            t = t[:, None]
        if t.shape != (len(self.crystals), len(self.target_names)):
            raise ValueError(
                f"targets have shape {t.shape}, expected ({len(self.crystals)}, {len(self.target_names)})"
            )
        object.__setattr__(self, "targets", t)
        object.__setattr__(self, "target_names", tuple(self.target_names))

    def __len__(self) -> int:
        return len(self.crystals)

    def subset(self, index: Sequence[int] | np.ndarray) -> LabeledSet:
        idx = np.asarray(index, dtype=np.int64)
        return LabeledSet([self.crystals[i] for i in idx], self.targets[idx], self.target_names)

    def select(self, names: str | Sequence[str]) -> LabeledSet:
        """The same crystals with only the named target columns."""
        names = (names,) if isinstance(names, str) else tuple(names)
        cols = [self.target_names.index(n) for n in names]
        return LabeledSet(self.crystals, self.targets[:, cols], names)

    def concat(self, other: LabeledSet) -> LabeledSet:
        if other.target_names != self.target_names:
            raise ValueError(f"target names differ: {self.target_names} vs {other.target_names}")
        return LabeledSet(self.crystals + other.crystals, np.vstack([self.targets, other.targets]), self.target_names)


@dataclass(frozen=True, slots=True)
class CompositionSet:
    """Formulas with labels and no structure (for pre-training a composition encoder).

    ``counts`` are element amounts (floats allowed); ``targets`` has shape (n, m).
    """

    formulas: list[str]
    counts: list[dict[str, float]]
    targets: np.ndarray
    target_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.formulas)


class Loaded(NamedTuple):
    """A loader's result: the usable rows and the report of the others."""

    data: LabeledSet
    report: SkipReport


class LoadedCompositions(NamedTuple):
    data: CompositionSet
    report: SkipReport


def out_of_vocabulary(counts: dict[str, float] | dict[str, int]) -> list[str]:
    """Elements of ``counts`` the proxies cannot featurise (Z > 94, or not an element)."""
    return sorted(el for el in counts if el not in VOCABULARY)
