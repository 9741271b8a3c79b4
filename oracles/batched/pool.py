"""The batched engine in a pool of processes, fed from one shared queue (no static shards).

Every worker of :class:`oracles.chgnet.CHGNetOracle`'s pool (``engine="batched"``, ``workers ≥ 1``) runs one
:func:`run_shared` job per evaluation. Each job relaxes a batch as in one process, but its candidates come
from a task queue shared by all workers, read only when the job's batch has room (see
:func:`oracles.batched.engine.relax_batch`): both processes keep full batches until the queue is empty, so
neither idles while the other still has a backlog (with static shards one half could finish minutes
before the other). Each result goes back through an event queue as its structure leaves the batch, so the
parent streams results (``on_result``) as they finish, also with a pool.

The parent (:func:`shared_round`) puts ``(generation, task)`` items and one end marker per worker into the
task queue, submits one job per worker, and reads events: ``("took", generation, index, pid)`` when a
worker takes a task, ``("result", generation, index, result)`` when it is done. Items of an older
generation (left by a job that raised, or a worker that died) are skipped. The jobs' return values carry the
same results (the authority if an event is late); each result is reported once.

If a worker dies (segfault, out of memory) the pool breaks: :class:`RoundEnd` then says which tasks were
taken and not finished (in a batch when it happened: the suspects, rerun one at a time by the oracle) and
which were never taken (rerun with the queue).

The queues are created with the pool and handed to each worker when it starts (multiprocessing queues
cannot be passed to a job later): :func:`make_queues`, :func:`init_worker`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Literal

from oracles.base import OracleResult

_GENERATION = itertools.count(1)
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class SharedQueues:
    """The pool's task queue (parent → workers) and event queue (workers → parent)."""

    tasks: Any
    events: Any


def make_queues(ctx: Any) -> SharedQueues:
    """Two queues of the pool's multiprocessing context ``ctx``."""
    return SharedQueues(tasks=ctx.Queue(), events=ctx.Queue())


def init_worker(settings: Any, factory: Any, queues: SharedQueues) -> None:
    """Pool initializer: the CHGNet worker's own (model, reference, one thread), plus the shared queues."""
    from oracles.chgnet_worker import _STATE, _init_worker

    _init_worker(settings, factory)
    _STATE["shared_queues"] = queues
    warm_batched(_STATE)


def warm_batched(state: dict[str, Any]) -> None:
    """Import torch-sim and build this process's torch-sim model now (start-up), not in the first batch; a
    model that cannot be built is reported by each task's result instead."""
    from oracles.batched.run import batched_model

    with contextlib.suppress(Exception):  # relax_tasks reports it per task
        batched_model(state)


def run_shared(generation: int) -> list[tuple[int, OracleResult]]:
    """Worker job: relax tasks from the shared queue until this generation's end marker; ``(index, result)``
    of each task this worker took (each also sent as an event as soon as it is ready)."""
    from oracles.batched.run import relax_tasks
    from oracles.chgnet_worker import _STATE

    queues: SharedQueues = _STATE["shared_queues"]
    pid = os.getpid()
    out: list[tuple[int, OracleResult]] = []

    def pulled() -> Iterator[Any]:
        while True:
            gen, task = queues.tasks.get()
            if gen != generation:
                continue
            if task is None:
                return
            queues.events.put(("took", generation, task.index, pid))
            yield task

    def on_result(task: Any, res: OracleResult) -> None:
        out.append((task.index, res))
        queues.events.put(("result", generation, task.index, res))

    relax_tasks(pulled(), on_result=on_result)
    return out


@dataclass(slots=True)
class RoundEnd:
    """How a shared round ended: ``ok`` (every job returned), ``died`` (a worker died: the pool is broken),
    ``hung`` (the hard deadline passed) or ``error`` (a job raised: ``message``). ``taken``: the pid of the
    worker that took each task, by task index; ``missing``: indices without a result."""

    cause: Literal["ok", "died", "hung", "error"] = "ok"
    message: str = ""
    taken: dict[int, int] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)


def shared_round(pool: ProcessPoolExecutor, queues: SharedQueues, tasks: list[Any], *, workers: int,
                 deadline: float, on_result: Callable[[int, OracleResult], None]) -> RoundEnd:
    """Relax ``tasks`` (in this order) with ``workers`` jobs fed from the shared queue; ``on_result(index,
    result)`` once per task as results arrive; ``deadline`` is a ``time.monotonic()`` time."""
    generation = next(_GENERATION)
    for t in tasks:
        queues.tasks.put((generation, t))
    for _ in range(workers):
        queues.tasks.put((generation, None))
    futures: list[Future[list[tuple[int, OracleResult]]]] = [pool.submit(run_shared, generation)
                                                             for _ in range(workers)]
    end = RoundEnd()
    seen: set[int] = set()

    def report(index: int, res: OracleResult) -> None:
        if index not in seen:
            seen.add(index)
            on_result(index, res)

    def drain(timeout: float) -> None:
        """Read events until none came for ``timeout`` s (0: only those already there), at most ~1 s."""
        stop = time.monotonic() + 1.0
        while time.monotonic() < stop:
            try:
                kind, gen, index, payload = queues.events.get(timeout=timeout) if timeout else \
                    queues.events.get_nowait()
            except queue.Empty:
                return
            except (EOFError, OSError):  # the queue broke with a dead worker
                return
            if gen != generation:
                continue
            if kind == "took":
                end.taken[index] = payload
            else:
                report(index, payload)

    while not all(f.done() for f in futures):
        if time.monotonic() >= deadline:
            end.cause = "hung"
            break
        drain(_POLL_S)
    drain(0.5 if end.cause == "hung" else 0.0)
    for fut in futures:
        if not fut.done():
            continue
        try:
            for index, res in fut.result():
                report(index, res)
        except BrokenProcessPool:
            end.cause = "hung" if end.cause == "hung" else "died"
        except Exception as exc:  # e.g. a result that cannot be pickled, or a bug in the job
            if end.cause == "ok":
                end.cause, end.message = "error", f"{type(exc).__name__}: {exc}"
    if end.cause == "died":
        drain(0.5)  # results sent before the worker died
    end.missing = [t.index for t in tasks if t.index not in seen]
    return end
