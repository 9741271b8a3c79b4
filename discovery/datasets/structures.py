"""CIF / pymatgen structure → :class:`~discovery.crystal.Crystal` in the generator's representation.

The generator samples (space group, conventional-cell composition, conventional-cell lattice
parameters), so a structure is reduced to the same: spglib space group at ``symprec`` (Å) and the
conventional standard cell of pymatgen (hexagonal axes for R-centred groups).
"""

from __future__ import annotations

import warnings

from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from discovery.crystal import Crystal
from discovery.datasets.base import out_of_vocabulary


class RowError(ValueError):
    """A row that cannot be used; ``reason`` is the category reported in the skip report."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def structure_from_cif(text: str) -> Structure:
    """Parse CIF text; raises :class:`RowError` ("unparsable CIF") on failure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_str(text, fmt="cif")
    except Exception as exc:
        raise RowError("unparsable CIF", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__) from None


def crystal_from_structure(structure: Structure, *, id: str = "", symprec: float = 0.1,
                           angle_tolerance: float = 5.0) -> Crystal:
    """The generator's view of ``structure``: space group, conventional composition and lattice.

    ``symprec`` in Å and ``angle_tolerance`` in degrees are passed to spglib (0.1 Å is what the
    Materials Project uses for its space-group labels). Raises :class:`RowError` for partial
    occupancies, elements outside the vocabulary, or a failed symmetry analysis.
    """
    if not structure.is_ordered:
        raise RowError("partial occupancy", "disordered sites; the crystal table needs integer counts")
    bad = out_of_vocabulary({str(el): 1 for el in structure.composition.elements})
    if bad:
        raise RowError("element outside vocabulary", ", ".join(bad))
    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance)
        sg = int(sga.get_space_group_number())
        conv = sga.get_conventional_standard_structure()
    except Exception as exc:
        raise RowError("symmetry analysis failed", str(exc)[:200]) from None
    counts: dict[str, int] = {}
    for el, amt in conv.composition.get_el_amt_dict().items():
        if abs(amt - round(amt)) > 1e-6:
            raise RowError("partial occupancy", f"{el} amount {amt}")
        counts[str(el)] = round(amt)
    lat = conv.lattice
    return Crystal(space_group=sg, counts=counts, a=float(lat.a), b=float(lat.b), c=float(lat.c),
                   alpha=float(lat.alpha), beta=float(lat.beta), gamma=float(lat.gamma), id=id)
