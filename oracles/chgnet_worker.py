"""What runs inside a CHGNet oracle worker: the oracle's settings, the per-process state (model, sanity
gates, hull reference) and the evaluation of one task or one chunk of tasks.

:class:`oracles.chgnet.CHGNetOracle` runs these in the calling process (``workers=0``) or in each process of
its pool (``workers ≥ 1``, spawned: everything a worker is handed must be importable by name from here).
The public names are re-exported by :mod:`oracles.chgnet`; import them from there.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, model_validator
from pymatgen.core import Structure

from discovery.crystal import Crystal
from oracles.base import OracleResult, failed, structure_to_cif
from oracles.decode import DecodeError, DecodingFields, decode_crystal
from oracles.engines import DEFAULT_ENGINE, batched_cell_setting_fits, resolved_engine
from oracles.reference import DEFAULT_REFERENCE, ReferenceName, corrected_energy, load_reference
from oracles.relax import RelaxFault, RelaxSettings, load_chgnet_calculator, relax_structure, static_energies
from oracles.sanity import Gates, check_structure, gate_message, model_cutoff

CalculatorFactory = Callable[[str], Any]
"""``factory(device) -> ASE calculator`` with ``model_time_s``, ``reset()`` and (for static mode) ``model``.
Must be importable by name (a module-level function or class) when ``workers ≥ 1``."""


class CHGNetSettings(DecodingFields):
    """Settings of the CHGNet oracle (all keyword arguments of ``get_oracle('chgnet', ...)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["relax", "static"] = "relax"
    engine: Literal["batched", "ase"] = Field(
        DEFAULT_ENGINE, description="relax mode: 'batched' (the default) relaxes many structures as one batched graph "
                                    "on torch-sim (oracles.batched); 'ase': one structure at a time through ASE. "
                                    "Left out, it is 'ase' when optimizer: BFGS is asked for (configs written "
                                    "before the batched engine had BFGS keep relaxing through ASE), else "
                                    "'batched' (see resolved_engine); engine: batched with optimizer: BFGS runs "
                                    "ASE's BFGS on the batch (oracles.batched.bfgs)")
    max_batch_atoms: int = Field(96, ge=1, description="batched engine on the CPU: atoms per batch (per process); "
                                                       "~100 keeps a CHGNet batch in a core's cache: 256 cost "
                                                       "~1.5× the time per atom on the 2-core box (on CUDA "
                                                       "torch-sim sizes the batch by GPU memory)")
    fmax: float = Field(0.1, gt=0, description="force convergence criterion, eV/Å")
    steps: int = Field(200, ge=0, description="optimizer step cap per structure")
    timeout_s: float = Field(300.0, gt=0, description="wall-time limit per structure (decode + relax), s")
    relax_cell: bool = True
    optimizer: Literal["FIRE", "BFGS"] = "FIRE"
    cell_filter: Literal["unit", "frechet"] = "unit"
    max_volume_change: float = Field(4.0, gt=1, description="volume factor beyond which a cell exploded/collapsed")
    hard_timeout_grace_s: float = Field(30.0, gt=0, description="workers only: slack before hung workers are killed, s")
    workers: int = Field(0, ge=0, description="0: in-process; N: pool of N processes, one torch thread each")
    threads: int = Field(1, ge=1, description="torch threads for in-process evaluation")
    device: Literal["cpu", "cuda"] = "cpu"
    batch_size: int = Field(16, ge=1, description="structures per batch in static mode")
    mp2020_correction: Literal["learned", "apply"] = Field(
        "learned", description="'learned': the model already predicts MP2020-compatible energies (CHGNet); "
                               "'apply': apply pymatgen's MaterialsProject2020Compatibility to its energy")
    reference: ReferenceName = Field(DEFAULT_REFERENCE, description="hull reference (see oracles.reference)")
    mp20_dir: str | None = Field(None, description="MP-20 tables for the hull (default: discovery/data/mp20)")
    start_method: Literal["spawn", "forkserver"] = "spawn"

    @model_validator(mode="before")
    @classmethod
    def _default_engine(cls, data: Any) -> Any:
        """Left out, the engine is the one that supports the options asked for (an existing config with
        ``optimizer: BFGS`` keeps relaxing through ASE)."""
        if isinstance(data, Mapping) and data.get("engine") is None:
            engine = resolved_engine(data)
            if engine in get_args(cls.model_fields["engine"].annotation):  # SevenNet: batched only
                data = {**data, "engine": engine}
        return data

    @model_validator(mode="after")
    def _engine_supports(self) -> CHGNetSettings:
        if self.engine == "batched" and not batched_cell_setting_fits(
                optimizer=self.optimizer, relax_cell=self.relax_cell, cell_filter=self.cell_filter):
            raise ValueError("optimizer: BFGS on the batched engine relaxes the cell with the unit-cell filter (as "
                             "ASE's BFGS(UnitCellFilter)); set cell_filter: unit and relax_cell: true, or "
                             "optimizer: FIRE" + (", or engine: ase" if "ase" in get_args(
                                 type(self).model_fields["engine"].annotation) else ""))
        return self

    def relax_settings(self) -> RelaxSettings:
        return RelaxSettings(fmax=self.fmax, steps=self.steps, relax_cell=self.relax_cell, optimizer=self.optimizer,
                             cell_filter=self.cell_filter, max_volume_change=self.max_volume_change)


@dataclass(frozen=True, slots=True)
class _Task:
    index: int
    id: str
    seed: int
    crystal: Crystal | None
    structure: Structure | None


# --- per-process state (worker processes, or the calling process when workers=0) -------------
_STATE: dict[str, Any] = {}


def _init_worker(settings: CHGNetSettings, factory: CalculatorFactory | None) -> None:
    """Pool initializer: one torch thread, load the model and the hull reference once."""
    import torch

    torch.set_num_threads(1)
    _limit_blas_threads(1)
    _quiet_warnings()
    _exit_with_parent()
    _setup_state(settings, factory)


def _exit_with_parent(interval_s: float = 1.0) -> None:
    """Exit this worker once the process that started it is gone (a SIGKILLed campaign would otherwise
    leave its relaxation workers running): a daemon thread watches the parent pid.

    The parent is the pid recorded when the worker was spawned, not ``os.getppid()`` now: a parent killed
    while this worker was still importing has already been replaced by the reaper (pid 1)."""
    import threading

    spawner = multiprocessing.parent_process()
    parent = spawner.pid if spawner is not None and spawner.pid is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="matloop-parent-watch", daemon=True).start()


