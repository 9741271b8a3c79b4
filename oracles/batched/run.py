"""The oracle side of the batched engine: decode → sanity gate → :func:`relax_batch` → gate → targets.

Called by :func:`oracles.chgnet._run_chunk` when ``engine="batched"`` (in the calling process when
``workers=0``), and by :func:`oracles.batched.pool.run_shared` in each pool worker, whose batch takes its
tasks from a queue shared by all workers. Every candidate still gets exactly one
result: decoding errors, refused inputs and relaxation faults are results, as in the ASE path, and a
structure that fails inside the batch never fails the others (see :mod:`oracles.batched.engine`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pymatgen.core import Structure

from oracles.base import OracleResult, failed, structure_to_cif
from oracles.batched.engine import EngineSettings, Outcome, relax_batch
from oracles.decode import DecodeError
from oracles.relax import RelaxFault
from oracles.sanity import Gates

ResultCallback = Any
"""``on_result(task_index, result)``, called as each candidate's result is ready."""


def torch_sim_version() -> str:
    try:
        return version("torch-sim-atomistic")
    except PackageNotFoundError:  # pragma: no cover - a dependency
        return "unknown"


def engine_settings(settings: Any) -> EngineSettings:
    """The engine settings of a CHGNet/SevenNet oracle's settings."""
    return EngineSettings(fmax=settings.fmax, steps=settings.steps, relax_cell=settings.relax_cell,
                          cell_filter=settings.cell_filter, optimizer=settings.optimizer,
                          max_volume_change=settings.max_volume_change,
                          timeout_s=settings.timeout_s, max_batch_atoms=settings.max_batch_atoms)


def batched_model(state: dict[str, Any]) -> Any:
    """The torch-sim model of this process (built once per settings), and the sanity gates set to its cutoff."""
    settings = state["settings"]
    key = (getattr(settings, "model", "chgnet"), settings.device)
    if state.get("ts_model_key") != key:
        name = key[0]
        calc = state["calculator"]
        if hasattr(calc, "batched_model"):  # the calculator factory brings its own torch-sim model (SevenNet)
            model = calc.batched_model()
            source = f"the {name} model's cutoff"
        else:
            from oracles.batched.chgnet_adapter import CHGNetModel
            from oracles.relax import TimedCHGNetCalculator

            if type(calc).calculate is not TimedCHGNetCalculator.calculate:
                raise TypeError(f"the calculator factory's {type(calc).__name__} overrides ASE's calculate(), which the "
                                "batched engine never calls (it runs the torch model directly); set the oracle's "
                                "engine: ase to relax with this calculator")
            model = CHGNetModel(calc.model, device=settings.device)
            source = "the model's atom-graph cutoff (graph_converter.atom_graph_cutoff)"
        state["ts_model"], state["ts_model_key"] = model, key
        state["gates"] = Gates(cutoff_A=float(model.cutoff), cutoff_source=source)
    return state["ts_model"]


def engine_provenance(settings: Any) -> dict[str, Any]:
    if settings.optimizer == "BFGS":
        return {"engine": "batched", "engine_detail": f"torch-sim {torch_sim_version()} state and InFlightAutoBatcher, "
                                                      "ASE's BFGS with the unit-cell filter (oracles.batched.bfgs)"}
    flt = {"unit": "unit_cell_fire", "frechet": "frechet_cell_fire"}[settings.cell_filter] if settings.relax_cell \
        else "fire"
    return {"engine": "batched", "engine_detail": f"torch-sim {torch_sim_version()} {flt} (ASE flavour), "
                                                  "InFlightAutoBatcher, independent first steps (torch-sim#490)"}


def run_batched(tasks: list[Any], *, on_result: ResultCallback | None = None) -> list[OracleResult]:
    """One result per task, in order (tasks are :class:`oracles.chgnet._Task`); ``on_result(k, result)`` with
    ``k`` the task's position in ``tasks``."""
    position = {id(t): k for k, t in enumerate(tasks)}
    results: dict[int, OracleResult] = {}

    def one(task: Any, res: OracleResult) -> None:
        k = position[id(task)]
        results[k] = res
        if on_result is not None:
            on_result(k, res)

    relax_tasks(tasks, on_result=one)
    return [results[k] for k in range(len(tasks))]


