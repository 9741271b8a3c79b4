"""The campaign store repository: the source of truth for campaigns, rounds, candidates, oracle jobs and results.

SQLite file by default, PostgreSQL by URL. Every public method of :class:`Store` is one
transaction; writes of candidates, oracle jobs and results are idempotent, keyed by
(campaign, candidate id), so a step re-run after a crash neither duplicates rows nor overwrites
a stored oracle result. Rounds move through :data:`ROUND_STATES` one step at a time; setting the
current state again is a no-op, so a resumed flow can replay its last step. Methods return plain
frozen dataclasses, never ORM objects.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from discovery.crystal import Crystal
from discovery.sun import count as sun_count
from orchestration.store.labels import LabelsMixin
from orchestration.store.models import (
    CORE_TABLES,
    ROUND_STATES,
    CampaignRecord,
    CampaignRow,
    CampaignStatus,
    CandidateRow,
    ModelKind,
    ModelRecord,
    ModelVersionRow,
    OracleJobRow,
    OracleResultRow,
    ResultRecord,
    ResultStatus,
    RoundRecord,
    RoundRow,
    RoundState,
    StoreError,
    _now,
    campaign_record,
    result_record,
    round_record,
    row_crystal,
    sun_columns,
)
from orchestration.store.submissions import SubmissionsMixin
from orchestration.urls import mask_url, redact

if TYPE_CHECKING:
    from orchestration.config import CampaignConfig


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, else the installed package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"matloop=={version('matloop')}"
        except PackageNotFoundError:
            return "unknown"


def safe_url(url: str) -> str:
    """The URL with its secrets masked, for messages (:func:`orchestration.urls.mask_url`)."""
    return mask_url(url)


class Store(SubmissionsMixin, LabelsMixin):
    """Repository over one database; safe to share between campaigns (rows are keyed by campaign)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, create: bool = True, connect_timeout_s: int = 10) -> Store:
        """Connect (creating tables when ``create``); :class:`StoreError` naming the URL if it cannot."""
        shown = safe_url(url)
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError("the store URL is not a database URL (it does not parse); use e.g. sqlite:///runs/x/store.db or postgresql://user@host/db") from None
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                db = Path(parsed.database)
                if db.is_file() and db.stat().st_size == 0:  # never connect: SQLite would write a header
                    raise StoreError(f"the campaign store {db} is empty (0 bytes): it was emptied or truncated; "
                                     "restore it from a backup, or delete the file to start a new store")
                try:
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create the directory for the store {shown}: {exc.strerror}; choose a writable path") from None
            connect_args = {"timeout": 30}
        elif parsed.get_backend_name() == "postgresql":
            connect_args = {"connect_timeout": connect_timeout_s}
            if "+" not in parsed.drivername and not _has_module("psycopg"):
                parsed = parsed.set(drivername="postgresql+psycopg2")  # SQLAlchemy 2.1 defaults to psycopg 3
        try:
            engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise StoreError(f"cannot use store URL {shown}: {redact(str(exc), url)}; use a sqlite:/// or postgresql:// "
                             "URL") from None
        sqlite_file = engine.dialect.name == "sqlite"
        if sqlite_file:  # read-only pragmas until the database is known to be a campaign store
            event.listen(engine, "connect", _sqlite_pragmas_reading)
        try:
            with engine.connect().execution_options(**READ_ONLY) as conn:
                conn.exec_driver_sql("SELECT 1")
            todo = _check_schema(engine, shown, create=create)
            if sqlite_file and create:
                engine.dispose()
                event.remove(engine, "connect", _sqlite_pragmas_reading)
                event.listen(engine, "connect", _sqlite_pragmas)
                # Take the write lock when a transaction begins (waiting up to the busy timeout), so that
                # concurrent writers (parallel oracle tasks) queue instead of failing on a stale snapshot.
                event.listen(engine, "begin", _begin_immediate)
            if todo is not None:
                from orchestration.store import migrations

                migrations.upgrade(engine, new=todo)
        except StoreError:
            engine.dispose()
            raise
        except OperationalError as exc:
            engine.dispose()
            reason = redact(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc), url)
            if engine.dialect.name == "sqlite" and ("malformed" in reason or "not a database" in reason):
                raise StoreError(_damaged(shown, reason)) from None
            if engine.dialect.name == "sqlite" and "readonly" in reason:
                raise StoreError(f"the campaign store {shown} is read-only ({reason}); make the file and its folder "
                                 "writable for this user") from None
            raise StoreError(
                f"cannot reach the campaign store at {shown} ({reason}); check that the server is running and "
                "the URL, user and database are right (passwords come from the URL or PGPASSWORD)."
            ) from None
        except DatabaseError as exc:  # SQLite: "file is not a database", "database disk image is malformed"
            engine.dispose()
            reason = redact(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc), url)
            raise StoreError(_damaged(shown, reason)) from None
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- campaigns --------------------------------------------------------------------------------
    def create_campaign(self, name: str, *, config: Mapping[str, Any], config_hash: str, seed: int, code_version: str) -> CampaignRecord:
        """Create the campaign, or return it if it exists with the same config hash (resume)."""
        with self._session.begin() as s:
            row = s.scalar(select(CampaignRow).where(CampaignRow.name == name))
            if row is None:
                row = CampaignRow(name=name, config_hash=config_hash, config_json=json.dumps(dict(config), sort_keys=True),
                                  seed=seed, code_version=code_version, status="running")
                s.add(row)
                s.flush()
            elif row.config_hash != config_hash:
                raise StoreError(
                    f"campaign {name!r} already exists in this store with config hash {row.config_hash}, not {config_hash}; "
                    "the config changed: give the campaign a new name or restore the original config."
                )
            return campaign_record(row)

    def get_campaign(self, name: str) -> CampaignRecord:
        with self._session() as s:
            return campaign_record(self._campaign(s, name))

    def campaigns(self) -> list[str]:
        with self._session() as s:
            return list(s.scalars(select(CampaignRow.name).order_by(CampaignRow.id)))

    def set_campaign(self, name: str, *, status: CampaignStatus | None = None, mlflow_run_id: str | None = None) -> None:
        with self._session.begin() as s:
            row = self._campaign(s, name)
            if status is not None:
                row.status = status
            if mlflow_run_id is not None:
                row.mlflow_run_id = mlflow_run_id

    # -- rounds -----------------------------------------------------------------------------------
    def start_round(self, name: str, index: int, *, seed: int, code_version: str) -> RoundRecord:
        """Create round ``index`` in state ``started``, or return it unchanged if it exists."""
        with self._session.begin() as s:
            cid = self._campaign(s, name).id
            row = s.scalar(select(RoundRow).where(RoundRow.campaign_id == cid, RoundRow.index == index))
            if row is None:
                previous = s.scalar(select(func.max(RoundRow.index)).where(RoundRow.campaign_id == cid))
                if previous is not None:
                    prev_state = s.scalar(select(RoundRow.state).where(RoundRow.campaign_id == cid, RoundRow.index == previous))
                    if index != previous + 1 or prev_state != "completed":
                        raise StoreError(f"campaign {name!r}: cannot start round {index}; round {previous} is {prev_state}")
                elif index != 0:
                    raise StoreError(f"campaign {name!r}: the first round is 0, not {index}")
                row = RoundRow(campaign_id=cid, index=index, state="started", seed=seed, code_version=code_version)
                s.add(row)
                s.flush()
            return round_record(row)

    def advance_round(
        self,
        name: str,
        index: int,
        state: RoundState,
        *,
        proxy_version: int | None = None,
        generator_version: int | None = None,
        metrics: Mapping[str, float] | None = None,
        mlflow_run_id: str | None = None,
    ) -> RoundRecord:
        """Move the round to ``state`` (the next state, or the current one again) with its provenance."""
        if state not in ROUND_STATES:
            raise StoreError(f"unknown round state {state!r}; states are {', '.join(ROUND_STATES)}")
        with self._session.begin() as s:
            row = self._round(s, name, index)
            cur, new = ROUND_STATES.index(row.state), ROUND_STATES.index(state)  # type: ignore[arg-type]
            if new not in (cur, cur + 1):
                raise StoreError(f"campaign {name!r} round {index}: cannot go from {row.state!r} to {state!r}")
            row.state = state
            if proxy_version is not None:
                row.proxy_version = proxy_version
            if generator_version is not None:
                row.generator_version = generator_version
            if metrics:
                row.metrics_json = json.dumps({**json.loads(row.metrics_json), **{k: float(v) for k, v in metrics.items()}})
            if mlflow_run_id is not None:
                row.mlflow_run_id = mlflow_run_id
            if state == "completed" and row.completed_at is None:
                row.completed_at = _now()
            return round_record(row)

    def get_round(self, name: str, index: int) -> RoundRecord:
        with self._session() as s:
            return round_record(self._round(s, name, index))

    def rounds(self, name: str) -> list[RoundRecord]:
        with self._session() as s:
            cid = self._campaign(s, name).id
            return [round_record(r) for r in s.scalars(select(RoundRow).where(RoundRow.campaign_id == cid).order_by(RoundRow.index))]

    # -- candidates -------------------------------------------------------------------------------
    def add_candidates(
        self,
        name: str,
        round_index: int,
        crystals: Sequence[Crystal],
        *,
        scores: Sequence[float] | None = None,
        predictions: Sequence[Mapping[str, float]] | None = None,
        sources: Sequence[str] | None = None,
        origins: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Insert candidates keyed by ``crystal.id``; existing ids are left alone. Returns how many were new.

        ``sources``: per candidate ``"generator"`` (default) or ``"substitution"``; ``origins``: per candidate a
        JSON-able mapping merged into ``Crystal.extra`` on read (a structure candidate's ``structure_cif``, parent,
        substitutions), or None."""
        if any(not c.id for c in crystals):
            raise ValueError("every candidate needs a non-empty id (the idempotency key)")
        rows = [
            {
                "candidate_id": c.id, "round_index": round_index, "space_group": int(c.space_group),
                "composition": c.formula, "reduced_formula": c.reduced_formula(),
                "a": c.a, "b": c.b, "c": c.c, "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma,
                "score": None if scores is None else float(scores[i]),
                "prediction_json": json.dumps(dict(predictions[i]) if predictions is not None else {}),
                "selected": False, "created_at": _now(),
                "source": "generator" if sources is None else str(sources[i]),
                "origin_json": None if origins is None or origins[i] is None else json.dumps(dict(origins[i] or {})),
            }
            for i, c in enumerate(crystals)
        ]
        with self._session.begin() as s:
            cid = self._campaign(s, name).id
            return self._insert_ignore(s, CandidateRow, [{**r, "campaign_id": cid} for r in rows])

    def select_batch(self, name: str, round_index: int, candidate_ids: Sequence[str], *, oracle: str) -> None:
        """Mark the round's batch (rank = position) and create one pending oracle job per candidate."""
        with self._session.begin() as s:
            cid = self._campaign(s, name).id
            for rank, cand in enumerate(candidate_ids):
                res = s.execute(
                    update(CandidateRow)
                    .where(CandidateRow.campaign_id == cid, CandidateRow.candidate_id == cand)
                    .values(selected=True, batch_rank=rank)
                )
                if res.rowcount != 1:  # type: ignore[attr-defined]
                    raise StoreError(f"campaign {name!r}: candidate {cand!r} was never added; add_candidates first")
            self._insert_ignore(s, OracleJobRow, [
                {"campaign_id": cid, "candidate_id": c, "round_index": round_index, "oracle": oracle,
                 "status": "pending", "attempts": 0, "updated_at": _now()}
                for c in candidate_ids
            ])

    def batch(self, name: str, round_index: int) -> list[str]:
        """The round's selected candidate ids in rank order."""
        with self._session() as s:
            cid = self._campaign(s, name).id
            q = (select(CandidateRow.candidate_id)
                 .where(CandidateRow.campaign_id == cid, CandidateRow.round_index == round_index, CandidateRow.selected)
                 .order_by(CandidateRow.batch_rank))
            return list(s.scalars(q))

    def pending(self, name: str, round_index: int | None = None) -> list[str]:
        """Selected candidates still lacking an oracle result (to evaluate on resume), in round/rank order."""
        with self._session() as s:
            cid = self._campaign(s, name).id
            done = select(OracleResultRow.candidate_id).where(OracleResultRow.campaign_id == cid)
            q = select(CandidateRow.candidate_id).where(
                CandidateRow.campaign_id == cid, CandidateRow.selected, CandidateRow.candidate_id.not_in(done)
            )
            if round_index is not None:
                q = q.where(CandidateRow.round_index == round_index)
            return list(s.scalars(q.order_by(CandidateRow.round_index, CandidateRow.batch_rank)))

    def crystals(self, name: str, candidate_ids: Iterable[str] | None = None) -> list[Crystal]:
        """Stored candidates as crystals (``extra`` holds round, score, selected), in the order asked."""
        with self._session() as s:
            cid = self._campaign(s, name).id
            q = select(CandidateRow).where(CandidateRow.campaign_id == cid)
            ids = None if candidate_ids is None else list(candidate_ids)
            if ids is not None:
                q = q.where(CandidateRow.candidate_id.in_(ids))
            rows = {r.candidate_id: r for r in s.scalars(q.order_by(CandidateRow.id))}
        order = list(rows) if ids is None else ids
        missing = [i for i in order if i not in rows]
        if missing:
            raise StoreError(f"campaign {name!r}: unknown candidate id(s) {missing[:5]}")
        return [row_crystal(rows[i]) for i in order]

    def table(self, name: str, *, round_index: int | None = None, selected_only: bool = True) -> list[Crystal]:
        """Candidates with their oracle results flattened into ``extra`` (one column each), ready for
        ``discovery.crystal.write_crystal_table``: round, batch_rank, score, pred_<k>, status, <target>, wall_s and,
        for results, the S.U.N. label columns (:data:`~orchestration.store.models.SUN_COLUMNS`, None until labelled)."""
        with self._session() as s:
            cid = self._campaign(s, name).id
            q = select(CandidateRow, OracleResultRow).outerjoin(
                OracleResultRow,
                (OracleResultRow.campaign_id == CandidateRow.campaign_id) & (OracleResultRow.candidate_id == CandidateRow.candidate_id),
            ).where(CandidateRow.campaign_id == cid)
            if round_index is not None:
                q = q.where(CandidateRow.round_index == round_index)
            if selected_only:
                q = q.where(CandidateRow.selected)
            rows = s.execute(q.order_by(CandidateRow.round_index, CandidateRow.batch_rank, CandidateRow.id)).all()
        labels = self.sun_labels(name, round_index)
        out = []
        for cand, res in rows:
            base = row_crystal(cand)
            extra: dict[str, object] = {"round": cand.round_index, "batch_rank": cand.batch_rank, "score": cand.score,
                                        "source": cand.source or "generator"}
            if cand.origin_json:
                origin = json.loads(cand.origin_json)
                extra["parent"] = origin.get("parent")
                extra["substitutions"] = " ".join(f"{a}->{b}" for a, b in origin.get("substitutions", []))
            extra.update({f"pred_{k}": v for k, v in json.loads(cand.prediction_json).items()})
            extra["status"] = res.status if res is not None else "pending"
            if res is not None:
                extra.update(json.loads(res.targets_json))
                extra["wall_s"] = res.wall_s
                extra.update(sun_columns(labels.get(cand.candidate_id)))
            out.append(Crystal(base.space_group, base.counts, base.a, base.b, base.c, base.alpha, base.beta, base.gamma,
                               id=base.id, extra=extra))
        return out

    def known_keys(self, name: str) -> set[tuple[str, int]]:
        """(reduced formula, space group) of every candidate proposed so far in the campaign."""
        with self._session() as s:
            cid = self._campaign(s, name).id
            q = select(CandidateRow.reduced_formula, CandidateRow.space_group).where(CandidateRow.campaign_id == cid)
            return {(f, int(g)) for f, g in s.execute(q)}

    # -- oracle jobs and results ------------------------------------------------------------------
    def start_job(self, name: str, candidate_id: str) -> int:
        """Mark the job running and count the attempt; returns the attempt number."""
        with self._session.begin() as s:
            cid = self._campaign(s, name).id
            job = s.scalar(select(OracleJobRow).where(OracleJobRow.campaign_id == cid, OracleJobRow.candidate_id == candidate_id))
            if job is None:
                raise StoreError(f"campaign {name!r}: no oracle job for {candidate_id!r}; select it into a batch first")
            job.attempts += 1
            job.status = "running"
            return job.attempts

    def record_result(
        self,
        name: str,
        candidate_id: str,
        *,
        status: ResultStatus,
        targets: Mapping[str, float | None],
        relaxed_cif: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        wall_s: float | None = None,
    ) -> bool:
        """Store the oracle result once; a second call for the same candidate changes nothing. True if new."""
        with self._session.begin() as s:
            cid = self._campaign(s, name).id
            job = s.scalar(select(OracleJobRow).where(OracleJobRow.campaign_id == cid, OracleJobRow.candidate_id == candidate_id))
            if job is None:
                raise StoreError(f"campaign {name!r}: no oracle job for {candidate_id!r}; select it into a batch first")
            clean = {k: (None if v is None else float(v)) for k, v in targets.items()}
            new = self._insert_ignore(s, OracleResultRow, [{
                "campaign_id": cid, "candidate_id": candidate_id, "round_index": job.round_index, "status": status,
                "targets_json": json.dumps(clean), "relaxed_cif": relaxed_cif,
                "provenance_json": json.dumps(dict(provenance or {}), default=str), "wall_s": wall_s, "created_at": _now(),
            }])
            job.status = "done"
            return new == 1

    def results(self, name: str, round_index: int | None = None) -> list[ResultRecord]:
        with self._session() as s:
            cid = self._campaign(s, name).id
            q = select(OracleResultRow).where(OracleResultRow.campaign_id == cid)
            if round_index is not None:
                q = q.where(OracleResultRow.round_index == round_index)
            return [result_record(r) for r in s.scalars(q.order_by(OracleResultRow.id))]

    def job_attempts(self, name: str) -> dict[str, int]:
        with self._session() as s:
            cid = self._campaign(s, name).id
            q = select(OracleJobRow.candidate_id, OracleJobRow.attempts).where(OracleJobRow.campaign_id == cid)
            return {str(c): int(n) for c, n in s.execute(q)}

    # -- model versions ---------------------------------------------------------------------------
    def add_model(self, name: str, kind: ModelKind, *, round_index: int, path: str | Path, mlflow_uri: str | None = None) -> ModelRecord:
        """Record the model trained in ``round_index`` (idempotent per round); versions count 1, 2, ..."""
        with self._session.begin() as s:
            cid = self._campaign(s, name).id
            row = s.scalar(select(ModelVersionRow).where(
                ModelVersionRow.campaign_id == cid, ModelVersionRow.kind == kind, ModelVersionRow.round_index == round_index))
            if row is None:
                last = s.scalar(select(func.max(ModelVersionRow.version)).where(
                    ModelVersionRow.campaign_id == cid, ModelVersionRow.kind == kind)) or 0
                row = ModelVersionRow(campaign_id=cid, kind=kind, version=last + 1, round_index=round_index,
                                      path=str(path), mlflow_uri=mlflow_uri)
                s.add(row)
                s.flush()
            elif mlflow_uri is not None:
                row.mlflow_uri = mlflow_uri
            return ModelRecord(row.kind, row.version, row.round_index, row.path, row.mlflow_uri)

    def latest_model(self, name: str, kind: ModelKind) -> ModelRecord | None:
        with self._session() as s:
            cid = self._campaign(s, name).id
            row = s.scalar(select(ModelVersionRow).where(ModelVersionRow.campaign_id == cid, ModelVersionRow.kind == kind)
                           .order_by(ModelVersionRow.version.desc()).limit(1))
            return None if row is None else ModelRecord(row.kind, row.version, row.round_index, row.path, row.mlflow_uri)

    # -- summary ----------------------------------------------------------------------------------
    def summary(self, name: str) -> dict[str, Any]:
        """JSON-ready status of one campaign (for ``matloop status --json``)."""
        camp = self.get_campaign(name)
        rounds = self.rounds(name)
        results = self.results(name)
        per_round = {r.index: len(self.batch(name, r.index)) for r in rounds}
        labels = list(self.sun_labels(name).values())
        return {
            "name": camp.name, "status": camp.status, "config_hash": camp.config_hash, "seed": camp.seed,
            "code_version": camp.code_version, "mlflow_run_id": camp.mlflow_run_id,
            "rounds": [
                {"index": r.index, "state": r.state, "batch": per_round[r.index],
                 "results": sum(1 for x in results if x.round_index == r.index),
                 "proxy_version": r.proxy_version, "generator_version": r.generator_version,
                 "metrics": r.metrics, "mlflow_run_id": r.mlflow_run_id}
                for r in rounds
            ],
            "completed_rounds": sum(r.completed for r in rounds),
            "oracle_results": len(results),
            "sun": {**sun_count(labels).as_dict(), "unlabelled": len(results) - len(labels)},
            "pending": self.pending(name),
        }

    # -- internals --------------------------------------------------------------------------------
    def _campaign(self, s: Session, name: str) -> CampaignRow:
        row = s.scalar(select(CampaignRow).where(CampaignRow.name == name))
        if row is None:
            known = ", ".join(s.scalars(select(CampaignRow.name))) or "none"
            raise StoreError(f"no campaign named {name!r} in the store (known: {known}); check the name or the store URL")
        return row

    def _round(self, s: Session, name: str, index: int) -> RoundRow:
        cid = self._campaign(s, name).id
        row = s.scalar(select(RoundRow).where(RoundRow.campaign_id == cid, RoundRow.index == index))
        if row is None:
            raise StoreError(f"campaign {name!r} has no round {index}; start it first")
        return row

    def _insert_ignore(self, s: Session, model: Any, rows: list[dict[str, Any]]) -> int:
        """INSERT ... ON CONFLICT DO NOTHING on the unique keys; returns how many rows were new."""
        if not rows:
            return 0
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            stmt: Any = postgresql.insert(model).on_conflict_do_nothing()
        elif dialect == "sqlite":
            stmt = sqlite.insert(model).on_conflict_do_nothing()
        else:  # pragma: no cover
            raise StoreError(f"store backend {dialect!r} is not supported; use sqlite or postgresql")
        n = 0
        for i in range(0, len(rows), 1000):
            n += len(s.execute(stmt.returning(model.id), rows[i : i + 1000]).all())
        return n


SNAPSHOT_MARK = "# matloop campaign snapshot"
"""First line of ``<campaign dir>/campaign.yaml`` as ``matloop run`` writes it (after creating the campaign in
its store): a campaign dir with such a snapshot holds a started campaign."""


def _is_snapshot(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().startswith(SNAPSHOT_MARK)
    except OSError:
        return False


def open_campaign(config: CampaignConfig) -> tuple[Store, CampaignRecord]:
    """Open the config's store and create (or, resuming, find) its campaign with full provenance.

    Raises :class:`StoreError` if the store is unreachable, damaged or foreign, holds a campaign of the
    same name with a different config hash, or lacks a campaign that was started (its snapshot
    ``<campaign dir>/campaign.yaml``, starting with :data:`SNAPSHOT_MARK`, exists): an emptied or replaced
    store must not restart it at round 0.
    """
    from orchestration.config import stored_reading

    url = config.resolved_store_url()
    store = Store.open(url)
    try:
        snapshot = config.resolved_dir() / "campaign.yaml"
        if _is_snapshot(snapshot) and config.name not in store.campaigns():
            raise StoreError(
                f"campaign {config.name!r} was started (its snapshot {snapshot} exists) but the store {mask_url(url)} "
                f"has no campaign {config.name!r}: the store was emptied or replaced, or is not the one the campaign "
                f"used; restore it from a backup or point store_url at the right store (to start the campaign anew, "
                f"delete {snapshot} first)")
        stored = store.get_campaign(config.name).config_hash if config.name in store.campaigns() else None
        config, hashed = stored_reading(config, stored)  # a campaign stored before a default changed keeps it
        record = store.create_campaign(config.name, config=config.science(), config_hash=hashed,
                                       seed=config.seed, code_version=code_version())
    except BaseException:
        store.close()
        raise
    return store, record


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


READ_ONLY = {"matloop_read": True}
"""Execution options of a connection that only reads: on SQLite it takes no write lock (a reader in WAL
mode never waits for a writer, even one that is stopped mid-transaction)."""


def _begin_immediate(conn: Any) -> None:
    if not conn.get_execution_options().get("matloop_read"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _damaged(shown: str, reason: str) -> str:
    return (f"the campaign store {shown} is damaged ({reason}); it is not used, so nothing is repeated or lost: "
            "restore it from a backup (or delete it to start the campaign anew)")


def _check_schema(engine: Engine, shown: str, *, create: bool) -> bool | None:
    """Refuse a damaged, empty, foreign or too new database before it is used.

    SQLite: ``PRAGMA quick_check`` must say ok. Then: no tables → a new store (created when ``create``,
    else refused: reading an empty database would report nothing or restart silently); tables but no
    ``campaigns`` → a foreign database (refused, never written); a missing core table → damaged; a
    migration revision this code does not know → made by a newer matloop (refused). Reads only.

    Returns what a writer must do (:mod:`orchestration.store.migrations`): None (nothing), True (create a
    new store), False (migrate an existing one to the head revision)."""
    from orchestration.store import migrations

    with engine.connect().execution_options(**READ_ONLY) as conn:
        if engine.dialect.name == "sqlite":
            check = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
            if check != ["ok"]:
                raise StoreError(_damaged(shown, f"sqlite quick_check: {'; '.join(check[:3])}"))
        tables = set(inspect(conn).get_table_names())
        revision = migrations.current(conn) if "alembic_version" in tables else None
    if not tables:
        if not create:
            raise StoreError(f"the campaign store {shown} is empty (no tables): it was emptied or points at a new "
                             "database; restore it from a backup or pass the right store URL")
        return True
    if "campaigns" not in tables:
        shown_tables = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(f"{shown} is not a matloop campaign store (it holds other tables: {shown_tables}); "
                         "point store_url (or --store) at a campaign store or at a new database")
    if missing := sorted(CORE_TABLES - tables):
        raise StoreError(_damaged(shown, f"table(s) {', '.join(missing)} missing"))
    if revision is not None and not migrations.known(revision):
        raise StoreError(f"the campaign store {shown} was made by a newer matloop (schema revision {revision}, "
                         f"this one knows up to {migrations.head()}); upgrade matloop")
    if create and revision != migrations.head():
        return False
    return None


def _sqlite_pragmas_reading(dbapi_conn: Any, _record: Any) -> None:
    """Pragmas of a reader (``create=False``): no journal-mode change, which would write to the file."""
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" listener issue BEGIN IMMEDIATE
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
