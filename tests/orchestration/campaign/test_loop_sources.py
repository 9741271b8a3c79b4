"""A campaign with the learning loop switched on (issue 15), end to end with the real CHGNet oracle: two
candidate sources (Crystal-GFN rows and substitution structures) split by quota, novelty penalties, tried
formulas skipped, the residual proxy fitted on the campaign's own labels, fresh generator retraining with
offline replay; re-running the finished campaign repeats no oracle call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from orchestration.store import Store

CONFIG: dict = {
    "name": "looptest",
    "seed": 3,
    "targets": [{"name": "formation_energy_per_atom", "goal": "minimize"}],
    # ternaries: every binary substitution in these 7 elements is a known formula, which the substitution source
    # no longer proposes under the novelty penalty (6 novel ones here: MgClF, LiMgF3, NaMgCl3, ...)
    "search_space": {"elements": ["Li", "Na", "K", "Mg", "O", "F", "Cl"], "max_elements": 3,
                     "max_atoms_per_element": 4, "max_atoms": 8, "length_range": [2.0, 10.0]},
    "seed_data": {"dataset": "mp20", "max_rows": 150},
    "proxy": {"members": 2, "hidden": 32, "layers": 2, "epochs": 4, "residual": True, "oracle_weight": 10,
              "residual_family_std": 0.1},
    "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 0.2, "relative_to_hull": "mp20+matbench"},
    "novelty": {"enabled": True, "known_penalty": 1.0, "tried_penalty": 1.0},
    "sources": {"substitution": {"share": 0.5, "candidates": 40, "near_hull_at_most": 0.05, "family_weight": 3.0}},
    "generator": {"iterations_first_round": 4, "iterations_per_round": 2, "retrain": "fresh", "offline_replay": True,
                  "hyper": {"hidden": 32, "layers": 2, "batch_size": 16}},
    "candidates_per_round": 40,
    "batch_size": 4,
    "selection": {"method": "mmr", "diversity": 0.5, "across_rounds": True, "skip_tried_formulas": True},
    "oracle": {"name": "chgnet", "settings": {"steps": 40, "fmax": 0.3, "reference": "mp20+matbench"},
               "retries": 0, "timeout_s": 120},
    "rounds": 2,
    "tracking": {"enabled": False},
}


@pytest.mark.slow
def test_loop_campaign_with_two_sources(tmp_path: Path, prefect_server_settings: str) -> None:
    from orchestration.flows import campaign_flow

    cfg = tmp_path / "loop.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "campaign_dir": str(tmp_path / "run")}))
    out = campaign_flow(str(cfg))
    assert out["completed_rounds"] == 2 and out["oracle_results"] == 8
    with Store.open(f"sqlite:///{tmp_path / 'run' / 'store.db'}", create=False) as store:
        rounds = store.rounds("looptest")
        batches = [store.crystals("looptest", store.batch("looptest", r)) for r in range(2)]
        results = {r.candidate_id: r for r in store.results("looptest")}
        table = {c.id: c.extra for c in store.table("looptest")}
    # round 0: the configured share; both sources present, each candidate knows its source
    assert sorted(str(c.extra["source"]) for c in batches[0]) == ["generator"] * 2 + ["substitution"] * 2
    assert rounds[0].metrics["quota_substitution"] == 2 and rounds[1].metrics["quota_substitution"] >= 1
    for c in (c for b in batches for c in b if c.extra["source"] == "substitution"):
        assert isinstance(c.extra["structure_cif"], str) and c.extra["substitutions"] and c.extra["parent"]
        assert results[c.id].provenance.get("input") == "structure"  # proposed as a structure: no decoding
        assert table[c.id]["source"] == "substitution" and "->" in str(table[c.id]["substitutions"])
    for c in (c for b in batches for c in b if c.extra["source"] == "generator"):
        assert results[c.id].provenance.get("input") == "crystal"
    # the acquisition carries the novelty penalty; round 1 never retries a formula of round 0
    assert all("novelty_penalty" in c.extra["prediction"] for b in batches for c in b)  # type: ignore[operator]
    assert not {c.reduced_formula() for c in batches[0]} & {c.reduced_formula() for c in batches[1]}
    # the residual model saw round 0's labels; the round-1 generator was trained afresh with offline replay
    assert rounds[1].metrics["proxy_residual_labels_formation_energy_per_atom"] >= 1
    # ... with a family per label: a substitution result's is its parent's seed structure, any other result's its
    # own id; round 1's substitution candidates were scored with theirs
    residual = json.loads((tmp_path / "run" / "models" / "proxy" / "round-001" / "formation_energy_per_atom"
                           / "residual.json").read_text())
    labelled = sorted(cid for cid, r in results.items() if r.round_index == 0 and r.status == "ok")
    expected_groups = [str(table[cid]["parent"]) if table[cid]["source"] == "substitution" else cid for cid in labelled]
    assert residual["labels"]["groups"] == expected_groups and residual["config"]["family_prior_std"] == 0.1
    assert rounds[1].metrics["proxy_residual_family_std_formation_energy_per_atom"] > 0
    report = json.loads((tmp_path / "run" / "models" / "generator" / "round-001" / "train_report.json").read_text())
    assert report.get("offline_used", 0) >= 1
    # substitutions never propose a known formula; one proposed but not picked in round 0 is proposed again in
    # round 1 (re-ranked by the round's rates and proxy) instead of being dropped as an earlier candidate
    from orchestration.bench_discovery.rounds import candidates_frame, replay, round0_view
    from orchestration.campaign.sun import reference_formulas

    frame = candidates_frame(tmp_path / "run")
    subs = frame[frame.source == "substitution"]
    assert len(subs) and not set(subs.reduced_formula) & reference_formulas()
    keys = {r: set(zip(g.reduced_formula, g.space_group, strict=True)) for r, g in subs.groupby("round_index")}
    unpicked0 = set(zip(subs.reduced_formula[(subs.round_index == 0) & ~subs.selected],
                        subs.space_group[(subs.round_index == 0) & ~subs.selected], strict=True))
    assert keys[1] & unpicked0
    # the replay of each round's selection (per-source scales, earlier batches as context) is the stored batch
    rep = replay(tmp_path / "run", frame)
    assert rep[rep.variant == "per-source scale, context"].same_as_stored.tolist() == [4, 4]
    # family rates: every substitution knows its seed structure; round 0 has no outcome (no bonus), round 1's
    # bonus is family_weight × (family rate − 1/3) from round 0's substitution results, and is in the score
    from discovery.loop import family_bonus
    from discovery.substitution import SubstitutionRates

    assert subs.family.notna().all() and (subs.family_bonus[subs.round_index == 0] == 0).all()
    done = subs[(subs.round_index == 0) & subs.status.notna()]
    rates = SubstitutionRates.from_outcomes(
        (pairs, bool(sun == 1), fam) for pairs, sun, fam in zip(done.pairs, done.sun, done.family, strict=True))
    later = subs[subs.round_index == 1]
    expected = family_bonus(later.family.tolist(), rates, weight=3.0)
    assert later.family_bonus.tolist() == pytest.approx(expected.tolist()) and expected.any()
    from orchestration.bench_discovery.rounds import family_replay

    fam = family_replay(tmp_path / "run", [3.0, 0.0], frame).set_index("family_weight")
    assert fam.loc[3.0, "same_as_stored"] == 4  # the campaign's own weight reproduces its batch
    from orchestration.bench_discovery.rounds import residual_replay

    res = residual_replay(tmp_path / "run", [0.1, 0.0], frame)  # round 1's own residual proxy is refitted exactly
    assert res["round"].tolist() == [1] and res["mae_family_std_0.1"].tolist() == pytest.approx(res.stored_mae.tolist(), abs=1e-3)
    view = round0_view(tmp_path / "run", frame)  # every substitution pick, as round 0 would have ranked it
    assert len(view) == int((subs.selected).sum()) and (view.rank_in_round0_pool >= 1).all()
    assert view[view["round"] == 0].prior_rank_round0.notna().all()  # round 0's picks are round 0's proposals
    again = campaign_flow(str(cfg))
    assert again["oracle_results"] == 8  # nothing repeated
