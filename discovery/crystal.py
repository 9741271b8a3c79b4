"""The crystal table: the one CSV format every matloop command reads and writes.

A crystal without atomic coordinates is (space group, composition of the conventional cell,
lattice parameters). Columns:

=============  ===========================================================================
``id``         optional identifier (string); generated as ``row-<n>`` when absent
``space_group`` international number, 1–230
``composition`` formula of the conventional unit cell, parsable by pymatgen (``Li4 Mn4 O8``)
``a b c``      lattice lengths in Å (> 0)
``alpha beta gamma``  lattice angles in degrees, in (0, 180)
=============  ===========================================================================

Extra columns are allowed and preserved on read/write.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Element

REQUIRED_COLUMNS: tuple[str, ...] = ("space_group", "composition", "a", "b", "c", "alpha", "beta", "gamma")
LATTICE_COLUMNS: tuple[str, ...] = ("a", "b", "c", "alpha", "beta", "gamma")
AVOGADRO = 6.02214076e23


class CrystalTableError(ValueError):
    """A crystal table that cannot be read; the message names the row and column."""


@dataclass(frozen=True, slots=True)
class Crystal:
    """One crystal of the table.

    ``counts`` maps element symbol → number of atoms in the conventional cell.
    Lengths in Å, angles in degrees.
    """

    space_group: int
    counts: dict[str, int]
    a: float
    b: float
    c: float
    alpha: float
    beta: float
    gamma: float
    id: str = ""
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def formula(self) -> str:
        """Conventional-cell formula, elements by electronegativity (pymatgen order): ``Li4 Mn4 O8``."""
        return format_formula(self.counts)

    @property
    def lattice(self) -> tuple[float, float, float, float, float, float]:
        return (self.a, self.b, self.c, self.alpha, self.beta, self.gamma)

    @property
    def n_atoms(self) -> int:
        return int(sum(self.counts.values()))

    @property
    def volume(self) -> float:
        """Cell volume in Å³ (NaN for an impossible set of angles)."""
        return float(cell_volume(np.array([self.lattice]))[0])

    @property
    def density(self) -> float:
        """Mass density in g/cm³ from the composition and cell volume."""
        return density_g_cm3(self.counts, self.volume)

    def reduced_formula(self) -> str:
        return Composition(self.counts).reduced_formula


def format_formula(counts: dict[str, int]) -> str:
    comp = Composition({k: v for k, v in counts.items() if v > 0})
    return " ".join(f"{el.symbol}{int(n)}" for el, n in sorted(comp.items(), key=lambda kv: (kv[0].X, kv[0].Z)))


def parse_composition(text: str) -> dict[str, int]:
    """Parse a conventional-cell formula into integer counts; raises ``ValueError`` with the reason."""
    comp = Composition(str(text))
    counts: dict[str, int] = {}
    for el, amt in comp.get_el_amt_dict().items():
        if not Element.is_valid_symbol(str(el)):
            raise ValueError(f"{el!r} is not a chemical element")
        if abs(amt - round(amt)) > 1e-6:
            raise ValueError(f"non-integer amount {amt} of {el} (partial occupancy?)")
        counts[str(el)] = round(amt)
    if not counts:
        raise ValueError("empty composition")
    return counts


def cell_volume(lattice: np.ndarray) -> np.ndarray:
    """Volumes (Å³) of cells given as an (n, 6) array of a, b, c (Å), α, β, γ (degrees).

    Returns NaN where the angles do not form a valid cell (non-positive Gram determinant).
    """
    lat = np.asarray(lattice, dtype=float).reshape(-1, 6)
    ca, cb, cg = (np.cos(np.radians(lat[:, i])) for i in (3, 4, 5))
    g = 1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg
    with np.errstate(invalid="ignore"):
        vol = lat[:, 0] * lat[:, 1] * lat[:, 2] * np.sqrt(np.where(g > 0, g, np.nan))
    return np.asarray(vol)


def density_g_cm3(counts: dict[str, int], volume_A3: float) -> float:
    """Density in g/cm³ of ``counts`` atoms in a cell of ``volume_A3`` Å³."""
    mass_g = sum(float(Element(el).atomic_mass) * n for el, n in counts.items()) / AVOGADRO
    return mass_g / (volume_A3 * 1e-24) if volume_A3 > 0 else math.nan


def _row_id(row: pd.Series, i: int) -> str:
    value = row.get("id")
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
        return f"row-{i}"
    return str(value)


def _integer(value: object) -> int | None:
    """``value`` as an int when it is one exactly (``225``, ``225.0``, ``"225"``); None otherwise (``225.7``,
    ``"225.7"``, NaN, inf, ``True``, text): a space group is never rounded or truncated."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return int(value) if math.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number.is_integer() else None
    return None


