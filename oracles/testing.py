"""Conformance checks and test doubles for oracles, shipped so that a plugin's own tests can import them.

Every oracle, built-in or plugin, must pass :func:`check_conformance` (the contract of
:mod:`oracles.base`) and :func:`check_sanity_gates` (:mod:`oracles.sanity`). A plugin checks its oracle
from its own test suite with plain pytest::

    from oracles.testing import OracleConformance, cu_al_batch

    class TestMyOracle(OracleConformance):
        def make_oracle(self):
            return MyOracle(some_setting=1)

        def batch(self):                     # candidates your oracle can evaluate (default: mixed_batch())
            return cu_al_batch()

or calls the functions directly (``check_conformance(oracle, batch)`` returns the results for further
checks). Nothing here needs pytest; failures are ``AssertionError`` with the offending result.

Test doubles and inputs: :func:`small_structures` (2-atom primitive cells of simple solids),
:func:`mixed_batch` (structures, a crystal-table row and an impossible row), :func:`cu_al_batch` (a Cu/Al
toy space), :func:`unphysical_batch` (cells no oracle may label ``ok``), and :class:`FaultyCalculator` /
:class:`FaultFactory`: the real CHGNet calculator with one fault injected for chosen formulas (exception,
NaN, exploding or collapsing cell, slow, crash, hang), to test fault isolation on a real relaxation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pymatgen.core import Lattice, Structure

from discovery.crystal import Crystal
from oracles.base import Candidate, Oracle, OracleResult
from oracles.relax import TimedCHGNetCalculator, load_chgnet_calculator

STATUSES = frozenset({"ok", "failed", "unconverged", "invalid", "timeout"})
Fault = Literal["raise", "nan", "explode", "collapse", "slow", "crash", "hang"]


# --- inputs -------------------------------------------------------------------------------------
def rocksalt(a: str, b: str, lattice: float) -> Structure:
    """Primitive rock-salt cell of elements ``a`` and ``b`` with cubic lattice constant ``lattice`` (Å)."""
    return Structure.from_spacegroup(225, Lattice.cubic(lattice), [a, b],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()


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
    """Rock-salt NaCl as a crystal-table row (Fm-3m, conventional cell)."""
    return Crystal(space_group=225, counts=counts or {"Na": 4, "Cl": 4}, a=a, b=a, c=a, alpha=90, beta=90,
                   gamma=90, id=id)


def impossible_crystal(*, id: str = "impossible") -> Crystal:
    """Na1Cl1 in Fm-3m: the smallest Wyckoff multiplicity is 4, so no placement exists."""
    return nacl_crystal(id=id, counts={"Na": 1, "Cl": 1})


def mixed_batch() -> list[Candidate]:
    """Two structures, a crystal-table row and an impossible row (rock salts: NaCl, MgO)."""
    s = small_structures()
    return [Candidate.from_structure(s["NaCl"], id="nacl-structure"),
            Candidate.from_crystal(nacl_crystal()),
            Candidate.from_crystal(impossible_crystal()),
            Candidate.from_structure(s["MgO"], id="mgo-structure")]


def fcc(element: str, a: float) -> Structure:
    """Primitive fcc cell (1 atom) with conventional lattice constant ``a`` (Å)."""
    return Structure.from_spacegroup(225, Lattice.cubic(a), [element], [[0, 0, 0]]).get_primitive_structure()


def cu_al_structures() -> dict[str, Structure]:
    """A Cu/Al toy space: fcc Cu and Al, B2 CuAl and L1₂ Cu₃Al near their experimental volumes."""
    return {
        "Cu": fcc("Cu", 3.61),
        "Al": fcc("Al", 4.05),
        "CuAl": Structure.from_spacegroup(221, Lattice.cubic(2.95), ["Cu", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "Cu3Al": Structure.from_spacegroup(221, Lattice.cubic(3.70), ["Al", "Cu"], [[0, 0, 0], [0.5, 0.5, 0]]),
    }


def cu_al_batch() -> list[Candidate]:
    """Cu/Al structures, the same L1₂ Cu₃Al as a crystal-table row, and an impossible Cu/Al row."""
    s = cu_al_structures()
    table = Crystal(space_group=221, counts={"Cu": 3, "Al": 1}, a=3.7, b=3.7, c=3.7, alpha=90, beta=90, gamma=90,
                    id="cu3al-table")
    impossible = Crystal(space_group=225, counts={"Cu": 1, "Al": 1}, a=4.0, b=4.0, c=4.0, alpha=90, beta=90,
                         gamma=90, id="impossible")
    return [Candidate.from_structure(s["Cu"], id="cu-fcc"), Candidate.from_structure(s["CuAl"], id="cual-b2"),
            Candidate.from_crystal(table), Candidate.from_crystal(impossible),
            Candidate.from_structure(s["Cu3Al"], id="cu3al-l12")]


def unphysical_batch() -> list[Candidate]:
    """Cells no oracle may label ``ok`` (see :mod:`oracles.sanity`): rock-salt NaCl with a = 30 Å as a
    structure and as a crystal-table row (3,375 Å³/atom, Na-Cl 15 Å apart), and a 1.8 Å rock-salt NaCl
    structure (0.73 Å³/atom; no oracle decodes or rescales a given structure)."""
    return [Candidate.from_structure(rocksalt("Na", "Cl", 30.0), id="nacl-a30-structure"),
            Candidate.from_crystal(nacl_crystal(id="nacl-a30-table", a=30.0)),
            Candidate.from_structure(rocksalt("Na", "Cl", 1.8), id="nacl-a1.8-structure")]


# --- checks -------------------------------------------------------------------------------------
def _close(a: float | None, b: float | None, *, abs_tol: float = 1e-6) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=abs_tol)


def check_conformance(oracle: Oracle, batch: Sequence[Candidate], *, seed: int = 3) -> list[OracleResult]:
    """Assert the contract of :mod:`oracles.base` on ``batch``; returns the results for oracle-specific checks.

    One result per candidate, in order, with its id and a known status; a message on every result that is
    not ``ok``; ``progress`` called up to ``(n, n)``; JSON round trip; ``provenance["oracle"]`` = the
    oracle's name; the same statuses, messages, steps and targets (within 1e-6) on a second run with the
    same seed; an empty batch gives an empty list."""
    assert isinstance(oracle, Oracle), f"{oracle!r} does not implement oracles.base.Oracle"
    assert isinstance(oracle.name, str) and oracle.name, "the oracle needs a non-empty `name`"
    seen: list[tuple[int, int]] = []
    results = oracle.evaluate(batch, seed=seed, progress=lambda done, total: seen.append((done, total)))
    assert [r.candidate_id for r in results] == [c.id for c in batch], "one result per candidate, in input order"
    for r in results:
        assert isinstance(r, OracleResult) and r.status in STATUSES, r
        assert r.status == "ok" or r.message, f"{r.candidate_id}: status {r.status!r} without a message"
    assert seen and seen[-1] == (len(batch), len(batch)), f"progress ended at {seen[-1:] or 'nothing'}"
    for r in results:
        assert OracleResult.from_json(r.to_json()) == r, f"{r.candidate_id}: JSON round trip changed the result"
        json.loads(r.to_json())
        assert r.provenance.get("oracle") == oracle.name, f"{r.candidate_id}: provenance['oracle'] is not the name"
    again = oracle.evaluate(batch, seed=seed)
    for a, b in zip(results, again, strict=True):
        assert (a.status, a.message, a.n_steps) == (b.status, b.message, b.n_steps), (a.candidate_id, a, b)
        assert a.targets.keys() == b.targets.keys(), a.candidate_id
        for k, v in a.targets.items():
            assert _close(v, b.targets[k]), f"{a.candidate_id}: target {k} {v} then {b.targets[k]} with the same seed"
    assert oracle.evaluate([], seed=seed) == [], "an empty batch must give an empty list"
    return results


def check_sanity_gates(oracle: Oracle) -> list[OracleResult]:
    """Every cell of :func:`unphysical_batch` is ``invalid``, with a message naming the volume per atom and
    its bound, and no target value."""
    results = oracle.evaluate(unphysical_batch(), seed=0)
    for r in results:
        assert r.status == "invalid", (r.candidate_id, r.status, r.message)
        assert "volume per atom" in r.message and "physical bound" in r.message, r.message
        assert not any(v is not None for v in r.targets.values()), (r.candidate_id, r.targets)
    return results


class OracleConformance:
    """Base class of a pytest test class: subclass it as ``Test...`` and define :meth:`make_oracle`.

    ``conformance_seed`` is the seed of the conformance run; override :meth:`batch` with candidates your
    oracle can evaluate (at least one should come back ``ok``: :meth:`test_some_result_is_ok`)."""

    conformance_seed: int = 3

    def make_oracle(self) -> Oracle:
        raise NotImplementedError("define make_oracle() in your test class: return your oracle, ready to evaluate")

    def batch(self) -> list[Candidate]:
        return mixed_batch()

    def _oracle(self) -> Oracle:
        cached: Oracle | None = self.__dict__.get("_cached_oracle")
        if cached is None:
            cached = self.make_oracle()
            self.__dict__["_cached_oracle"] = cached
        return cached

    def test_conformance(self) -> None:
        check_conformance(self._oracle(), self.batch(), seed=self.conformance_seed)

    def test_sanity_gates(self) -> None:
        check_sanity_gates(self._oracle())

    def test_some_result_is_ok(self) -> None:
        results = self._oracle().evaluate(self.batch(), seed=self.conformance_seed)
        assert any(r.ok for r in results), [(r.candidate_id, r.status, r.message) for r in results]


# --- test doubles -------------------------------------------------------------------------------
class FaultyCalculator(TimedCHGNetCalculator):
    """The real CHGNet calculator with one fault injected for chosen reduced formulas (``faults``)."""

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
    """``factory(device)`` → a :class:`FaultyCalculator` with ``faults`` (reduced formula → fault); picklable,
    so it works as the CHGNet oracle's ``calculator_factory`` inside worker processes too."""

    faults: dict[str, Fault] = field(default_factory=dict)

    def __call__(self, device: str) -> FaultyCalculator:
        calc = load_chgnet_calculator(device, cls=FaultyCalculator)
        assert isinstance(calc, FaultyCalculator)
        calc.faults = dict(self.faults)
        return calc
