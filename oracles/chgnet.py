"""The CHGNet oracle (default): decode → relax with CHGNet → MP2020 formation energy → hull distance.

Candidates may be crystal-table rows (decoded to 3-D with pyxtal first, see :mod:`oracles.decode`)
or pymatgen structures (relaxed as given). Targets, all per atom:

* ``energy_per_atom`` (eV/atom): CHGNet energy of the relaxed structure;
* ``corrected_energy_per_atom`` (eV/atom): on the MP2020 scale (see ``mp2020_correction`` below);
* ``formation_energy_per_atom`` (eV/atom): against MP elemental references (MP2020 scale);
* ``e_above_hull`` (eV/atom, signed) against the reference hull (see :mod:`oracles.reference`);
* ``density`` (g/cm³) and ``volume_per_atom`` (Å³/atom) of the relaxed structure.

Sanity gates (:mod:`oracles.sanity`): the structure about to be relaxed (or evaluated, in static mode)
and the relaxed one must have every atom within the loaded model's atom-graph cutoff of a neighbour
and a volume per atom inside the physical bounds; otherwise the result is ``invalid`` with the reason
(no relaxation is spent on a refused input). Every result's provenance records the gates
(``sanity_gates``) and the hull reference it was judged against (``reference`` and the rest of
:meth:`oracles.reference.HullReference.provenance`).

MP2020 scale: CHGNet 0.3.0 was pretrained on MPtrj energies *with* ``MaterialsProject2020Compatibility``
corrections applied (CHGNet README), so its energies are already on the MP2020 scale and the default
``mp2020_correction="learned"`` adds nothing. Applying the correction a second time
(``mp2020_correction="apply"``, meant for models trained on raw GGA/GGA+U energies) double-counts the
anion and U corrections: on 30 MP-20 validation structures the formation-energy MAE against MP was
0.018 eV/atom with "learned" and 0.154 eV/atom with "apply".

Parallelism: ``workers=0`` evaluates in the calling process (torch limited to ``threads`` threads
while it runs); ``workers=N ≥ 1`` keeps a pool of N spawned processes, each with one torch thread and
its own model, alive across ``evaluate`` calls (call :meth:`CHGNetOracle.close` or use ``with``).
Tasks are submitted largest-first so that a batch finishes evenly. ``device='cuda'`` loads the model
on the GPU (use ``workers=0`` or 1 there).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymatgen.core import Structure

from discovery.crystal import Crystal
from oracles.base import Candidate, OracleResult, ProgressCallback, failed, library_versions, structure_to_cif
from oracles.decode import DecodeError, DecoderOptions, DecodeSettings, decode_crystal
from oracles.reference import DEFAULT_REFERENCE, ReferenceName, corrected_energy, load_reference
from oracles.relax import RelaxFault, RelaxSettings, load_chgnet_calculator, relax_structure, static_energies
from oracles.sanity import Gates, check_structure, gate_message, model_cutoff

ORACLE_VERSION = "1"
DIED: Final = "died"
HUNG: Final = "hung"
_Outcome = list[OracleResult] | str
CalculatorFactory = Callable[[str], Any]
"""``factory(device) -> ASE calculator`` with ``model_time_s``, ``reset()`` and (for static mode) ``model``.
Must be importable by name (a module-level function or class) when ``workers ≥ 1``."""


class CHGNetSettings(BaseModel):
    """Settings of the CHGNet oracle (all keyword arguments of ``get_oracle('chgnet', ...)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["relax", "static"] = "relax"
    engine: Literal["batched", "ase"] = Field(
        "ase", description="relax mode: 'batched' relaxes many structures as one batched graph on torch-sim "
                           "(oracles.batched); 'ase': one structure at a time through ASE")
    max_batch_atoms: int = Field(256, ge=1, description="batched engine on the CPU: atoms per batch "
                                                        "(on CUDA torch-sim sizes the batch by GPU memory)")
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
    decode_attempts: int = Field(8, ge=1)
    min_distance_ratio: float = Field(0.6, gt=0, description="decoding: min d_ij/(r_cov_i + r_cov_j)")
    rescale_volume: bool = True
    decoder: DecoderOptions = Field(DecoderOptions(),
                                    description="how crystal-table rows are decoded: {name: pyxtal|score, checkpoint, "
                                                "use_lattice_hint} (see oracles.decode)")
    start_method: Literal["spawn", "forkserver"] = "spawn"

    @model_validator(mode="after")
    def _engine_supports(self) -> CHGNetSettings:
        if self.engine == "batched" and self.optimizer != "FIRE":
            raise ValueError(f"optimizer: {self.optimizer} needs engine: ase (the batched engine runs torch-sim's "
                             "FIRE); set optimizer: FIRE or engine: ase")
        return self

    def relax_settings(self) -> RelaxSettings:
        return RelaxSettings(fmax=self.fmax, steps=self.steps, relax_cell=self.relax_cell, optimizer=self.optimizer,
                             cell_filter=self.cell_filter, max_volume_change=self.max_volume_change)

    def decode_settings(self) -> DecodeSettings:
        return self.decoder.settings(attempts=self.decode_attempts, min_distance_ratio=self.min_distance_ratio,
                                     rescale_volume=self.rescale_volume)


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
    _STATE["calculator"] = (factory or load_chgnet_calculator)(settings.device)
    _STATE["gates"] = _model_gates(_STATE["calculator"])
    _STATE["reference"] = load_reference(settings.reference, **_mp20_kw(settings))
    _STATE["settings"] = settings
    _warm_compatibility()


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


class CHGNetOracle:
    """Relaxes candidates with CHGNet and labels formation energy and hull distance (see module docs).

    Example::

        with CHGNetOracle(workers=2, fmax=0.1, steps=200) as oracle:
            results = oracle.evaluate([Candidate.from_crystal(c) for c in crystals], seed=0)
    """

    settings_model: ClassVar[type[BaseModel]] = CHGNetSettings
    name = "chgnet"

    def __init__(self, *, calculator_factory: CalculatorFactory | None = None, **settings: Any) -> None:
        self.settings: CHGNetSettings = self.settings_model(**settings)  # type: ignore[assignment]  # subclasses
        self._factory = calculator_factory
        self._pool: ProcessPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> CHGNetOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut the worker pool down (a later ``evaluate`` starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def warm_up(self) -> None:
        """Start the workers (or load the model in-process) now rather than on the first batch."""
        if self.settings.workers == 0:
            self._ensure_local()
        else:
            pool = self._ensure_pool()
            # Each worker answers only once its initializer (model + hull reference) is done; an idle worker
            # may take several of these, so ask until every worker has answered.
            seen: set[int] = set()
            while len(seen) < self.settings.workers:
                seen.update(pool.map(_worker_pid, [0.05] * self.settings.workers))

    def _ensure_local(self) -> None:
        owner = (id(self), self.settings, self._factory)
        if _STATE.get("owner") != owner:  # another oracle used this process last (the model stays cached)
            _setup_state(self.settings, self._factory)
            _STATE["owner"] = owner

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context(self.settings.start_method)
            self._pool = ProcessPoolExecutor(max_workers=self.settings.workers, mp_context=ctx,
                                             initializer=_init_worker, initargs=(self.settings, self._factory))
        return self._pool

    # -- evaluation -------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        ref = load_reference(self.settings.reference, **_mp20_kw(self.settings))
        energy_scheme = ("MP2020 learned by the model (CHGNet trained on MP2020-corrected MPtrj energies); "
                         "no further correction" if self.settings.mp2020_correction == "learned"
                         else "pymatgen MaterialsProject2020Compatibility applied to the model energy")
        return {"oracle": self.name, "oracle_version": ORACLE_VERSION, "model": "CHGNet",
                "engine": self.settings.engine if self.settings.mode == "relax" else "static",
                "model_version": _chgnet_model_version(), "settings": self.settings.model_dump(mode="json"),
                "energy_correction": energy_scheme, **ref.provenance(), "versions": library_versions()}

    def evaluate(self, candidates: Sequence[Candidate], *, seed: int = 0, progress: ProgressCallback | None = None,
                 on_result: Callable[[int, OracleResult], None] | None = None) -> list[OracleResult]:
        """One result per candidate, in order; see :mod:`oracles.base` for the contract.

        ``on_result(index, result)`` (optional) is called as each result is ready: per candidate with the
        batched engine in-process (``workers=0``), else as each chunk of the pool returns."""
        tasks = [_Task(i, c.id, c.candidate_seed(seed), c.crystal, c.structure) for i, c in enumerate(candidates)]
        results: list[OracleResult | None] = [None] * len(tasks)
        try:
            prov = self.provenance()
        except Exception as exc:  # missing reference data: every result says so
            return [failed(t.id, "failed", f"oracle setup failed: {exc}") for t in tasks]
        order = sorted(tasks, key=_cost, reverse=True)
        size = self.settings.batch_size if self.settings.mode == "static" else 1
        chunks = [order[i:i + size] for i in range(0, len(order), size)]
        if self.settings.mode == "relax" and self.settings.engine == "batched":  # one batch per process
            shards = max(self.settings.workers, 1)
            chunks = [c for c in (order[i::shards] for i in range(shards)) if c]
        done = 0

        def emit(index: int, res: OracleResult) -> None:
            if on_result is not None:
                res.provenance = {**prov, **res.provenance}
                on_result(index, res)

        if self.settings.workers == 0:
            results = self._evaluate_local(chunks, results, progress, emit)
        else:
            broken: list[list[_Task]] = []
            for chunk, outcome in self._pool_map(chunks):
                if isinstance(outcome, str):
                    broken.append(chunk)
                    continue
                for task, res in zip(chunk, outcome, strict=True):
                    results[task.index] = res
                    emit(task.index, res)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(tasks))
            # a worker died (segfault, out of memory): rerun the affected chunks one at a time in fresh
            # workers, so that only the candidate that kills its worker is lost
            for chunk in broken:
                for _, outcome in self._pool_map([chunk]):
                    for task, res in zip(chunk, _final(chunk, outcome, self.settings.timeout_s), strict=True):
                        results[task.index] = res
                        emit(task.index, res)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(tasks))
        out: list[OracleResult] = []
        for task, maybe in zip(tasks, results, strict=True):
            res = maybe or failed(task.id, "failed", "no result returned")
            res.provenance = {**prov, **res.provenance}
            out.append(res)
        return out

    def _pool_map(self, chunks: list[list[_Task]]) -> Iterator[tuple[list[_Task], _Outcome]]:
        """Run chunks in the pool, yielding ``(chunk, outcome)`` as they finish.

        The outcome is the chunk's results, or :data:`DIED` when its worker died, or :data:`HUNG` when the
        hard deadline passed (cooperative per-structure timeouts failed, e.g. one model call never
        returned); then the workers are killed. Hard deadline, counted from when the workers are ready:
        1.5 × ``timeout_s`` per candidate in the longest queue of one worker, plus ``hard_timeout_grace_s``.
        """
        self.warm_up()  # worker start-up does not count against the deadline
        pool = self._ensure_pool()
        futures: dict[Future[list[OracleResult]], list[_Task]] = {pool.submit(_run_chunk, c): c for c in chunks}
        per_worker = math.ceil(sum(len(c) for c in chunks) / self.settings.workers)
        deadline = time.monotonic() + 1.5 * self.settings.timeout_s * per_worker + self.settings.hard_timeout_grace_s
        pending = set(futures)
        restart = False
        while pending:
            finished, pending = wait(pending, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED)
            for fut in finished:
                try:
                    yield futures[fut], fut.result()
                except BrokenProcessPool:
                    restart = True
                    yield futures[fut], DIED
                except Exception as exc:  # e.g. a result that cannot be pickled
                    yield futures[fut], [failed(t.id, "failed", f"{type(exc).__name__}: {exc}") for t in futures[fut]]
            if pending and not finished and time.monotonic() >= deadline:
                self._kill_workers()
                for fut in pending:
                    yield futures[fut], HUNG
                return
        if restart:
            self.close()

    def _kill_workers(self) -> None:
        """Kill the worker processes (no public API in ProcessPoolExecutor; a new pool starts next time)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def _evaluate_local(self, chunks: list[list[_Task]], results: list[OracleResult | None],
                        progress: ProgressCallback | None,
                        emit: Callable[[int, OracleResult], None]) -> list[OracleResult | None]:
        import torch

        try:
            self._ensure_local()
        except Exception as exc:
            tasks = sorted((t for c in chunks for t in c), key=lambda t: t.index)
            return [failed(t.id, "failed", f"model could not be loaded: {exc}") for t in tasks]
        previous = torch.get_num_threads()
        torch.set_num_threads(self.settings.threads)
        limiter = _limit_blas_threads(self.settings.threads)
        try:
            total, done = sum(len(c) for c in chunks), 0
            for chunk in chunks:
                finished: list[int] = []

                def one(k: int, res: OracleResult, before: int = done, finished: list[int] = finished,
                        chunk: list[_Task] = chunk) -> None:
                    finished.append(k)  # batched engine: progress and results as each candidate finishes
                    emit(chunk[k].index, res)
                    if progress is not None:
                        progress(before + len(finished), total)

                for task, res in zip(chunk, _run_chunk(chunk, on_result=one), strict=True):
                    results[task.index] = res
                    if not finished:
                        emit(task.index, res)
                done += len(chunk)
                if progress is not None and not finished:
                    progress(done, total)
        finally:
            torch.set_num_threads(previous)
            if limiter is not None:
                limiter.restore_original_limits()
        return results


def _final(chunk: list[_Task], outcome: _Outcome, timeout_s: float) -> list[OracleResult]:
    if outcome == DIED:
        return [failed(t.id, "failed", "the worker process died while evaluating this candidate "
                                       "(crash or out of memory)") for t in chunk]
    if outcome == HUNG:
        return [failed(t.id, "timeout", f"killed: no result within the hard limit (1.5 × {timeout_s} s per "
                                        "candidate); a model call never returned") for t in chunk]
    assert not isinstance(outcome, str)
    return outcome


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
