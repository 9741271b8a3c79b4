"""ORM models of the campaign store and the plain records its repository returns."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from discovery.crystal import Crystal, parse_composition
from discovery.sun import SunLabels
from orchestration.errors import UserError

RoundState = Literal[
    "started", "proxy_fitted", "generator_trained", "sampled", "selected", "evaluating", "evaluated", "logged", "completed"
]
ROUND_STATES: tuple[RoundState, ...] = (
    "started", "proxy_fitted", "generator_trained", "sampled", "selected", "evaluating", "evaluated", "logged", "completed",
)
CampaignStatus = Literal["running", "completed", "stopped", "failed"]
ResultStatus = Literal["ok", "failed", "unconverged", "invalid", "timeout"]
ModelKind = Literal["proxy", "generator"]


class StoreError(UserError):
    """The store cannot be used (unreachable, wrong campaign, illegal state change); the message says why."""


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class CampaignRow(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    config_hash: Mapped[str] = mapped_column(String(64))
    config_json: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    code_version: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="running")
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class RoundRow(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("campaign_id", "index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(24), default="started")
    seed: Mapped[int] = mapped_column(Integer)
    code_version: Mapped[str] = mapped_column(String(128))
    proxy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    generator_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CandidateRow(Base):
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("campaign_id", "candidate_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[str] = mapped_column(String(128))
    round_index: Mapped[int] = mapped_column(Integer)
    space_group: Mapped[int] = mapped_column(Integer)
    composition: Mapped[str] = mapped_column(String(512))
    reduced_formula: Mapped[str] = mapped_column(String(256))
    a: Mapped[float] = mapped_column(Float)
    b: Mapped[float] = mapped_column(Float)
    c: Mapped[float] = mapped_column(Float)
    alpha: Mapped[float] = mapped_column(Float)
    beta: Mapped[float] = mapped_column(Float)
    gamma: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    prediction_json: Mapped[str] = mapped_column(Text, default="{}")
    selected: Mapped[bool] = mapped_column(Boolean, default=False)
    batch_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # Revision 0003: where the candidate came from ("generator" | "substitution") and, for a candidate proposed
    # as a structure, its origin: {"structure_cif", "parent", "substitutions", "partial", "prior"}.
    source: Mapped[str] = mapped_column(String(16), default="generator", server_default="generator")
    origin_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class OracleJobRow(Base):
    __tablename__ = "oracle_jobs"
    __table_args__ = (UniqueConstraint("campaign_id", "candidate_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[str] = mapped_column(String(128))
    round_index: Mapped[int] = mapped_column(Integer)
    oracle: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | running | done
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class OracleSubmissionRow(Base):
    """One job submitted to a scheduler for a candidate (queued oracles: DFT); one row per attempt."""

    __tablename__ = "oracle_submissions"
    __table_args__ = (UniqueConstraint("campaign_id", "candidate_id", "attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(128))
    scheduler: Mapped[str] = mapped_column(String(32))
    workdir: Mapped[str] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class OracleResultRow(Base):
    __tablename__ = "oracle_results"
    __table_args__ = (UniqueConstraint("campaign_id", "candidate_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[str] = mapped_column(String(128))
    round_index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    targets_json: Mapped[str] = mapped_column(Text, default="{}")
    relaxed_cif: Mapped[str | None] = mapped_column(Text, nullable=True)
    provenance_json: Mapped[str] = mapped_column(Text, default="{}")
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SunLabelRow(Base):
    """S.U.N. labels of one oracle result (:mod:`discovery.sun`); a separate table so that stores made
    before labels existed gain it with ``create_all``. Written once per result (insert-ignore)."""

    __tablename__ = "sun_labels"
    __table_args__ = (UniqueConstraint("campaign_id", "candidate_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[str] = mapped_column(String(128))
    round_index: Mapped[int] = mapped_column(Integer)
    converged: Mapped[bool] = mapped_column(Boolean)
    stable: Mapped[bool] = mapped_column(Boolean)
    novel_formula: Mapped[bool] = mapped_column(Boolean)
    novel_structure: Mapped[bool] = mapped_column(Boolean)
    unique: Mapped[bool] = mapped_column("is_unique", Boolean)
    sun: Mapped[bool] = mapped_column(Boolean)
    dimensionality: Mapped[int | None] = mapped_column(Integer, nullable=True)
    relaxed_space_group: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sampled_space_group: Mapped[int | None] = mapped_column(Integer, nullable=True)
    match: Mapped[str | None] = mapped_column("match_id", String(128), nullable=True)
    settings_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


CORE_TABLES = frozenset({"campaigns", "rounds", "candidates", "oracle_results"})
"""Tables every campaign store has had from the start: one missing means a damaged store. Schema changes are
Alembic revisions (:mod:`orchestration.store.migrations`)."""


class CampaignLockRow(Base):
    """Who is writing a campaign now (:mod:`orchestration.store.locks`): one row per campaign name while a run
    holds it, refreshed by a heartbeat; times are Unix seconds of the holder's clock. A separate table keyed by
    name (the lock is taken before the campaign row is created); added by migration 0002."""

    __tablename__ = "campaign_locks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    boot_id: Mapped[str] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    pid_start: Mapped[str] = mapped_column(String(32))
    command: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("campaign_id", "kind", "version"), UniqueConstraint("campaign_id", "kind", "round_index"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    round_index: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    mlflow_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


# -- records returned to callers ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    name: str
    config_hash: str
    config: dict[str, Any]
    seed: int
    code_version: str
    status: str
    mlflow_run_id: str | None


@dataclass(frozen=True, slots=True)
class RoundRecord:
    index: int
    state: str
    seed: int
    code_version: str
    proxy_version: int | None
    generator_version: int | None
    metrics: dict[str, float]
    mlflow_run_id: str | None

    @property
    def completed(self) -> bool:
        return self.state == "completed"


@dataclass(frozen=True, slots=True)
class ResultRecord:
    candidate_id: str
    round_index: int
    status: str
    targets: dict[str, float]
    relaxed_cif: str | None
    provenance: dict[str, Any]
    wall_s: float | None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    kind: str
    version: int
    round_index: int
    path: str
    mlflow_uri: str | None


def campaign_record(r: CampaignRow) -> CampaignRecord:
    return CampaignRecord(r.name, r.config_hash, json.loads(r.config_json), r.seed, r.code_version, r.status, r.mlflow_run_id)


def round_record(r: RoundRow) -> RoundRecord:
    return RoundRecord(r.index, r.state, r.seed, r.code_version, r.proxy_version, r.generator_version,
                       json.loads(r.metrics_json), r.mlflow_run_id)


def result_record(r: OracleResultRow) -> ResultRecord:
    return ResultRecord(r.candidate_id, r.round_index, r.status, json.loads(r.targets_json), r.relaxed_cif,
                        json.loads(r.provenance_json), r.wall_s)


def sun_record(r: SunLabelRow) -> SunLabels:
    return SunLabels(r.candidate_id, r.converged, r.stable, r.novel_formula, r.novel_structure, r.unique, r.sun,
                     r.dimensionality, r.relaxed_space_group, r.sampled_space_group, r.match)


SUN_COLUMNS: tuple[str, ...] = ("converged", "stable", "novel_formula", "novel_structure", "unique", "sun",
                                "dimensionality", "relaxed_space_group")
"""Label columns added to crystal tables (batch.csv, export); the sampled space group is ``space_group``."""


def sun_columns(labels: SunLabels | None) -> dict[str, object]:
    """The :data:`SUN_COLUMNS` of one result (all None when it has no labels yet)."""
    return {k: (None if labels is None else getattr(labels, k)) for k in SUN_COLUMNS}


def row_crystal(r: CandidateRow) -> Crystal:
    return Crystal(
        space_group=r.space_group, counts=parse_composition(r.composition), a=r.a, b=r.b, c=r.c,
        alpha=r.alpha, beta=r.beta, gamma=r.gamma, id=r.candidate_id,
        extra={"round": r.round_index, "score": r.score, "selected": r.selected, "batch_rank": r.batch_rank,
               "prediction": json.loads(r.prediction_json), "source": r.source or "generator",
               **(json.loads(r.origin_json) if r.origin_json else {})},
    )
