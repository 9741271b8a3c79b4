"""Oracle work as scheduler jobs (DFT on SLURM or a local queue) inside a campaign round.

For a queued oracle the round does not fan out one task per candidate (that would hold a worker for
hours per job). It runs :func:`oracles.queue.drive` against the campaign store instead: every
submitted job is recorded (candidate, attempt, scheduler job id, job directory) in the store's
``oracle_submissions`` table, and final results go to the same result table as any other oracle's.
Job directories live under ``<campaign dir>/oracle-jobs/<job_name(candidate id)>/attempt-<n>/`` (see
:func:`oracles.queue.job_name`: a readable prefix plus a digest of the full id).

Waiting holds nothing but the flow process, which polls every ``oracle.poll_interval_s``. With
``oracle.wait: false`` (or ``matloop run --no-wait``) the round submits, records and returns; the
campaign then reports its jobs in flight and ``matloop resume`` collects the finished ones later.
A process killed at any moment loses nothing: a resumed round polls the recorded jobs, finds a job
that was submitted but not yet recorded from its job directory, and submits only what has no job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestration.campaign import faults
from orchestration.campaign.context import Campaign
from orchestration.campaign.data import plain
from orchestration.campaign.progress import step

if TYPE_CHECKING:
    from oracles.base import OracleResult
    from oracles.queue import JobHandle, QueuedOracle


class StoreLedger:
    """:class:`oracles.queue.JobLedger` over the campaign store (one campaign, one round)."""

    def __init__(self, camp: Campaign, round_index: int) -> None:
        self.camp = camp
        self.round_index = round_index

    def submissions(self, candidate_id: str) -> list[JobHandle]:
        from oracles.queue import JobHandle

        return [JobHandle(candidate_id=r.candidate_id, attempt=r.attempt, job_id=r.job_id, scheduler=r.scheduler,
                          workdir=r.workdir)
                for r in self.camp.store.submissions(self.camp.name, candidate_id)]

    def record_submission(self, handle: JobHandle) -> None:
        faults.point("job_submitted")  # the scheduler has the job, the store does not know it yet
        self.camp.store.record_submission(self.camp.name, candidate_id=handle.candidate_id, attempt=handle.attempt,
                                          job_id=handle.job_id, scheduler=handle.scheduler, workdir=handle.workdir)
        faults.point("submitted")

    def final_result(self, candidate_id: str) -> OracleResult | None:
        from oracles.base import OracleResult

        for r in self.camp.store.results(self.camp.name, self.round_index):  # the round's, not every result
            if r.candidate_id == candidate_id:
                prov = dict(r.provenance)
                return OracleResult(candidate_id=r.candidate_id, status=r.status,  # type: ignore[arg-type]
                                    message=str(prov.get("message", "")), targets=r.targets,
                                    structure_cif=r.relaxed_cif, wall_time_s=r.wall_s or 0.0, provenance=prov)
        return None

    def record_final(self, result: OracleResult) -> None:
        provenance = {**result.provenance, "message": result.message, "n_steps": result.n_steps}
        self.camp.store.record_result(self.camp.name, result.candidate_id, status=result.status,
                                      targets=dict(result.targets), relaxed_cif=result.structure_cif,
                                      provenance=provenance, wall_s=result.wall_time_s)
        faults.point("result_recorded")


def queued_oracle(camp: Campaign) -> QueuedOracle | None:
    """The campaign's oracle if it runs as scheduler jobs, else None (built once per process)."""
    from oracles.queue import QueuedOracle
    from oracles.registry import get_oracle

    if "queued_oracle" not in camp._extras:
        oracle = get_oracle(camp.config.oracle.name, **camp.config.oracle_settings())
        camp._extras["queued_oracle"] = oracle if isinstance(oracle, QueuedOracle) else None
    return camp._extras["queued_oracle"]  # type: ignore[no-any-return]


def jobs_root(camp: Campaign) -> Path:
    """``<campaign dir>/oracle-jobs``: one folder per candidate (ids are unique across rounds), plus what the
    oracle shares between jobs (local slot locks, cached elemental references)."""
    return camp.root / "oracle-jobs"


def evaluate_queued(camp: Campaign, round_index: int, *, wait: bool) -> list[str]:
    """Submit, poll and collect the round's pending candidates; returns the ids still without a result
    (empty when ``wait``, unless every attempt of some job was lost)."""
    from oracles.base import Candidate
    from oracles.queue import drive

    oracle = queued_oracle(camp)
    if oracle is None:
        raise TypeError(f"oracle {camp.config.oracle.name!r} does not run as scheduler jobs")
    pending = camp.store.pending(camp.name, round_index)
    if not pending:
        return []
    candidates: Sequence[Candidate] = [Candidate.from_crystal(plain(c)) for c in camp.store.crystals(camp.name, pending)]
    total = len(camp.store.batch(camp.name, round_index))
    verb = "run" if wait else "submit"
    with step(f"round {round_index}: {verb} {len(candidates)} {camp.config.oracle.name} job(s)", total=total) as update:
        update(total - len(pending))
        drive(oracle, candidates, root=jobs_root(camp), ledger=StoreLedger(camp, round_index),
              seed=camp.seed_for(round_index), wait=wait, poll_interval_s=camp.config.oracle.poll_interval_s,
              progress=lambda done, _n: update(total - len(pending) + done))
    return camp.store.pending(camp.name, round_index)
