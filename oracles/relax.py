"""Structure relaxation with an ASE calculator (CHGNet by default), with fault detection.

:func:`relax_structure` relaxes positions (and the cell, through ASE's ``UnitCellFilter`` or ``FrechetCellFilter``) with FIRE
or BFGS, checking after every force evaluation for the faults that must become result statuses
instead of exceptions: non-finite energies or forces, a cell that explodes or collapses
(volume change beyond ``max_volume_change``), atoms that fall onto each other, and the
per-structure time limit (checked cooperatively between steps, so one model call is never
interrupted; a single CHGNet step takes 0.03–0.3 s on one CPU core).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from oracles.base import Status
from oracles.decode import min_distance_ratio

try:  # chgnet is a hard dependency; kept lazy-safe for type checkers
    from chgnet.model.dynamics import CHGNetCalculator
except ImportError:  # pragma: no cover
    CHGNetCalculator = object  # type: ignore[assignment,misc]


class RelaxFault(Exception):
    """A fault detected during relaxation; ``status`` is the result status it maps to."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status: Status = status
        self.n_steps = 0
        self.energies_per_atom: list[float] = []


class TimedCHGNetCalculator(CHGNetCalculator):  # type: ignore[misc,valid-type]
    """CHGNet's ASE calculator that also accumulates the wall time spent in the model (s)."""

    model_time_s: float = 0.0
    n_calls: int = 0

    def calculate(self, atoms: Any = None, properties: Any = None, system_changes: Any = None,
                  task: Any = "efsm") -> None:
        t0 = time.perf_counter()
        try:
            super().calculate(atoms=atoms, properties=properties, system_changes=system_changes, task=task)
        finally:
            self.model_time_s += time.perf_counter() - t0
            self.n_calls += 1


@functools.cache
def load_chgnet_model(device: str = "cpu") -> Any:
    """The CHGNet model with the weights shipped in the ``chgnet`` wheel (no network), once per process."""
    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet.load prints a banner
        return CHGNet.load(verbose=False, use_device=device)


