"""Fixtures for the DFT oracle tests: cheap GPAW settings, small structures, a real single-node SLURM.

The ``slurm`` fixture (a real single-node SLURM) is in ``tests/conftest.py``, shared with the campaign tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymatgen.core import Lattice, Structure

REPO = Path(__file__).resolve().parents[3]
DATA = Path(__file__).with_name("data")

CHEAP: dict[str, Any] = {"cutoff_eV": 200.0, "kpoint_density": 1.0, "poll_interval_s": 0.3, "walltime_s": 300,
                         "max_parallel": 2}
"""GPAW settings for tests: PW 200 eV, 3×3×3 k-points on 2-atom Si (~2 s per SCF)."""


def si_structure() -> Structure:
    return Structure.from_spacegroup(227, Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]).get_primitive_structure()


def tc_structure() -> Structure:
    """Technetium: gpaw-data ships no PAW setup for Tc, so GPAW fails (a real non-zero exit)."""
    return Structure(Lattice.cubic(2.8), ["Tc"], [[0, 0, 0]])


@pytest.fixture(scope="session")
def gpaw_available() -> None:
    try:
        import gpaw  # noqa: F401
        import gpaw_data  # noqa: F401
    except ImportError:
        pytest.skip("GPAW not installed (make install builds it: needs libxc-dev, libblas-dev, liblapack-dev)")
