"""S.U.N. labels of oracle results in the campaign store (table ``sun_labels``, one row per result).

Labels are derived from the stored results (``orchestration.campaign.sun`` computes them after a round's
results are stored and before the round is logged), so a result without labels is simply labelled
again: writes are insert-ignore per (campaign, candidate), all of a round's labels in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from discovery.sun import SunLabels
from orchestration.store.models import OracleResultRow, StoreError, SunLabelRow, _now, sun_record

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from orchestration.store.models import CampaignRow


class LabelsMixin:
    """Methods of :class:`~orchestration.store.Store` for S.U.N. labels."""

    _session: sessionmaker[Session]

    def _campaign(self, s: Session, name: str) -> CampaignRow:  # pragma: no cover - provided by Store
        raise NotImplementedError

    def _insert_ignore(self, s: Session, model: Any, rows: list[dict[str, Any]]) -> int:  # pragma: no cover
        raise NotImplementedError

    def record_labels(self, name: str, labels: Sequence[SunLabels], *, settings: Mapping[str, Any] | None = None) -> int:
        """Store the labels of results (once per candidate; existing labels are kept). Returns how many were new.

        Raises :class:`StoreError` when a candidate has no oracle result."""
        if not labels:
            return 0
        with self._session.begin() as s:
            cid = self._campaign(s, name).id
            ids = [x.candidate_id for x in labels]
            q = select(OracleResultRow.candidate_id, OracleResultRow.round_index).where(
                OracleResultRow.campaign_id == cid, OracleResultRow.candidate_id.in_(ids))
            rounds = {str(c): int(r) for c, r in s.execute(q)}
            missing = [i for i in ids if i not in rounds]
            if missing:
                raise StoreError(f"campaign {name!r}: no oracle result for {missing[:5]}; labels follow results")
            text = json.dumps(dict(settings or {}), sort_keys=True, default=str)
            return self._insert_ignore(s, SunLabelRow, [
                {"campaign_id": cid, "candidate_id": x.candidate_id, "round_index": rounds[x.candidate_id],
                 "converged": x.converged, "stable": x.stable, "novel_formula": x.novel_formula,
                 "novel_structure": x.novel_structure, "unique": x.unique, "sun": x.sun,
                 "dimensionality": x.dimensionality, "relaxed_space_group": x.relaxed_space_group,
                 "sampled_space_group": x.sampled_space_group, "match": x.match, "settings_json": text,
                 "created_at": _now()}
                for x in labels
            ])

    def sun_labels(self, name: str, round_index: int | None = None) -> dict[str, SunLabels]:
        """Stored labels by candidate id (of one round, or all), in the order they were written."""
        with self._session() as s:
            cid = self._campaign(s, name).id
            q = select(SunLabelRow).where(SunLabelRow.campaign_id == cid)
            if round_index is not None:
                q = q.where(SunLabelRow.round_index == round_index)
            return {r.candidate_id: sun_record(r) for r in s.scalars(q.order_by(SunLabelRow.id))}

    def unlabelled(self, name: str) -> list[str]:
        """Ids of stored oracle results without labels yet."""
        with self._session() as s:
            cid = self._campaign(s, name).id
            done = select(SunLabelRow.candidate_id).where(SunLabelRow.campaign_id == cid)
            q = select(OracleResultRow.candidate_id).where(OracleResultRow.campaign_id == cid,
                                                           OracleResultRow.candidate_id.not_in(done))
            return list(s.scalars(q.order_by(OracleResultRow.id)))
