"""Batched relaxation: torch-sim's FIRE (or ASE's BFGS, :mod:`oracles.batched.bfgs`) with a cell filter over many
structures at once.

:func:`relax_batch` relaxes a list of structures with any torch-sim ``ModelInterface`` (CHGNet through
:mod:`oracles.batched.chgnet_adapter`, SevenNet through torch-sim's own interface). torch-sim supplies the
optimizer (``unit_cell_fire`` / ``frechet_cell_fire`` in its ASE flavour, or ``fire`` for fixed cells) and the
batching (``InFlightAutoBatcher``: converged structures leave the batch, waiting ones enter as memory allows).
This module adds what the oracle contract needs, per structure:

* the force criterion ``fmax`` (atoms and cell, as ASE's filters) and the step cap ``steps``; hitting the cap
  ends that structure as ``unconverged``, the others go on;
* fault checks after every force evaluation, as :mod:`oracles.relax` does for the ASE path: a non-finite
  energy or force, a cell whose volume changed beyond ``max_volume_change`` either way, atoms collapsed onto
  each other at the end, and the per-structure wall-time limit (counted from when it entered the batch);
* fault isolation: when a batched step raises (a model error on one structure), the step is repeated for
  each structure alone from the state before it; those that raise alone fail with the error, the rest go on.

Batch size: on CUDA torch-sim measures the memory a forward pass needs (``determine_max_batch_size``); on the
CPU (where torch-sim cannot measure) the batch is capped at ``max_batch_atoms`` atoms. The structures may come
from a lazy iterator, read only as the batch has room (how pool workers share one queue of candidates).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from oracles.decode import min_distance_ratio
from oracles.engines import batched_cell_setting_fits
from oracles.relax import RelaxFault, RelaxOutcome

ENGINE_REVISION = 2
"""Bumped when the engine's results change for the same inputs and settings (1: torch-sim's FIRE step as is;
2: :func:`independent_steps`), so that caches of oracle results (the discovery benchmark's) know them stale."""
Outcome = RelaxOutcome | RelaxFault
"""What one structure ended with: a :class:`RelaxOutcome` (``ok``/``unconverged``) or a :class:`RelaxFault`."""
DoneCallback = Callable[[int, Outcome, float, float], None]
"""``on_done(index, outcome, wall_s, model_s)`` as each structure leaves the batch (input index, time in the
batch, its share of the model time)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """fmax (eV/Å) and steps: per-structure convergence and cap; cell_filter: torch-sim's ``unit_cell_fire``
    (like ASE's ``UnitCellFilter``) or ``frechet_cell_fire``; max_volume_change, min_distance_ratio: fault
    limits as in :class:`oracles.relax.RelaxSettings`; timeout_s: wall time per structure in the batch;
    max_batch_atoms: CPU batch cap (~100 atoms keeps a CHGNet batch of small cells in one core's cache; 256 cost
    ~1.5× the time per atom on the 2-core box) (ignored on CUDA, where torch-sim sizes the batch by memory; its probe
    compares ``max_atoms_to_try`` with a number of systems, hence ``max_systems_to_try``)."""

    fmax: float = 0.1
    steps: int = 200
    relax_cell: bool = True
    cell_filter: Literal["unit", "frechet"] = "unit"
    optimizer: Literal["FIRE", "BFGS"] = "FIRE"
    """``BFGS``: ASE's BFGS with the unit-cell filter (:mod:`oracles.batched.bfgs`; needs ``relax_cell`` and
    ``cell_filter="unit"``)."""
    max_volume_change: float = 4.0
    min_distance_ratio: float = 0.35
    timeout_s: float = 300.0
    max_batch_atoms: int = 96
    max_systems_to_try: int = 2048
    """CUDA: the largest batch (in copies of one structure) torch-sim's memory probe tries."""
    init_chunk: int = 32

    def __post_init__(self) -> None:
        if not batched_cell_setting_fits(optimizer=self.optimizer, relax_cell=self.relax_cell,
                                         cell_filter=self.cell_filter):
            raise ValueError("the batched BFGS relaxes the cell with the unit-cell filter: set relax_cell true and "
                             "cell_filter unit, or optimizer FIRE")


def _optimizer(model: Any, settings: EngineSettings
               ) -> tuple[Callable[..., Any], Callable[..., Any], Callable[[Any, torch.Tensor], None]]:
    """``(init, step, release)``: ``release(state, done)`` lets the optimizer forget the systems of ``state`` that
    leave the batch (``done`` [n_systems] bool; BFGS keeps a Hessian per structure, FIRE nothing outside the state)."""
    import inspect

    if settings.optimizer == "BFGS":
        from oracles.batched.bfgs import UnitCellBFGS

        bfgs = UnitCellBFGS(model)
        return bfgs.init, bfgs.step, bfgs.release

    from torch_sim.optimizers import fire, frechet_cell_fire, unit_cell_fire

    make = fire if not settings.relax_cell else unit_cell_fire if settings.cell_filter == "unit" else frechet_cell_fire
    init_fn, step_fn = make(model=model, md_flavor="ase_fire")
    defaults = {k: float(v.default) for k, v in inspect.signature(make).parameters.items()
                if k in ("dt_start", "f_dec", "alpha_start")}
    return init_fn, independent_steps(step_fn, **defaults), lambda state, done: None


def independent_steps(step_fn: Callable[[Any], Any], *, dt_start: float, f_dec: float, alpha_start: float
                      ) -> Callable[[Any], Any]:
    """``step_fn`` (torch-sim's ASE-flavour FIRE step) made independent of the other systems in the batch.

    torch-sim 0.3.0 marks a system that has not stepped yet with NaN velocities, and when *any* system of the batch
    has them it skips the FIRE update (power, dt/α/n_pos, velocity mixing, the cell filter's force transform) for
    *all* of them (TorchSim/torch-sim#490, fixed in 0.4, which needs Python ≥ 3.12). With the in-flight batcher a
    structure joins whenever another leaves, so every join perturbed the others: the same 30 structures relaxed in
    reverse order ended with other energies for 29 of them (up to 0.025 eV/atom) and other step counts.

    Here a new system gets zero velocities (atoms and cell) and the start values of α and n_pos before the step,
    and dt = dt_start / f_dec (zero velocity is zero power, which halves dt in the regular branch): its first step
    is the ASE first step (v = 0, then v = F·dt_start), whether it starts a batch or joins one, and no system
    ever takes the NaN branch."""

    def step(state: Any) -> Any:
        new_atoms = torch.isnan(state.velocities).any(dim=1)
        if bool(new_atoms.any()):
            new = torch.zeros(state.n_systems, dtype=torch.bool, device=state.velocities.device)
            new[state.system_idx[new_atoms]] = True
            state.velocities[new_atoms] = 0.0
            cell_velocities = getattr(state, "cell_velocities", None)
            if cell_velocities is not None:
                cell_velocities[new] = 0.0
            state.dt[new] = dt_start / f_dec
            state.alpha[new] = alpha_start
            state.n_pos[new] = 0
        return step_fn(state)

    return step


def _safe_apply(fn: Callable[[Any], Any], states: list[Any]) -> list[Any | Exception]:
    """``fn`` on the concatenated states, split again; if that raises, ``fn`` on each state alone, an exception
    standing for each one that raises on its own (so one bad structure never fails the others)."""
    from torch_sim.state import concatenate_states

    try:
        return list(fn(concatenate_states(states)).split())
    except Exception:
        out: list[Any | Exception] = []
        for s in states:
            try:
                out.append(fn(s))
            except Exception as exc:
                out.append(exc)
        return out


def _structure(positions: np.ndarray, cell: np.ndarray, numbers: np.ndarray) -> Structure:
    return Structure(Lattice(cell), numbers.tolist(), positions, coords_are_cartesian=True, validate_proximity=False)


class _Tracker:
    """Per-structure book-keeping, grown as structures arrive: steps, energies, entry time, initial volume,
    model-time share."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.n_atoms: list[int] = []
        self.v0: list[float] = []
        self.steps: list[int] = []
        self.energies: list[list[float]] = []
        self.entered: list[float] = []
        self.model_s: list[float] = []
        self.done: set[int] = set()
        """Input indices already given an outcome (one whose step failed stays in the batch until the next check)."""
        self.atoms_done = 0
        """Atoms of the structures in :attr:`done` (the atoms still in flight are ``sum(n_atoms) - atoms_done``)."""

    def add(self, structure: Structure) -> int:
        """Track one more structure; its input index."""
        self.n_atoms.append(len(structure))
        self.v0.append(float(structure.volume))
        self.steps.append(0)
        self.energies.append([])
        self.entered.append(math.nan)
        self.model_s.append(0.0)
        return len(self.n_atoms) - 1

    def in_flight_atoms(self) -> int:
        return sum(self.n_atoms) - self.atoms_done

    def fault(self, i: int, status: Literal["failed", "timeout"], message: str) -> RelaxFault:
        fault = RelaxFault(status, message)
        fault.n_steps, fault.energies_per_atom = self.steps[i], list(self.energies[i])
        return fault


def relax_batch(structures: Iterable[Structure], *, model: Any, settings: EngineSettings,
                on_done: DoneCallback | None = None) -> list[Outcome]:
    """Relax ``structures`` together; one outcome per structure, in input order (see the module docstring).

    ``structures`` may be a lazy iterator (e.g. one that pulls candidates from a queue shared with other
    processes): it is read only as the batch has room, i.e. while the atoms in flight are below
    ``max_batch_atoms`` (plus the one structure that the batcher looks at and puts back when it does not fit),
    so a process never holds more work than its batch can take."""
    from torch_sim.autobatching import InFlightAutoBatcher, calculate_memory_scaler
    from torch_sim.io import structures_to_state
    from torch_sim.runners import generate_force_convergence_fn

    track = _Tracker(settings)
    outcomes: dict[int, Outcome] = {}
    t_start = time.perf_counter()

    def finish(i: int, outcome: Outcome) -> None:
        outcomes[i] = outcome
        if i not in track.done:
            track.done.add(i)
            track.atoms_done += track.n_atoms[i]
        if on_done is not None:
            entered = track.entered[i] if math.isfinite(track.entered[i]) else t_start
            on_done(i, outcome, time.perf_counter() - entered, track.model_s[i])

    init_fn, step_fn, release = _optimizer(model, settings)
    converged_fn = generate_force_convergence_fn(settings.fmax, include_cell_forces=settings.relax_cell)
    on_cuda = torch.device(model.device).type == "cuda"
    cap = math.inf if on_cuda else float(settings.max_batch_atoms)
    source = iter(structures)
    order: list[int] = []  # input index of the k-th state handed to the batcher
    batcher: InFlightAutoBatcher | None = None

    def pull() -> list[tuple[int, Any]]:
        """The next structures as (input index, raw state or the exception building it raised): at least one
        (unless the source is exhausted), more while the batch has room, at most ``init_chunk``."""
        got: list[tuple[int, Any]] = []
        while not got or (len(got) < settings.init_chunk and track.in_flight_atoms() < cap):
            s = next(source, None)
            if s is None:
                break
            i = track.add(s)
            try:
                raw: Any = structures_to_state([s], device=model.device, dtype=model.dtype)
            except Exception as exc:
                raw = exc
            got.append((i, raw))
        return got

    def initialised() -> Iterator[Any]:
        """Initialised single-structure optimizer states, each chunk of :func:`pull` in one model call."""
        while idx_raw := pull():
            good = [(i, r) for i, r in idx_raw if not isinstance(r, Exception)]
            for i, r in idx_raw:
                if isinstance(r, Exception):
                    finish(i, track.fault(i, "failed", f"could not build the model input: {r}"))
            t0 = model_time(model)
            states = _safe_apply(init_fn, [r for _, r in good]) if good else []
            share = (model_time(model) - t0) / max(len(good), 1)
            for (i, raw), st in zip(good, states, strict=True):
                track.entered[i] = time.perf_counter()
                track.model_s[i] += share
                if isinstance(st, Exception):
                    finish(i, track.fault(i, "failed", f"the model failed on this structure: "
                                                       f"{type(st).__name__}: {st}"))
                    continue
                if batcher is not None and not on_cuda:  # a structure larger than the cap still gets a batch
                    metric = float(calculate_memory_scaler(raw, "n_atoms"))
                    batcher.max_memory_scaler = max(float(batcher.max_memory_scaler or 0.0), metric)
                order.append(i)
                yield st

    batcher = InFlightAutoBatcher(
        model, return_indices=True, max_iterations=None, max_atoms_to_try=settings.max_systems_to_try,
        memory_scales_with=model.memory_scales_with if on_cuda else "n_atoms",
        max_memory_scaler=None if on_cuda else float(settings.max_batch_atoms),
        max_memory_padding=0.9 if on_cuda else 1.0)
    source_states = initialised()
    first = next(source_states, None)
    if first is not None:
        def chained() -> Iterator[Any]:
            yield first
            yield from source_states

        batcher.load_states(chained())
        state, _, current = batcher.next_batch(None, None)
        while state is not None:
            ids = [order[k] for k in current]
            done = _check(state, ids, track, converged_fn, finish)
            if done.any():
                release(state, done)
                state, _, current = batcher.next_batch(state, done)
                continue
            state = _step(state, ids, step_fn, model, track, finish)
    return [outcomes.get(i, RelaxFault("failed", "no outcome")) for i in range(len(track.n_atoms))]


def model_time(model: Any) -> float:
    return float(getattr(model, "model_time_s", 0.0))


def _step(state: Any, ids: list[int], step_fn: Callable[[Any], Any], model: Any, track: _Tracker,
          finish: Callable[[int, Outcome], None]) -> Any:
    """One optimizer step of the whole batch (see :func:`_safe_apply`); a structure whose step raises alone is
    recorded as failed and carried unchanged (it leaves the batch at the next check, being done)."""
    t0, t_wall = model_time(model), time.perf_counter()
    before = state.clone()
    try:
        state = step_fn(state)
    except Exception:
        from torch_sim.state import concatenate_states

        parts = _safe_apply(step_fn, before.split())
        singles = before.split()
        for k, (i, part) in enumerate(zip(ids, parts, strict=True)):
            if isinstance(part, Exception):
                track.steps[i] += 1
                finish(i, track.fault(i, "failed", f"the model failed on this structure during relaxation: "
                                                   f"{type(part).__name__}: {part}"))
                parts[k] = singles[k]
        state = concatenate_states(parts)
    share = ((model_time(model) - t0) or (time.perf_counter() - t_wall)) / len(ids)
    for i in ids:
        track.model_s[i] += share
        track.steps[i] += 1
    return state


def _check(state: Any, ids: list[int], track: _Tracker, converged_fn: Callable[..., torch.Tensor],
           finish: Callable[[int, Outcome], None]) -> torch.Tensor:
    """Which structures of the batch are done (converged, capped, faulty, out of time or already failed);
    records the energies of this evaluation and the outcome of each one that is done."""
    s = track.settings
    n = state.n_systems
    energy = state.energy.detach().cpu().double().numpy()
    owners = state.system_idx.detach().cpu().numpy()
    finite_atoms = torch.isfinite(state.forces).all(dim=1).cpu()
    forces_ok = torch.ones(n, dtype=torch.bool).scatter_reduce(0, state.system_idx.cpu(), finite_atoms, "amin")
    volumes = torch.linalg.det(state.cell).abs().detach().cpu().double().numpy()
    try:
        converged = converged_fn(state, None).detach().cpu().numpy()
    except Exception:
        converged = np.zeros(n, dtype=bool)
    arrays: list[np.ndarray] = []  # positions, cells, numbers: read once, only when a structure finishes

    def final(b: int) -> Structure:
        if not arrays:
            arrays.extend([state.positions.detach().cpu().double().numpy(),
                           state.row_vector_cell.detach().cpu().double().numpy(),
                           state.atomic_numbers.detach().cpu().numpy()])
        positions, cells, numbers = arrays
        mask = owners == b
        return _structure(positions[mask], cells[b], numbers[mask])

    now = time.perf_counter()
    done = torch.zeros(n, dtype=torch.bool, device=state.energy.device)
    for b, i in enumerate(ids):
        if len(track.energies[i]) <= track.steps[i]:  # one energy per force evaluation
            track.energies[i].append(float(energy[b]) / track.n_atoms[i])
        if i in track.done:
            done[b] = True
            continue
        outcome: Outcome | None = None
        ratio = float(volumes[b]) / track.v0[i]
        if not math.isfinite(float(energy[b])):
            outcome = track.fault(i, "failed", f"the model returned a non-finite energy ({energy[b]})")
        elif not bool(forces_ok[b]):
            outcome = track.fault(i, "failed", "the model returned non-finite forces")
        elif not math.isfinite(ratio) or ratio > s.max_volume_change:
            outcome = track.fault(i, "failed", f"structure exploded: cell volume grew {ratio:.1f}× during "
                                               f"relaxation (limit {s.max_volume_change}×)")
        elif ratio < 1.0 / s.max_volume_change:
            outcome = track.fault(i, "failed", f"structure collapsed: cell volume shrank to {ratio:.2f}× during "
                                               f"relaxation (limit 1/{s.max_volume_change})")
        elif bool(converged[b]) or track.steps[i] >= s.steps:
            relaxed = final(b)
            if (ratio_min := min_distance_ratio(relaxed)) < s.min_distance_ratio:
                outcome = track.fault(i, "failed", f"structure collapsed: atoms at {ratio_min:.2f}× "
                                                   "the sum of covalent radii")
            elif bool(converged[b]):
                outcome = RelaxOutcome(relaxed, float(energy[b]), list(track.energies[i]), track.steps[i], True)
            else:
                outcome = RelaxOutcome(relaxed, float(energy[b]), list(track.energies[i]), track.steps[i], False,
                                       "unconverged", f"not converged to fmax={s.fmax} eV/Å in {s.steps} steps")
        elif now - track.entered[i] > s.timeout_s:
            outcome = track.fault(i, "timeout", f"timed out after {track.steps[i]} steps (per-structure limit "
                                                f"{s.timeout_s} s in the batch reached)")
        if outcome is not None:
            finish(i, outcome)
            done[b] = True
    return done

