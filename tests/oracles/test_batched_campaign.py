"""A campaign round with the batched engine (issue 17): one oracle call for the round's batch, each result stored
as it finishes, and a second call (a retried or resumed task) evaluating only what is still pending.

Real steps in-process (proxy, generator, sampling, selection, SQLite store) and real CHGNet (batched engine,
small step cap); no Prefect here (the flow only routes the batch to ``steps.evaluate_batch``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tests.orchestration.test_flows import CONFIG as FLOWS_CONFIG

# the shared tiny campaign of test_flows, on formation energy with CHGNet's batched engine: 2 elements, cubic
CONFIG: dict[str, Any] = {
    **{k: v for k, v in FLOWS_CONFIG.items() if k != "stopping"},
    "name": "batchcamp", "seed": 5, "targets": [{"name": "formation_energy_per_atom", "goal": "minimize"}],
    "search_space": {**FLOWS_CONFIG["search_space"], "max_elements": 2, "max_atoms": 6, "space_groups": ["cubic"],
                     "length_range": [3.0, 8.0]},
    "generator": {**FLOWS_CONFIG["generator"], "iterations_first_round": 3},
    "candidates_per_round": 20,
    "oracle": {"name": "chgnet", "retries": 0, "settings": {"engine": "batched", "steps": 25, "workers": 0}},
    "rounds": 1,
    "success": {"metric": "e_above_hull", "at_most": 0.1},
}


def test_batched_round_records_each_result_once(tmp_path: Path, mp20_dir: Path) -> None:
    from orchestration.campaign import steps
    from orchestration.campaign.context import campaign_for, release
    from orchestration.store import code_version

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = {**CONFIG, "campaign_dir": str(tmp_path / "runs" / "batchcamp")}
    cfg["oracle"]["settings"]["mp20_dir"] = str(mp20_dir)
    path = tmp_path / "batchcamp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    camp = campaign_for(path)
    try:
        assert steps.batched_oracle(camp)
        camp.store.start_round(camp.name, 0, seed=camp.seed_for(0), code_version=code_version())
        steps.fit_proxies(camp, 0)
        steps.train_generator(camp, 0)
        steps.sample_candidates(camp, 0)
        batch = steps.select(camp, 0)
        assert len(batch) == 4
        camp.store.advance_round(camp.name, 0, "evaluating")
        first = steps.evaluate_batch(camp, 0, batch[:1])  # as if a killed task had stored one result
        assert len(first) == 1 and camp.store.pending(camp.name, 0) == batch[1:]
        rest = steps.evaluate_batch(camp, 0, batch)  # the resumed task: only the pending three
        assert len(rest) == 3 and camp.store.pending(camp.name, 0) == []
        assert steps.evaluate_batch(camp, 0, batch) == []  # nothing repeated
        results = {r.candidate_id: r for r in camp.store.results(camp.name)}
        assert set(results) == set(batch)
        assert all(r.provenance["oracle_task"] == "batch" and r.provenance["engine"] == "batched"
                   for r in results.values())
        assert set(camp.store.job_attempts(camp.name).values()) == {1}
    finally:
        release(path)


def test_chgnet_reports_each_result_as_it_finishes(mp20_dir: Path) -> None:
    from oracles.base import Candidate
    from oracles.chgnet import CHGNetOracle
    from oracles.testing import small_structures

    cands = [Candidate.from_structure(s, id=k) for k, s in small_structures().items()]
    seen: list[tuple[int, str, str]] = []
    oracle = CHGNetOracle(engine="batched", steps=30, mp20_dir=str(mp20_dir))
    results = oracle.evaluate(cands, on_result=lambda i, r: seen.append((i, r.candidate_id, r.provenance["oracle"])))
    assert sorted(i for i, _, _ in seen) == list(range(len(cands)))
    assert all(cands[i].id == cid and name == "chgnet" for i, cid, name in seen)
    assert [r.candidate_id for r in results] == [c.id for c in cands]