def _quiet_warnings() -> None:
    """Silence known-harmless library warnings that would otherwise print once per worker."""
    import warnings

    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    warnings.filterwarnings("ignore", message="Issues encountered while parsing CIF")
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")


def _limit_blas_threads(n: int) -> Any:
    """Limit OpenBLAS/OpenMP threads (scipy's 3×3 LAPACK calls in the cell filter ran 7× slower with 2
    threads on a loaded 2-core box). Returns the threadpoolctl limiter (a context manager) or None."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn/pymatgen stacks
        return None
    return threadpool_limits(limits=n)


def _setup_state(settings: CHGNetSettings, factory: CalculatorFactory | None) -> None:
    """Load the model, gates and hull reference, and build their lazy tables now: neither a candidate's time
    nor, in a worker, the pool's hard deadline (counted from when the workers are ready) may include a one-off
    per-process build (the hull index alone took 1.6 s idle, several times that under load)."""
    _STATE["calculator"] = (factory or load_chgnet_calculator)(settings.device)
    # the batched engine's torch-sim model wraps the calculator's model: rebuilt for this calculator (a model
    # left by another oracle of this process, e.g. one with injected faults, must not be reused)
    _STATE.pop("ts_model", None)
    _STATE.pop("ts_model_key", None)
    _STATE["gates"] = _model_gates(_STATE["calculator"])
    _STATE["reference"] = load_reference(settings.reference, **_mp20_kw(settings))
    _STATE["settings"] = settings
    _warm_compatibility()
    _STATE["reference"].system_entries(frozenset())  # build its chemical-system index now (≈1.6 s once per process)


def _model_gates(calculator: Any) -> Gates:
    """Sanity gates with the loaded model's own atom-graph cutoff (CHGNet 0.3.0: 6 Å)."""
    cutoff = model_cutoff(getattr(calculator, "model", None))
    if cutoff is None:
        return Gates(cutoff_source="default: the calculator exposes no model cutoff")
    return Gates(cutoff_A=cutoff, cutoff_source="the model's atom-graph cutoff (graph_converter.atom_graph_cutoff)")


