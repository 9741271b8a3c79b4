"""Regenerate ``discovery/data/space_groups.json`` from pyxtal / spglib.

Run: ``python -m discovery.symmetry_build`` (≈ 2 s). The output is committed; the loader in
:mod:`discovery.symmetry` never calls pyxtal at run time.

For each of the 230 space groups (standard settings; R-centred groups in hexagonal axes, as
pymatgen and pyxtal use them) it records the Hermann–Mauguin symbol, the point group, the
crystal-lattice system and point symmetry of the Crystal-GFN paper, the lattice system that ties
the lattice parameters, and every Wyckoff position as (multiplicity in the conventional cell,
letter, degrees of freedom).
"""

from __future__ import annotations

import json
from pathlib import Path

import spglib
from pyxtal.symmetry import Group

OUT = Path(__file__).parent / "data" / "space_groups.json"

RHOMBOHEDRAL = {146, 148, 155, 160, 161, 166, 167}

# Point symmetry classes of the Crystal-GFN paper, by point group (international symbol).
POINT_SYMMETRY = {
    "enantiomorphic-polar": {"1", "2", "3", "4", "6"},
    "centrosymmetric": {"-1", "2/m", "mmm", "4/m", "4/mmm", "-3", "-3m", "6/m", "6/mmm", "m-3", "m-3m"},
    "polar": {"m", "mm2", "3m", "4mm", "6mm"},
    "enantiomorphic": {"222", "32", "422", "622", "23", "432"},
    "non-centrosymmetric": {"-4", "-42m", "-6", "-62m", "-43m"},
}


def crystal_lattice_system(sg: int) -> str:
    if sg <= 2:
        return "triclinic"
    if sg <= 15:
        return "monoclinic"
    if sg <= 74:
        return "orthorhombic"
    if sg <= 142:
        return "tetragonal"
    if sg <= 167:
        return "trigonal-rhombohedral" if sg in RHOMBOHEDRAL else "trigonal-hexagonal"
    if sg <= 194:
        return "hexagonal"
    return "cubic"


def lattice_system(sg: int) -> str:
    """The lattice system that constrains (a, b, c, α, β, γ) of the conventional cell."""
    cls = crystal_lattice_system(sg)
    return "hexagonal" if cls.startswith("trigonal") else cls


def point_symmetry(point_group: str) -> str:
    for name, groups in POINT_SYMMETRY.items():
        if point_group in groups:
            return name
    raise ValueError(f"unclassified point group {point_group}")


def build() -> list[dict[str, object]]:
    hall_of = {}
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        if t is not None and t.number not in hall_of:
            hall_of[t.number] = t
    table = []
    for sg in range(1, 231):
        g = Group(sg)
        pg = str(g.point_group)
        sp = hall_of[sg]
        if sp.international_short.replace("_", "") != g.symbol.replace("_", ""):
            # spglib and pyxtal agree on every standard symbol; a mismatch would mean a setting change.
            raise RuntimeError(f"symbol mismatch for {sg}: {sp.international_short} vs {g.symbol}")
        table.append(
            {
                "number": sg,
                "symbol": g.symbol,
                "point_group": pg,
                "crystal_lattice_system": crystal_lattice_system(sg),
                "lattice_system": lattice_system(sg),
                "point_symmetry": point_symmetry(pg),
                "centering": g.symbol[0],
                "wyckoff": [[int(w.multiplicity), str(w.letter), int(w.get_dof())] for w in g.Wyckoff_positions],
            }
        )
    return table


def main() -> None:
    table = build()
    OUT.write_text(json.dumps({"source": "pyxtal + spglib", "space_groups": table}, separators=(",", ":")))
    print(f"wrote {OUT} ({len(table)} space groups)")


if __name__ == "__main__":
    main()