def relax_tasks(tasks: Iterable[Any], *, on_result: Callable[[Any, OracleResult], None]) -> None:
    """Decode, gate and relax ``tasks`` (:class:`oracles.chgnet._Task`), calling ``on_result(task, result)``
    exactly once per task as each is ready.

    ``tasks`` may be lazy (a queue shared with other processes, see :mod:`oracles.batched.pool`): a task is
    read, decoded and gated only when the engine's batch has room for it."""
    from oracles import chgnet as host

    state = host._STATE
    settings = state["settings"]
    t0 = time.perf_counter()
    infos: dict[int, dict[str, Any]] = {}
    emitted: set[int] = set()
    pulled: list[Any] = []

    def emit(k: int, res: OracleResult) -> None:
        res.provenance.update(infos.get(k, {}))
        res.provenance.update(engine_provenance(settings))
        res.provenance.setdefault("model_version", model_version(state))
        emitted.add(k)
        on_result(pulled[k], res)

    try:
        model = batched_model(state)
    except Exception as exc:
        for t in tasks:
            pulled.append(t)
            emit(len(pulled) - 1, failed(t.id, "failed", f"model could not be loaded: {type(exc).__name__}: {exc}"))
        return
    ready: list[tuple[int, Structure]] = []

    def structures() -> Iterator[Structure]:
        """The tasks' structures that pass the input gate; the others get their result here."""
        for t in tasks:
            pulled.append(t)
            k = len(pulled) - 1
            try:
                structure, infos[k] = host._to_structure(t, settings)
            except DecodeError as exc:
                emit(k, failed(t.id, "invalid" if exc.impossible else "failed", f"decoding failed: {exc}",
                               wall_time_s=time.perf_counter() - t0))
                continue
            except Exception as exc:
                emit(k, failed(t.id, "failed", f"{type(exc).__name__}: {exc}"))
                continue
            infos[k]["sanity_gates"] = state["gates"].provenance()
            try:
                refused = host._gate(structure, "input")
            except Exception as exc:
                refused = f"the input structure could not be checked: {type(exc).__name__}: {exc}"
            if refused is not None:
                emit(k, failed(t.id, "invalid", refused, structure_cif=structure_to_cif(structure)))
            else:
                ready.append((k, structure))
                yield structure

    def done(j: int, outcome: Outcome, wall_s: float, model_s: float) -> None:
        k, structure = ready[j]
        res = _result(pulled[k].id, structure, outcome, state)
        res.wall_time_s = wall_s
        res.provenance["model_time_s"] = model_s
        emit(k, res)

    relax_batch(structures(), model=model, settings=engine_settings(settings), on_done=done)
    for k, t in enumerate(pulled):
        if k not in emitted:
            emit(k, failed(t.id, "failed", "no result returned by the batched engine"))


def _result(candidate_id: str, start: Structure, outcome: Outcome, state: dict[str, Any]) -> OracleResult:
    from oracles import chgnet as host

    if isinstance(outcome, RelaxFault):
        return failed(candidate_id, outcome.status, str(outcome), structure_cif=structure_to_cif(start),
                      n_steps=outcome.n_steps, energies=outcome.energies_per_atom)
    try:
        refused = host._gate(outcome.structure, "result")
        if refused is not None:
            return failed(candidate_id, "invalid", refused, structure_cif=structure_to_cif(outcome.structure),
                          energies=outcome.energies_per_atom, n_steps=outcome.n_steps)
        targets = host._targets(outcome.structure, outcome.energy_total, state["reference"])
        return OracleResult(candidate_id=candidate_id, status=outcome.status, message=outcome.message,
                            targets=targets, structure_cif=structure_to_cif(outcome.structure),
                            energies=outcome.energies_per_atom, n_steps=outcome.n_steps)
    except Exception as exc:
        return failed(candidate_id, "failed", f"{type(exc).__name__}: {exc}",
                      structure_cif=structure_to_cif(outcome.structure), n_steps=outcome.n_steps)


def model_version(state: dict[str, Any]) -> str:
    model = state.get("ts_model")
    return str(getattr(model, "model_version", None) or getattr(getattr(model, "model", None), "version", None)
               or "0.3.0 (weights shipped in the chgnet wheel)")
