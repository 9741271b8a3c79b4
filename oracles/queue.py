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

import hashlib
import json
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from oracles.base import Candidate, Oracle, OracleResult, ProgressCallback

JobState = Literal["queued", "running", "finished"]
"""``finished`` means the job has left the queue, whatever its outcome; ``collect`` says how it ended."""

FailureKind = Literal["exit_code", "timeout", "out_of_memory", "scf_unconverged", "cancelled", "parse_error", "lost",
                      "input_error", "submit_error"]
"""How a job failed; recorded in ``OracleResult.provenance["failure"]`` by ``collect``. ``lost``: the job
left the scheduler without a trace (killed runner, machine restart); ``input_error``: the job folder
could not be written (a missing pseudopotential); ``submit_error``: the scheduler refused the job."""


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


JOB_NAME_PREFIX_CHARS = 40
"""How many characters of a candidate id the readable part of its job-folder name keeps."""


def job_name(candidate_id: str) -> str:
    """A file/folder name for a candidate: safe, bounded and collision-free.

    ``<readable prefix>-<sha256 of the full id, 16 hex digits>``: the prefix keeps up to
    :data:`JOB_NAME_PREFIX_CHARS` characters of the id (letters, digits, ``-_.``; anything else becomes
    ``_``; leading dots dropped, so the name is never ``.``, ``..`` or hidden) and the digest makes
    different ids different names (``a;b`` and ``a_b`` no longer share a folder). At most 57 characters.
    """
    prefix = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_." else "_"
                     for ch in candidate_id[:JOB_NAME_PREFIX_CHARS]).lstrip(".") or "candidate"
    digest = hashlib.sha256(candidate_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix}-{digest}"


def job_dir(root: Path, candidate_id: str, attempt: int) -> Path:
    """``root/<job_name(candidate id)>/attempt-<n>``: one directory per submission, always inside ``root``."""
    root = Path(root)
    path = root / job_name(candidate_id) / f"attempt-{int(attempt)}"
    if os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) != os.path.abspath(root):
        raise ValueError(f"job folder of candidate {candidate_id[:60]!r} would be outside {root}")
    return path


def duplicate_ids(ids: Sequence[str]) -> list[str]:
    """The ids that occur more than once, in first-occurrence order."""
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for i in ids:
        if i in seen:
            dups[i] = None
        seen.add(i)
    return list(dups)


def check_unique_ids(ids: Sequence[str], *, where: str = "the input") -> None:
    """Raise ``ValueError`` naming the duplicated ids (results are keyed by id, so a duplicate would be
    evaluated once and its result handed to both rows)."""
    dups = duplicate_ids(ids)
    if dups:
        shown = ", ".join(repr(d[:60]) for d in dups[:5]) + (f" and {len(dups) - 5} more" if len(dups) > 5 else "")
        raise ValueError(f"{where}: duplicate candidate id(s) {shown}; every candidate needs its own id")


