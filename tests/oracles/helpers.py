"""The oracle test inputs and doubles now ship in :mod:`oracles.testing` (plugins import them from there);
re-exported here for the project's own tests."""

from __future__ import annotations

from oracles.testing import (
    Fault,
    FaultFactory,
    FaultyCalculator,
    cu_al_batch,
    cu_al_structures,
    fcc,
    impossible_crystal,
    mixed_batch,
    nacl_crystal,
    rocksalt,
    small_structures,
    unphysical_batch,
)

__all__ = ["Fault", "FaultFactory", "FaultyCalculator", "cu_al_batch", "cu_al_structures", "fcc",
           "impossible_crystal", "mixed_batch", "nacl_crystal", "rocksalt", "small_structures", "unphysical_batch"]
