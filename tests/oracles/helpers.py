"""Shared fixtures for the oracle tests: small real structures and a fault-injecting CHGNet calculator.

``FaultyCalculator`` is the real CHGNet calculator with one fault injected for chosen reduced formulas
(everything else is computed by CHGNet as usual), so the oracle's fault handling is tested on a real
relaxation. ``FaultFactory`` is picklable, so it also works inside worker processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pymatgen.core import Lattice, Structure

from discovery.crystal import Crystal
from oracles.base import Candidate
from oracles.relax import TimedCHGNetCalculator, load_chgnet_calculator

Fault = Literal["raise", "nan", "explode", "collapse", "slow", "crash", "hang"]


def rocksalt(a: str, b: str, lattice: float) -> Structure:
    return Structure.from_spacegroup(225, Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()


def small_structures() -> dict[str, Structure]:
    """Primitive cells of simple solids near their CHGNet minimum (2 atoms each: fast to relax)."""
    return {
        "NaCl": rocksalt("Na", "Cl", 5.69),
        "MgO": rocksalt("Mg", "O", 4.25),
        "LiF": rocksalt("Li", "F", 4.06),
        "KCl": rocksalt("K", "Cl", 6.38),
        "NaF": rocksalt("Na", "F", 4.69),
        "Si": Structure.from_spacegroup(227, Lattice.cubic(5.47), ["Si"], [[0, 0, 0]]).get_primitive_structure(),
    }


def nacl_crystal(*, id: str = "nacl-table", counts: dict[str, int] | None = None, a: float = 5.69) -> Crystal:
    return Crystal(space_group=225, counts=counts or {"Na": 4, "Cl": 4}, a=a, b=a, c=a, alpha=90, beta=90, gamma=90, id=id)


def impossible_crystal() -> Crystal:
    """Na1Cl1 in Fm-3m: the smallest Wyckoff multiplicity is 4, so no placement exists."""
    return nacl_crystal(id="impossible", counts={"Na": 1, "Cl": 1})


def mixed_batch() -> list[Candidate]:
    s = small_structures()
    return [Candidate.from_structure(s["NaCl"], id="nacl-structure"),
            Candidate.from_crystal(nacl_crystal()),
            Candidate.from_crystal(impossible_crystal()),
            Candidate.from_structure(s["MgO"], id="mgo-structure")]


class FaultyCalculator(TimedCHGNetCalculator):
    faults: dict[str, Fault] = {}

    def calculate(self, atoms: Any = None, properties: Any = None, system_changes: Any = None,
                  task: Any = "efsm") -> None:
        fault = self.faults.get(atoms.get_chemical_formula(mode="reduce") if atoms is not None else "", None)
        if fault is None and atoms is not None:
            from pymatgen.core import Composition

            fault = self.faults.get(Composition(atoms.get_chemical_formula()).reduced_formula)
        if fault == "raise":
            raise RuntimeError("injected model failure")
        if fault == "crash":  # the worker process dies as in a segfault (only use with workers ≥ 1)
            import os

            os._exit(70)
        if fault == "hang":  # a model call that never returns (only use with workers ≥ 1)
            time.sleep(3600)
        if fault == "slow":
            time.sleep(1.0)
        super().calculate(atoms=atoms, properties=properties, system_changes=system_changes, task=task)
        if fault == "nan":
            self.results["energy"] = float("nan")
            self.results["free_energy"] = float("nan")
        elif fault in ("explode", "collapse"):
            sign = -1.0 if fault == "explode" else 1.0
            self.results["stress"] = np.array([1, 1, 1, 0, 0, 0], dtype=float) * sign * 0.5  # eV/Å³ (80 GPa)
        elif fault == "slow":
            self.results["forces"] = self.results["forces"] + 0.5  # never converges


@dataclass
class FaultFactory:
    """``factory(device)`` → a FaultyCalculator with ``faults`` (reduced formula → fault)."""

    faults: dict[str, Fault] = field(default_factory=dict)

    def __call__(self, device: str) -> FaultyCalculator:
        calc = load_chgnet_calculator(device, cls=FaultyCalculator)
        assert isinstance(calc, FaultyCalculator)
        calc.faults = dict(self.faults)
        return calc
