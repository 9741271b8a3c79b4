"""Exact density."""

from __future__ import annotations

import pytest

from oracles.base import Candidate
from oracles.density import DensityOracle
from tests.oracles.helpers import nacl_crystal, small_structures


def test_density_of_rock_salt_matches_the_textbook_value() -> None:
    res = DensityOracle().evaluate([Candidate.from_crystal(nacl_crystal(a=5.64))])[0]
    assert res.status == "ok" and res.targets["density"] == pytest.approx(2.165, abs=0.005)  # g/cm³


def test_table_and_structure_agree() -> None:
    a = DensityOracle().evaluate([Candidate.from_crystal(nacl_crystal(a=5.69)),
                                  Candidate.from_structure(small_structures()["NaCl"], id="s")])
    assert a[0].targets["density"] == pytest.approx(a[1].targets["density"], rel=1e-6)


def test_impossible_angles_are_invalid() -> None:
    from discovery.crystal import Crystal

    flat = Crystal(space_group=1, counts={"Na": 1}, a=3, b=3, c=3, alpha=170, beta=170, gamma=170, id="flat")
    assert DensityOracle().evaluate([Candidate.from_crystal(flat)])[0].status == "invalid"