def load_chgnet_calculator(device: str = "cpu", *, cls: type[TimedCHGNetCalculator] | None = None,
                           **kwargs: Any) -> TimedCHGNetCalculator:
    """A fresh timed calculator (``cls``, default :class:`TimedCHGNetCalculator`) around the cached model."""
    with contextlib.redirect_stdout(io.StringIO()):
        return (cls or TimedCHGNetCalculator)(model=load_chgnet_model(device), use_device=device, **kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelaxSettings:
    """fmax: force convergence (eV/Å); steps: optimizer step cap; relax_cell: also relax the lattice;
    cell_filter: ASE's ``UnitCellFilter`` (cheap) or ``FrechetCellFilter`` (CHGNet's default; its matrix
    log/exp in scipy cost ~18 % of the wall time of a relaxation of a 4–12-atom cell on one core);
    max_volume_change: allowed volume factor either way before the cell counts as exploded/collapsed;
    min_distance_ratio: smallest final ``d_ij/(r_cov_i+r_cov_j)`` before atoms count as collapsed."""

    fmax: float = 0.1
    steps: int = 200
    relax_cell: bool = True
    optimizer: Literal["FIRE", "BFGS"] = "FIRE"
    cell_filter: Literal["unit", "frechet"] = "unit"
    max_volume_change: float = 4.0
    min_distance_ratio: float = 0.35


@dataclass(slots=True)
class RelaxOutcome:
    """What a relaxation produced: final structure, energies (eV/atom per evaluation), steps, status."""

    structure: Structure
    energy_total: float
    energies_per_atom: list[float] = field(default_factory=list)
    n_steps: int = 0
    converged: bool = False
    status: Status = "ok"
    message: str = ""


def _check(atoms: Any, v0: float, settings: RelaxSettings) -> float:
    energy = float(atoms.get_potential_energy())
    if not math.isfinite(energy):
        raise RelaxFault("failed", f"the model returned a non-finite energy ({energy})")
    forces = atoms.get_forces()
    if not np.all(np.isfinite(forces)):
        raise RelaxFault("failed", "the model returned non-finite forces")
    ratio = float(atoms.get_volume()) / v0
    if ratio > settings.max_volume_change:
        raise RelaxFault("failed", f"structure exploded: cell volume grew {ratio:.1f}× during relaxation "
                                   f"(limit {settings.max_volume_change}×)")
    if ratio < 1.0 / settings.max_volume_change:
        raise RelaxFault("failed", f"structure collapsed: cell volume shrank to {ratio:.2f}× during relaxation "
                                   f"(limit 1/{settings.max_volume_change})")
    return energy


def relax_structure(structure: Structure, *, calculator: Any, settings: RelaxSettings,
                    deadline: float = math.inf) -> RelaxOutcome:
    """Relax ``structure``; raises :class:`RelaxFault` for faults (see module docstring).

    ``deadline`` is a ``time.monotonic()`` value. On timeout the fault carries status ``timeout``.
    Hitting the step cap is not a fault: the outcome has ``status='unconverged'``.
    """
    from ase.filters import FrechetCellFilter, UnitCellFilter
    from ase.optimize import BFGS, FIRE

    atoms = AseAtomsAdaptor.get_atoms(structure)
    calculator.reset()
    atoms.calc = calculator
    n = len(atoms)
    v0 = float(atoms.get_volume())
    target: Any = atoms
    if settings.relax_cell:
        target = UnitCellFilter(atoms) if settings.cell_filter == "unit" else FrechetCellFilter(atoms)
    opt = (FIRE if settings.optimizer == "FIRE" else BFGS)(target, logfile=None)
    energies: list[float] = []
    converged = False
    try:
        for step_converged in opt.irun(fmax=settings.fmax, steps=settings.steps):
            energies.append(_check(atoms, v0, settings) / n)
            if step_converged:
                converged = True
                break
            if time.monotonic() > deadline:
                raise RelaxFault("timeout", f"timed out after {opt.nsteps} steps (per-structure limit reached)")
    except RelaxFault as fault:
        fault.n_steps, fault.energies_per_atom = int(opt.nsteps), energies
        raise
    final = AseAtomsAdaptor.get_structure(atoms)
    ratio = min_distance_ratio(final)
    if ratio < settings.min_distance_ratio:
        raise RelaxFault("failed", f"structure collapsed: atoms at {ratio:.2f}× the sum of covalent radii")
    energy = float(atoms.get_potential_energy())
    status: Status = "ok" if converged else "unconverged"
    message = "" if converged else f"not converged to fmax={settings.fmax} eV/Å in {settings.steps} steps"
    return RelaxOutcome(final, energy, energies, int(opt.nsteps), converged, status, message)


def static_energies(structures: list[Structure], *, calculator: Any, batch_size: int = 16) -> list[float]:
    """Total energies (eV) of unrelaxed structures in batches with CHGNet's ``predict_structure``.

    Batching pays for static evaluation (one graph batch per ``batch_size`` structures); CPU memory
    is about 4 MB per atom in a batch, so keep ``batch_size × atoms`` modest.
    """
    t0 = time.perf_counter()
    per_atom = energies_per_atom(structures, model=calculator.model, batch_size=batch_size)
    calculator.model_time_s += time.perf_counter() - t0
    return [e * len(s) for e, s in zip(per_atom, structures, strict=True)]


def energies_per_atom(structures: list[Structure], *, model: Any, batch_size: int = 16) -> list[float]:
    """Energies per atom (eV/atom) of unrelaxed ``structures`` from a CHGNet ``model``'s ``predict_structure``,
    ``batch_size`` structures per graph batch."""
    preds = model.predict_structure(structures, task="e", batch_size=batch_size)
    if isinstance(preds, dict):
        preds = [preds]
    return [float(np.asarray(p["e"]).reshape(-1)[0]) for p in preds]
