"""SMACT chemistry: the generator's validity rule is exactly smact_validity(include_alloys=False)."""

from __future__ import annotations

import random

import pytest
from pymatgen.core import Composition
from smact.screening import smact_validity

from discovery.chemistry import PAPER_ELEMENTS, canonical_order, element_chem, is_smact_valid


def test_is_smact_valid_equals_smact_on_random_compositions() -> None:
    rng = random.Random(1)
    n_valid = 0
    for _ in range(1500):
        els = rng.sample(PAPER_ELEMENTS, rng.randint(1, 5))
        counts = {e: rng.randint(1, 16) for e in els}
        expected = smact_validity(Composition(counts), include_alloys=False)
        assert is_smact_valid(counts) == expected, counts
        n_valid += expected
    assert 100 < n_valid < 1400  # both outcomes are exercised


def test_canonical_order_is_electronegativity() -> None:
    order = canonical_order(PAPER_ELEMENTS)
    ens = [element_chem(e).electronegativity for e in order]
    assert ens == sorted(ens)
    assert order[0] == "K" and order[-1] == "F"


def test_unknown_element_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a chemical element"):
        element_chem("Xx")
