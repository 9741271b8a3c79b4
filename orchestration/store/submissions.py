"""Scheduler jobs of queued oracles (DFT) in the campaign store: which job ran which attempt of which
candidate, so that a resumed campaign polls the jobs already in flight instead of submitting them again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from orchestration.store.models import OracleJobRow, OracleSubmissionRow, StoreError, _now

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from orchestration.store.models import CampaignRow


@dataclass(frozen=True, slots=True)
class SubmissionRecord:
    candidate_id: str
    attempt: int
    job_id: str
    scheduler: str
    workdir: str


class SubmissionsMixin:
    """Methods of :class:`~orchestration.store.Store` for submitted scheduler jobs."""

    _session: sessionmaker[Session]

    def _campaign(self, s: Session, name: str) -> CampaignRow:  # pragma: no cover - provided by Store
        raise NotImplementedError

    def _insert_ignore(self, s: Session, model: Any, rows: list[dict[str, Any]]) -> int:  # pragma: no cover
        raise NotImplementedError

    def record_submission(self, name: str, *, candidate_id: str, attempt: int, job_id: str, scheduler: str,
                          workdir: str) -> bool:
        """Remember that attempt ``attempt`` of the candidate runs as scheduler job ``job_id``; marks the oracle
        job running and counts the attempt. Idempotent per (candidate, attempt); True if new.

        Raises :class:`StoreError` if the candidate is not in a batch or the attempt was recorded with another job id.
        """
        with self._session.begin() as s:
            cid = self._campaign(s, name).id
            job = s.scalar(select(OracleJobRow).where(OracleJobRow.campaign_id == cid, OracleJobRow.candidate_id == candidate_id))
            if job is None:
                raise StoreError(f"campaign {name!r}: no oracle job for {candidate_id!r}; select it into a batch first")
            new = self._insert_ignore(s, OracleSubmissionRow, [{
                "campaign_id": cid, "candidate_id": candidate_id, "attempt": attempt, "job_id": str(job_id),
                "scheduler": scheduler, "workdir": str(workdir), "submitted_at": _now(),
            }])
            if not new:
                known = s.scalar(select(OracleSubmissionRow.job_id).where(
                    OracleSubmissionRow.campaign_id == cid, OracleSubmissionRow.candidate_id == candidate_id,
                    OracleSubmissionRow.attempt == attempt))
                if known != str(job_id):
                    raise StoreError(f"campaign {name!r}: attempt {attempt} of {candidate_id!r} is already job {known}, "
                                     f"not {job_id}; a second process is submitting the same campaign")
                return False
            if job.status != "done":
                job.status = "running"
            job.attempts += 1
            return True

    def submissions(self, name: str, candidate_id: str | None = None) -> list[SubmissionRecord]:
        """Submitted jobs (of one candidate, or all), ordered by candidate and attempt."""
        with self._session() as s:
            cid = self._campaign(s, name).id
            q = select(OracleSubmissionRow).where(OracleSubmissionRow.campaign_id == cid)
            if candidate_id is not None:
                q = q.where(OracleSubmissionRow.candidate_id == candidate_id)
            rows = s.scalars(q.order_by(OracleSubmissionRow.candidate_id, OracleSubmissionRow.attempt))
            return [SubmissionRecord(r.candidate_id, r.attempt, r.job_id, r.scheduler, r.workdir) for r in rows]