def _gate(structure: Structure, stage: Literal["input", "result"]) -> str | None:
    """The message refusing ``structure`` (see :mod:`oracles.sanity`), or ``None`` when it passes."""
    reason = check_structure(structure, gates=_STATE["gates"])
    return None if reason is None else gate_message(stage, reason)


def _warm_compatibility() -> None:
    """Load pymatgen's oxidation-state tables once (≈0.7 s) so no candidate pays for it."""
    from pymatgen.core import Lattice

    corrected_energy(Structure(Lattice.cubic(4.2), ["Fe", "O"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]), -15.0)


def _mp20_kw(settings: CHGNetSettings) -> dict[str, Any]:
    return {"mp20_dir": Path(settings.mp20_dir)} if settings.mp20_dir else {}


def _to_structure(task: _Task, settings: CHGNetSettings) -> tuple[Structure, dict[str, Any]]:
    if task.structure is not None:
        return task.structure, {"input": "structure"}
    assert task.crystal is not None
    dec = decode_crystal(task.crystal, seed=task.seed, settings=settings.decode_settings())
    return dec.structure, {"input": "crystal", "decode_seed": task.seed, "decode_attempt": dec.attempt,
                           "decode_volume_scale": round(dec.volume_scale, 6),
                           "decoder": settings.decoder.name}


def _targets(structure: Structure, energy_total: float, reference: Any) -> dict[str, float]:
    comp = structure.composition
    settings: CHGNetSettings = _STATE["settings"]
    corrected = corrected_energy(structure, energy_total)[0] if settings.mp2020_correction == "apply" else energy_total
    e_form = reference.formation_energy_per_atom(comp, corrected)
    return {"energy_per_atom": energy_total / len(structure), "corrected_energy_per_atom": corrected / len(structure),
            "formation_energy_per_atom": e_form,
            "e_above_hull": reference.e_above_hull(comp, e_form), "density": float(structure.density),
            "volume_per_atom": float(structure.volume / len(structure))}


def _run_task(task: _Task) -> OracleResult:
    """Evaluate one candidate in this process; every failure becomes a result."""
    t0 = time.perf_counter()
    settings: CHGNetSettings = _STATE["settings"]
    calc = _STATE["calculator"]
    model_t0 = float(getattr(calc, "model_time_s", 0.0))
    deadline = time.monotonic() + settings.timeout_s
    info: dict[str, Any] = {}
    structure: Structure | None = None

    def finish(result: OracleResult) -> OracleResult:
        result.wall_time_s = time.perf_counter() - t0
        result.provenance.update(info)
        result.provenance["model_time_s"] = float(getattr(calc, "model_time_s", 0.0)) - model_t0
        result.provenance["model_version"] = _chgnet_model_version()
        return result

    try:
        structure, info = _to_structure(task, settings)
        info["sanity_gates"] = _STATE["gates"].provenance()
        refused = _gate(structure, "input")
        if refused is not None:
            return finish(failed(task.id, "invalid", refused, structure_cif=structure_to_cif(structure)))
        out = relax_structure(structure, calculator=calc, settings=settings.relax_settings(), deadline=deadline)
        refused = _gate(out.structure, "result")
        if refused is not None:
            return finish(failed(task.id, "invalid", refused, structure_cif=structure_to_cif(out.structure),
                                 energies=out.energies_per_atom, n_steps=out.n_steps))
        targets = _targets(out.structure, out.energy_total, _STATE["reference"])
        return finish(OracleResult(candidate_id=task.id, status=out.status, message=out.message, targets=targets,
                                   structure_cif=structure_to_cif(out.structure), energies=out.energies_per_atom,
                                   n_steps=out.n_steps))
    except DecodeError as exc:
        return finish(failed(task.id, "invalid" if exc.impossible else "failed", f"decoding failed: {exc}"))
    except RelaxFault as exc:
        cif = structure_to_cif(structure) if structure is not None else None
        return finish(failed(task.id, exc.status, str(exc), structure_cif=cif, n_steps=exc.n_steps,
                             energies=exc.energies_per_atom))
    except Exception as exc:  # the model or a library raised: record, never lose the batch
        cif = structure_to_cif(structure) if structure is not None else None
        return finish(failed(task.id, "failed", f"{type(exc).__name__}: {exc}", structure_cif=cif))


