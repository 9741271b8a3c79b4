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
Tasks are submitted largest-first so that a batch finishes evenly; with the batched engine every worker
relaxes one batch fed from a queue shared by all workers (:mod:`oracles.batched.pool`), so that no worker
idles while another still has candidates waiting. ``device='cuda'`` loads the model
on the GPU (use ``workers=0`` or 1 there).

Modules: this one holds the oracle (pool, chunking, deadlines, provenance); its settings and what runs
inside each worker (per-process model state, one task, one chunk) are in :mod:`oracles.chgnet_worker` and
re-exported here.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ClassVar, Final

from pydantic import BaseModel

from oracles.base import Candidate, OracleResult, ProgressCallback, failed, library_versions
from oracles.batched.pool import SharedQueues, make_queues, shared_round, warm_batched
from oracles.batched.pool import init_worker as init_shared_worker
from oracles.chgnet_worker import _STATE as _STATE
from oracles.chgnet_worker import CalculatorFactory as CalculatorFactory
from oracles.chgnet_worker import CHGNetSettings as CHGNetSettings
from oracles.chgnet_worker import _chgnet_model_version as _chgnet_model_version
from oracles.chgnet_worker import _cost as _cost
from oracles.chgnet_worker import _gate as _gate
from oracles.chgnet_worker import _init_worker as _init_worker
from oracles.chgnet_worker import _limit_blas_threads as _limit_blas_threads
from oracles.chgnet_worker import _mp20_kw as _mp20_kw
from oracles.chgnet_worker import _run_chunk as _run_chunk
from oracles.chgnet_worker import _run_task as _run_task
from oracles.chgnet_worker import _setup_state as _setup_state
from oracles.chgnet_worker import _targets as _targets
from oracles.chgnet_worker import _Task as _Task
from oracles.chgnet_worker import _to_structure as _to_structure
from oracles.chgnet_worker import _worker_pid as _worker_pid
from oracles.reference import load_reference

ORACLE_VERSION = "1"
DIED: Final = "died"
HUNG: Final = "hung"
_Outcome = list[OracleResult] | str


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
        self._queues: SharedQueues | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> CHGNetOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut the worker pool down (a later ``evaluate`` starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._queues = None, None

    def warm_up(self) -> None:
        """Start the workers (or load the model in-process) now rather than on the first batch."""
        if self.settings.workers == 0:
            self._ensure_local()
            if self._shared():
                warm_batched(_STATE)
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

    def _shared(self) -> bool:
        """Whether the pool's workers take their tasks from a shared queue (batched engine, relax mode)."""
        return self.settings.mode == "relax" and self.settings.engine == "batched"

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context(self.settings.start_method)
            init: Callable[..., None] = _init_worker
            args: tuple[Any, ...] = (self.settings, self._factory)
            if self._shared():  # the queues reach each worker as it starts (see oracles.batched.pool)
                self._queues = make_queues(ctx)
                init, args = init_shared_worker, (*args, self._queues)
            self._pool = ProcessPoolExecutor(max_workers=self.settings.workers, mp_context=ctx,
                                             initializer=init, initargs=args)
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
        batched engine (in-process or from the pool's workers), else as each chunk of the pool returns."""
        tasks = [_Task(i, c.id, c.candidate_seed(seed), c.crystal, c.structure) for i, c in enumerate(candidates)]
        results: list[OracleResult | None] = [None] * len(tasks)
        try:
            prov = self.provenance()
        except Exception as exc:  # missing reference data: every result says so
            return [failed(t.id, "failed", f"oracle setup failed: {exc}") for t in tasks]
        order = sorted(tasks, key=_cost, reverse=True)
        size = self.settings.batch_size if self.settings.mode == "static" else 1
        chunks = [order[i:i + size] for i in range(0, len(order), size)]
        if self._shared():  # one batch in-process; with a pool, one batch per worker fed from a shared queue
            chunks = [order] if order else []
        done = 0

        def emit(index: int, res: OracleResult) -> None:
            if on_result is not None:
                res.provenance = {**prov, **res.provenance}
                on_result(index, res)

        if self.settings.workers == 0:
            results = self._evaluate_local(chunks, results, progress, emit)
        elif self._shared():
            self._evaluate_shared(order, results, progress, emit)
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

    def _evaluate_shared(self, order: list[_Task], results: list[OracleResult | None],
                         progress: ProgressCallback | None, emit: Callable[[int, OracleResult], None]) -> None:
        """Batched engine with a pool: each worker's batch is fed from one shared queue, each result reported
        as its structure leaves a batch (see :mod:`oracles.batched.pool`). A worker that dies breaks the
        pool: the tasks that were in a batch then are rerun one at a time (only the one that kills its worker
        is lost), those never taken go through the queue again. Hard deadline as in :meth:`_pool_map`."""
        by_index = {t.index: t for t in order}
        timeout_s = self.settings.timeout_s
        finished = 0

        def one(index: int, res: OracleResult) -> None:
            nonlocal finished
            results[index] = res
            emit(index, res)
            finished += 1
            if progress is not None:
                progress(finished, len(order))

        remaining = order
        while remaining:
            self.warm_up()  # worker start-up does not count against the deadline
            pool, queues = self._ensure_pool(), self._queues
            assert queues is not None
            per_worker = math.ceil(len(remaining) / self.settings.workers)
            deadline = time.monotonic() + 1.5 * timeout_s * per_worker + self.settings.hard_timeout_grace_s
            end = shared_round(pool, queues, remaining, workers=self.settings.workers, deadline=deadline,
                               on_result=one)
            missing = [by_index[i] for i in end.missing]
            if end.cause == "hung":
                self._kill_workers()
            elif end.cause == "died":
                self.close()
            if end.cause != "died" or not missing:
                for t in missing:
                    one(t.index, _final([t], HUNG, timeout_s)[0] if end.cause == "hung" else
                        failed(t.id, "failed", end.message or "no result returned by the worker"))
                return
            suspects = [t for t in missing if t.index in end.taken]
            for t in suspects or missing:
                for _, outcome in self._pool_map([[t]]):
                    one(t.index, _final([t], outcome, timeout_s)[0])
            remaining = [t for t in missing if t.index not in end.taken] if suspects else []

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
        pool, self._pool, self._queues = self._pool, None, None
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
