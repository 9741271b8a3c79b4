"""Chemical facts for the composition constraints: SMACT oxidation states and Pauling electronegativities.

The validity rule is exactly ``smact.screening.smact_validity(composition, include_alloys=False)``
with its default ICSD24 oxidation-state set: a composition is valid when it has one element, or
when some choice of one oxidation state per element is charge neutral *and* every cation is
strictly less electronegative than every anion. Sorting elements by electronegativity turns the
Pauling test into a cut: cations first, then anions, never a cation and an anion of equal
electronegativity. :mod:`discovery.gfn.constraints` builds its look-ahead tables on that order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from pymatgen.core import Element
from smact import Element as SmactElement
from smact.screening import ICSD24FilterConfig, _get_icsd24_oxidation_dict

PAPER_ELEMENTS: tuple[str, ...] = (
    "H", "Li", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si",
    "P", "S", "Cl", "K", "V", "Mn", "Fe", "Co", "Ni", "Cu", "Se",
)


@cache
def _icsd24() -> dict[str, list[int]]:
    cfg = ICSD24FilterConfig()  # the configuration smact_validity uses by default
    return _get_icsd24_oxidation_dict(include_zero=cfg.include_zero, consensus=cfg.consensus, commonality=cfg.commonality)


@dataclass(frozen=True, slots=True)
class ElementChem:
    symbol: str
    electronegativity: float  # Pauling
    oxidation_states: tuple[int, ...]  # ICSD24, no zero

    @property
    def cation_states(self) -> tuple[int, ...]:
        return tuple(s for s in self.oxidation_states if s > 0)

    @property
    def anion_states(self) -> tuple[int, ...]:
        return tuple(s for s in self.oxidation_states if s < 0)


@cache
def element_chem(symbol: str) -> ElementChem:
    try:
        Element(symbol)
    except ValueError:
        raise ValueError(f"{symbol!r} is not a chemical element symbol") from None
    en = SmactElement(symbol).pauling_eneg
    states = _icsd24().get(symbol)
    if en is None or not states:
        raise ValueError(
            f"element {symbol} has no Pauling electronegativity or no ICSD24 oxidation state in SMACT, "
            "so no composition containing it can pass the SMACT test; remove it from the element list"
        )
    return ElementChem(symbol, float(en), tuple(sorted(int(s) for s in states if s != 0)))


def canonical_order(symbols: Sequence[str]) -> tuple[str, ...]:
    """Elements sorted by Pauling electronegativity, then atomic number (the composition build order)."""
    return tuple(sorted(dict.fromkeys(symbols), key=lambda s: (element_chem(s).electronegativity, Element(s).Z)))


def is_smact_valid(counts: Mapping[str, int]) -> bool:
    """Same answer as ``smact_validity(Composition(counts), include_alloys=False)``, computed directly."""
    symbols = [s for s, n in counts.items() if n > 0]
    if len(symbols) == 1:
        return True
    if not symbols:
        return False
    chem = [element_chem(s) for s in symbols]
    ns = [int(counts[s]) for s in symbols]
    for states in itertools.product(*(c.oxidation_states for c in chem)):
        if sum(s * n for s, n in zip(states, ns, strict=True)) != 0:
            continue
        cat = [c.electronegativity for c, s in zip(chem, states, strict=True) if s > 0]
        an = [c.electronegativity for c, s in zip(chem, states, strict=True) if s < 0]
        if not cat or not an or max(cat) < min(an):
            return True
    return False
