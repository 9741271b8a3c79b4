"""A campaign whose CHGNet oracle decodes with the score decoder (issue 16): it completes, every result says
it was decoded by the score decoder, and re-running the finished campaign repeats no oracle call.

Real Prefect flow (the session's server), real store (SQLite), real CHGNet (small step cap) and the shipped
score-decoder checkpoint; the tiny campaign of test_flows, one round with a batch of two."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.store import Store
from tests.orchestration.test_flows import CONFIG as FLOWS_CONFIG

CONFIG: dict[str, Any] = {
    **{k: v for k, v in FLOWS_CONFIG.items() if k != "stopping"},
    "name": "scoredecoder", "seed": 3, "targets": [{"name": "formation_energy_per_atom", "goal": "minimize"}],
    # Fm-3m and Pm-3m: small cells on their fixed Wyckoff sites keep exactly that space group, so the score
    # decoder (exact space group) can decode them; e.g. Mg3O3 in P23 or NaCl in P2_13 cannot be (higher symmetry)
    "search_space": {**FLOWS_CONFIG["search_space"], "max_elements": 2, "max_atoms": 8, "space_groups": [225, 221],
                     "length_range": [3.0, 8.0]},
    "generator": {**FLOWS_CONFIG["generator"], "iterations_first_round": 2},
    "candidates_per_round": 12,
    "batch_size": 2,
    "oracle": {"name": "chgnet", "retries": 0,
               "settings": {"steps": 20, "workers": 0, "decoder": {"name": "score"}}},
    "rounds": 1,
    "success": {"metric": "e_above_hull", "at_most": 0.1},
}


def test_top_level_decoder_maps_onto_the_oracle_settings() -> None:
    from orchestration.config.loading import parse_config

    settings = {k: v for k, v in CONFIG["oracle"]["settings"].items() if k != "decoder"}
    top = parse_config({**CONFIG, "oracle": {**CONFIG["oracle"], "settings": settings}, "decoder": {"name": "score"}})
    nested = parse_config(CONFIG)
    assert top.oracle_settings() == nested.oracle_settings()


@pytest.mark.slow
def test_campaign_with_the_score_decoder_completes_and_resumes(tmp_path: Path, prefect_server_settings: str) -> None:
    from orchestration.flows import campaign_flow

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = tmp_path / "scoredecoder.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "campaign_dir": str(tmp_path / "run")}))
    done = campaign_flow(str(cfg))
    assert done["status"] == "completed" and done["completed_rounds"] == 1 and done["oracle_results"] == 2

    store = Store.open(f"sqlite:///{tmp_path / 'run' / 'store.db'}", create=False)
    try:
        results = store.results("scoredecoder")
        assert len(results) == 2
        for r in results:
            assert r.status in ("ok", "unconverged"), (r.status, r.provenance.get("message"))  # decoded, relaxed
            assert r.provenance["decoder"] == "score" and r.provenance["input"] == "crystal"
            assert r.provenance["settings"]["decoder"]["name"] == "score"
        attempts = store.job_attempts("scoredecoder")
        assert set(attempts.values()) == {1}
        again = campaign_flow(str(cfg))  # resume of a finished campaign: nothing left to evaluate
        assert again["status"] == "completed" and again["oracle_results"] == 2
        assert store.job_attempts("scoredecoder") == attempts
    finally:
        store.close()