def _run_chunk(tasks: list[_Task], on_result: Callable[[int, OracleResult], None] | None = None
               ) -> list[OracleResult]:
    """Relax mode: each task on its own (engine ase) or all together (engine batched, see
    :mod:`oracles.batched.run`). Static mode: decode all, one batched CHGNet call; if the batch
    fails, each structure is retried alone so that one bad structure cannot fail the others."""
    settings: CHGNetSettings = _STATE["settings"]
    if settings.mode == "relax" and settings.engine == "batched":
        from oracles.batched.run import run_batched

        return run_batched(tasks, on_result=on_result)
    if settings.mode == "relax":
        return [_run_task(t) for t in tasks]
    t0 = time.perf_counter()
    calc, reference = _STATE["calculator"], _STATE["reference"]
    results: dict[int, OracleResult] = {}
    ready: list[tuple[_Task, Structure, dict[str, Any]]] = []
    for t in tasks:
        try:
            structure, info = _to_structure(t, settings)
        except DecodeError as exc:
            results[t.index] = failed(t.id, "invalid" if exc.impossible else "failed", f"decoding failed: {exc}")
            continue
        info["sanity_gates"] = _STATE["gates"].provenance()
        refused = _gate(structure, "input")  # static: the input is also the result
        if refused is None:
            ready.append((t, structure, info))
        else:
            results[t.index] = failed(t.id, "invalid", refused, structure_cif=structure_to_cif(structure))
            results[t.index].provenance.update(info)
    try:
        energies = (static_energies([s for _, s, _ in ready], calculator=calc, batch_size=settings.batch_size)
                    if ready else [])
    except Exception:
        energies = []
        for _, structure, _ in ready:
            try:
                energies.append(static_energies([structure], calculator=calc, batch_size=1)[0])
            except Exception:
                energies.append(math.nan)
    for (t, structure, info), energy in zip(ready, energies, strict=True):
        try:
            if not math.isfinite(energy):
                raise RelaxFault("failed", f"the model returned a non-finite energy or failed ({energy})")
            res = OracleResult(candidate_id=t.id, status="ok", targets=_targets(structure, energy, reference),
                               structure_cif=structure_to_cif(structure), energies=[energy / len(structure)])
        except RelaxFault as exc:
            res = failed(t.id, exc.status, str(exc), structure_cif=structure_to_cif(structure))
        except Exception as exc:
            res = failed(t.id, "failed", f"{type(exc).__name__}: {exc}", structure_cif=structure_to_cif(structure))
        res.provenance.update(info)
        results[t.index] = res
    share = (time.perf_counter() - t0) / max(len(tasks), 1)
    for r in results.values():
        r.wall_time_s = share
        r.provenance["model_version"] = _chgnet_model_version()
    return [results[t.index] for t in tasks]



def _worker_pid(hold_s: float) -> int:
    """Warm-up task: hold the worker briefly (so that other workers get the next task) and name it."""
    time.sleep(hold_s)
    return os.getpid()


def _cost(task: _Task) -> int:
    if task.structure is not None:
        return len(task.structure)
    assert task.crystal is not None
    return task.crystal.n_atoms


def _chgnet_model_version() -> str:
    calc = _STATE.get("calculator")
    version = getattr(getattr(calc, "model", None), "version", None)
    return str(version) if version else "0.3.0 (weights shipped in the chgnet wheel)"
