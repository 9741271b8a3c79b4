"""Queued oracles: candidates become jobs on a scheduler (SLURM, a local process queue) that outlive
the process that submitted them.

A *queued* oracle (DFT) cannot evaluate a candidate inside one function call without holding a
worker for hours. It splits the work instead::

    handle = oracle.submit(candidate, seed=s, workdir=d, attempt=0)   # writes the job dir, submits
    states = oracle.poll([handle, ...])                               # queued | running | finished
    result = oracle.collect(handle)                                   # parse, classify failures

The job directory is the durable record of a job: ``submit`` writes everything the job needs into
it (structure, settings, job script, metadata) and, once the scheduler has accepted the job, the
job id; ``find`` reads that back, so a process killed between submitting and recording the job in
its ledger does not submit the job a second time.

:func:`drive` runs the loop (submit what has no job, poll, collect, resubmit retryable failures)
against a :class:`JobLedger`: a small file-based ledger for the command line, the campaign store for
campaigns. With ``wait=False`` it makes one pass and returns, so that a round can stop while jobs are
queued and pick them up later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from oracles.base import Candidate, Oracle, OracleResult

JobState = Literal["queued", "running", "finished"]
"""``finished`` means the job has left the queue, whatever its outcome; ``collect`` says how it ended."""

FailureKind = Literal["exit_code", "timeout", "out_of_memory", "scf_unconverged", "cancelled", "parse_error", "lost"]
"""How a job failed; recorded in ``OracleResult.provenance["failure"]`` by ``collect``."""


@dataclass(frozen=True, slots=True)
class JobHandle:
    """One submitted job: which candidate, which attempt, where its files are, the scheduler's id."""

    candidate_id: str
    attempt: int
    job_id: str
    scheduler: str
    workdir: str


@runtime_checkable
class QueuedOracle(Oracle, Protocol):
    """An oracle whose work runs as scheduler jobs; ``evaluate`` submits, waits and collects."""

    max_attempts: int
    """How many times a candidate may be submitted in all (1 = no retries)."""

    def submit(self, candidate: Candidate, *, seed: int, workdir: Path, attempt: int = 0,
               previous: OracleResult | None = None) -> JobHandle:
        """Write the job directory ``workdir`` and submit it; ``previous`` is the failed result of the
        last attempt (so the oracle can adjust settings: more SCF iterations, longer walltime, ...)."""
        ...

    def find(self, candidate: Candidate, *, workdir: Path, attempt: int = 0) -> JobHandle | None:
        """The job already submitted from ``workdir`` (read from its files), or None."""
        ...

    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]:
        """The state of each job, in order (one scheduler query for all of them)."""
        ...

    def collect(self, handle: JobHandle) -> OracleResult:
        """The result of a finished job; failures are results with ``provenance["failure"]`` set."""
        ...

    def should_retry(self, result: OracleResult, *, attempt: int) -> bool:
        """Whether a failed result of attempt ``attempt`` (0-based) is worth another submission."""
        ...


class JobLedger(Protocol):
    """Where :func:`drive` records submissions and final results (the campaign store, or files)."""

    def submissions(self, candidate_id: str) -> list[JobHandle]:
        """Every job submitted for the candidate, oldest first."""
        ...

    def record_submission(self, handle: JobHandle) -> None:
        """Remember a submitted job (idempotent for the same candidate, attempt and job id)."""
        ...

    def final_result(self, candidate_id: str) -> OracleResult | None:
        """The candidate's final result if it has one."""
        ...

    def record_final(self, result: OracleResult) -> None:
        """Store the candidate's final result (once)."""
        ...


def job_dir(root: Path, candidate_id: str, attempt: int) -> Path:
    """``root/<candidate id>/attempt-<n>``: one directory per submission."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in candidate_id)
    return Path(root) / safe / f"attempt-{attempt}"