class FileLedger:
    """A :class:`JobLedger` in JSON files under ``root`` (for the command line and ``evaluate``).

    ``root/submissions/<job_name(id)>.json`` (list of handles) and ``root/results/<job_name(id)>.json``
    (the final result); every write goes through a temporary file and a rename, so a killed process leaves either
    the old or the new file. One writer at a time per root.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "submissions").mkdir(parents=True, exist_ok=True)
        (self.root / "results").mkdir(parents=True, exist_ok=True)

    def _path(self, kind: str, candidate_id: str) -> Path:
        """The file of ``candidate_id``; a ledger written before job names (``<sanitised id>-<crc32>.json``)
        is still read, when its file holds this very id, so a rerun on an old workdir collects instead of
        resubmitting."""
        path = self.root / kind / f"{job_name(candidate_id)}.json"
        if path.exists():
            return path
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in candidate_id)[:80]
        legacy = self.root / kind / f"{safe}-{zlib.crc32(candidate_id.encode()):08x}.json"
        try:
            if legacy.is_file() and _legacy_holds(kind, legacy.read_text(), candidate_id):
                return legacy
        except (OSError, ValueError):
            pass
        return path

    def submissions(self, candidate_id: str) -> list[JobHandle]:
        path = self._path("submissions", candidate_id)
        if not path.exists():
            return []
        return [JobHandle(**doc) for doc in json.loads(path.read_text())]

    def record_submission(self, handle: JobHandle) -> None:
        subs = self.submissions(handle.candidate_id)
        if any((h.attempt, h.job_id) == (handle.attempt, handle.job_id) for h in subs):
            return
        subs = sorted([*subs, handle], key=lambda h: h.attempt)
        _write_atomic(self._path("submissions", handle.candidate_id), json.dumps([asdict(h) for h in subs], indent=1))

    def final_result(self, candidate_id: str) -> OracleResult | None:
        path = self._path("results", candidate_id)
        return OracleResult.from_json(path.read_text()) if path.exists() else None

    def record_final(self, result: OracleResult) -> None:
        path = self._path("results", result.candidate_id)
        if not path.exists():
            _write_atomic(path, result.to_json())


def _legacy_holds(kind: str, text: str, candidate_id: str) -> bool:
    doc = json.loads(text)
    if kind == "results":
        return isinstance(doc, dict) and doc.get("candidate_id") == candidate_id
    return isinstance(doc, list) and bool(doc) and all(isinstance(d, dict) and d.get("candidate_id") == candidate_id
                                                       for d in doc)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _latest_submission(oracle: QueuedOracle, candidate: Candidate, root: Path, ledger: JobLedger) -> JobHandle | None:
    """The newest submission: the ledger's, then any later attempt found in the job folders (a process
    killed between submitting and recording it), which is recorded now."""
    subs = ledger.submissions(candidate.id)
    handle = subs[-1] if subs else None
    next_attempt = handle.attempt + 1 if handle else 0
    while True:
        found = oracle.find(candidate, workdir=job_dir(root, candidate.id, next_attempt), attempt=next_attempt)
        if found is None:
            return handle
        ledger.record_submission(found)
        handle, next_attempt = found, found.attempt + 1


def drive(oracle: QueuedOracle, candidates: Sequence[Candidate], *, root: Path, ledger: JobLedger, seed: int,
          wait: bool = True, poll_interval_s: float = 10.0, progress: ProgressCallback | None = None,
          ) -> dict[str, OracleResult]:
    """Bring every candidate to a final result (or, with ``wait=False``, as far as one pass goes).

    For each candidate without a final result in ``ledger``: find its newest submission (ledger first,
    then ``oracle.find`` on the job folders ``root/<job_name(id)>/attempt-<n>``); submit attempt 0 if there is
    none. Then poll all live jobs in one call, collect the finished ones, resubmit a failure as attempt
    n+1 when ``oracle.should_retry`` says so (and ``n+1 < oracle.max_attempts``), and record finals.
    A job already queued or running is never submitted again. Returns ``{candidate id: final result}``
    for the candidates that have one; ``progress(done, total)`` is called as finals arrive (seconds for
    ``poll_interval_s``).
    """
    root = Path(root)
    check_unique_ids([c.id for c in candidates])
    by_id = {c.id: c for c in candidates}
    finals: dict[str, OracleResult] = {}
    live: dict[str, JobHandle] = {}
    total = len(by_id)

    def finish(result: OracleResult) -> None:
        ledger.record_final(result)
        finals[result.candidate_id] = result
        if progress is not None:
            progress(len(finals), total)

    for cand in by_id.values():
        done = ledger.final_result(cand.id)
        if done is not None:
            finals[cand.id] = done
            continue
        handle = _latest_submission(oracle, cand, root, ledger)
        if handle is None:
            handle = oracle.submit(cand, seed=seed, workdir=job_dir(root, cand.id, 0), attempt=0)
            ledger.record_submission(handle)
        live[cand.id] = handle
    if finals and progress is not None:
        progress(len(finals), total)
    while live:
        handles = list(live.values())
        for handle, state in zip(handles, oracle.poll(handles), strict=True):
            if state != "finished":
                continue
            result = oracle.collect(handle)
            result.provenance.setdefault("attempt", handle.attempt)
            if result.provenance.get("failure") and handle.attempt + 1 < oracle.max_attempts \
                    and oracle.should_retry(result, attempt=handle.attempt):
                nxt = handle.attempt + 1
                new = oracle.submit(by_id[handle.candidate_id], seed=seed, workdir=job_dir(root, handle.candidate_id, nxt),
                                    attempt=nxt, previous=result)
                ledger.record_submission(new)
                live[handle.candidate_id] = new
                continue
            del live[handle.candidate_id]
            finish(result)
        if not wait:
            break
        if live:
            time.sleep(poll_interval_s)
    return finals