def crystals_from_frame(df: pd.DataFrame, *, source: str = "table") -> list[Crystal]:
    """Validate a crystal-table frame and turn it into crystals.

    Raises :class:`CrystalTableError` naming the first bad row and column.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CrystalTableError(
            f"{source}: missing column(s) {', '.join(missing)}; a crystal table needs "
            f"{', '.join(REQUIRED_COLUMNS)} (and optionally id)"
        )
    extra_cols = [c for c in df.columns if c not in (*REQUIRED_COLUMNS, "id")]
    out: list[Crystal] = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{source}, row {i + 1}"
        sg = _integer(row["space_group"])
        if sg is None:
            raise CrystalTableError(f"{where}: space_group {row['space_group']!r} is not an integer") from None
        if not 1 <= sg <= 230:
            raise CrystalTableError(f"{where}: space_group {sg} is outside 1–230")
        try:
            counts = parse_composition(row["composition"])
        except Exception as exc:
            raise CrystalTableError(f"{where}: composition {row['composition']!r} cannot be parsed ({exc})") from None
        lat: list[float] = []
        for col in LATTICE_COLUMNS:
            try:
                v = float(row[col])
            except (TypeError, ValueError):
                raise CrystalTableError(f"{where}: {col} {row[col]!r} is not a number") from None
            if not math.isfinite(v) or v <= 0 or (col in ("alpha", "beta", "gamma") and v >= 180):
                raise CrystalTableError(f"{where}: {col}={v} is out of range (lengths > 0 Å, angles in (0, 180)°)")
            lat.append(v)
        out.append(
            Crystal(
                space_group=sg,
                counts=counts,
                a=lat[0], b=lat[1], c=lat[2], alpha=lat[3], beta=lat[4], gamma=lat[5],
                id=_row_id(pd.Series(row), i),
                extra={c: row[c] for c in extra_cols},
            )
        )
    return out


def read_crystal_table(path: str | Path) -> list[Crystal]:
    """Read a crystal-table CSV (see module docstring)."""
    path = Path(path)
    if not path.exists():
        raise CrystalTableError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, dtype={"id": str})
    except Exception as exc:  # pandas' messages are fine but name no fix
        raise CrystalTableError(f"{path}: not a readable CSV ({exc})") from None
    return crystals_from_frame(df, source=str(path))


def crystals_to_frame(crystals: Iterable[Crystal], *, extra: dict[str, Sequence[object]] | None = None) -> pd.DataFrame:
    """Crystals → crystal-table frame (``id`` first, required columns, then extra columns)."""
    crystals = list(crystals)
    rows = []
    for i, c in enumerate(crystals):
        row: dict[str, object] = {"id": c.id or f"row-{i}", "space_group": c.space_group, "composition": c.formula}
        row.update(zip(LATTICE_COLUMNS, c.lattice, strict=True))
        row.update(c.extra)
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else ["id", *REQUIRED_COLUMNS])
    for k, v in (extra or {}).items():
        df[k] = list(v)
    return df


def write_crystal_table(crystals: Iterable[Crystal], path: str | Path, *, extra: dict[str, Sequence[object]] | None = None,
                        float_format: str = "%.6g") -> Path:
    """Write crystals as a crystal-table CSV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    crystals_to_frame(crystals, extra=extra).to_csv(path, index=False, float_format=float_format)
    return path
