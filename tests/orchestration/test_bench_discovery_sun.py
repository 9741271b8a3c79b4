"""Discovery benchmark, ``--objective sun``: the loop's config, S.U.N. statistics on known inputs, the report,
and the substitution baseline with the real CHGNet oracle."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from discovery.crystal import Crystal
from orchestration.bench_discovery import (
    DEFAULT_BUDGET,
    DEFAULT_RATTLE,
    SUN_STRATEGIES,
    BenchSettings,
    Evaluated,
    _load_cache,
    _save_cache,
    campaign_config,
    compare_sun,
    counts_by,
    later_vs_first_round,
    markdown,
    plot,
    pooled_proxy_error,
    proxy_error_by_round,
    summarize,
    sun_loop_features,
    sun_metrics,
)
from orchestration.bench_discovery.strategies import loop_evaluated

ROOT = Path(__file__).resolve().parents[2]


def _e(formula: dict[str, int], *, round_index: int = 0, source: str = "generator", status: str = "ok",
       predicted: float = float("nan"), formation: float = -1.0) -> Evaluated:
    c = Crystal(225, formula, 5.0, 5.0, 5.0, 90, 90, 90, id=f"c-{len(formula)}")
    return Evaluated(c, status, 0.0, formation, None, round=round_index, source=source, predicted=predicted)


def test_sun_loop_config_turns_on_the_learning_features(tmp_path: Path) -> None:
    settings = BenchSettings(objective="sun", budget=30)
    cfg = campaign_config(settings, 1, tmp_path)
    assert cfg["acquisition"] == {"kind": "ucb", "kappa": 1.0, "temperature": 0.125, "relative_to_hull": "mp20+matbench"}
    assert cfg["novelty"] == {"enabled": True, "known_penalty": 1.0, "tried_penalty": 1.0}
    assert cfg["sources"] == {"substitution": {"share": 0.5, "adaptive": True, "min_share": 0.1, "candidates": 300,
                                               "near_hull_at_most": 0.05, "partial": True,
                                               "split_rule": "proportional", "family_weight": 0.0}}
    assert cfg["proxy"]["residual"] is True and cfg["proxy"]["oracle_weight"] == 10.0
    assert cfg["proxy"]["members"] == 5 and cfg["proxy"]["epochs"] == 60  # the other proxy keys kept
    assert cfg["generator"]["retrain"] == "fresh" and cfg["generator"]["offline_replay"] is True
    assert cfg["generator"]["iterations_first_round"] == 150  # merged into, not replacing, the section
    assert cfg["selection"] == {"method": "mmr", "diversity": 0.5, "across_rounds": True, "skip_tried_formulas": True}
    assert cfg["batch_size"] == 10 and cfg["stopping"] == {"max_oracle_calls": 30}
    # one place to tune: the config's sections are exactly sun_loop_features' values on top of the base
    for section, values in sun_loop_features(settings).items():
        assert {k: cfg[section][k] for k in values} == values
    assert campaign_config(BenchSettings(objective="sun", oracle_weight=3), 0, tmp_path)["proxy"]["oracle_weight"] == 3
    tuned = campaign_config(BenchSettings(objective="sun", split_rule="thompson", max_sd=0.5), 0, tmp_path)
    assert tuned["acquisition"]["max_sd"] == 0.5 and tuned["sources"]["substitution"]["split_rule"] == "thompson"
    family = campaign_config(BenchSettings(objective="sun", family_weight=3.0), 0, tmp_path)
    assert family["sources"]["substitution"]["family_weight"] == 3.0
    with pytest.raises(ValueError, match="family_weight"):
        BenchSettings(objective="sun", family_weight=-1.0)
    assert "residual_family_std" not in cfg["proxy"]  # off unless asked for
    family_std = campaign_config(BenchSettings(objective="sun", family_std=0.1), 0, tmp_path)
    assert family_std["proxy"]["residual_family_std"] == 0.1 and family_std["proxy"]["residual"] is True
    with pytest.raises(ValueError, match="family_std"):
        BenchSettings(objective="sun", family_std=-0.1)
    with pytest.raises(ValueError, match="split rule"):
        BenchSettings(objective="sun", split_rule="greedy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_sd"):
        BenchSettings(objective="sun", max_sd=0.0)
    plain = campaign_config(BenchSettings(), 0, tmp_path)
    assert "novelty" not in plain and "sources" not in plain and "residual" not in plain["proxy"]


def test_sun_loop_config_validates_against_the_campaign_schema(tmp_path: Path) -> None:
    from orchestration.config import CampaignConfig

    cfg = CampaignConfig.model_validate(campaign_config(BenchSettings(objective="sun", budget=30), 0, tmp_path))
    assert cfg.acquisition.relative_to_hull == "mp20+matbench" and cfg.proxy.oracle_weight == 10.0


def test_sun_settings_defaults() -> None:
    s = BenchSettings(objective="sun", budget=DEFAULT_BUDGET["sun"])
    assert s.strategies == SUN_STRATEGIES and "substitution_once" in s.strategies and s.budget == 60
    assert DEFAULT_RATTLE == {"hull": 0.0, "formation_energy": 0.0, "sun": 0.05}
    rattled = campaign_config(BenchSettings(objective="sun", decode_rattle=0.05), 0, Path("."))
    assert rattled["oracle"]["settings"]["decode_rattle"] == 0.05
    assert "decode_rattle" not in campaign_config(BenchSettings(), 0, Path("."))["oracle"]["settings"]
    with pytest.raises(ValueError, match="decode_rattle"):
        BenchSettings(decode_rattle=1.0)
    assert s.relative_to_hull == "mp20+matbench" and s.loop_oracle_weight == 10.0
    assert BenchSettings().strategies == ("loop", "random", "random_proxy", "gfn_once")
    assert BenchSettings().loop_oracle_weight == 1.0 and BenchSettings().relative_to_hull is None
    with pytest.raises(ValueError, match="unknown objective"):
        BenchSettings(objective="stability")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="oracle_weight"):
        BenchSettings(oracle_weight=0.5)


def test_counts_and_proxy_error_per_round_and_source() -> None:
    runs = [_e({"Na": 1, "Cl": 1}, round_index=0, predicted=-1.5, formation=-1.0),
            _e({"K": 1, "Cl": 1}, round_index=0, predicted=-0.5, formation=-1.0),
            _e({"Li": 1, "F": 1}, round_index=1, source="substitution", predicted=-0.8, formation=-1.0),
            _e({"Li": 1, "Cl": 1}, round_index=1, status="failed", predicted=-3.0, formation=float("nan")),
            _e({"Na": 1, "F": 1}, round_index=2, source="substitution")]  # no prediction: not in the error
    flags = [True, False, True, False, True]
    assert counts_by([e.round for e in runs], flags) == {"0": [1, 2], "1": [1, 2], "2": [1, 1]}
    assert counts_by([e.source for e in runs], flags) == {"generator": [1, 3], "substitution": [2, 2]}
    assert counts_by([10, 2, 10], [True, True, False]) == {"2": [1, 1], "10": [1, 2]}  # numeric order
    err = proxy_error_by_round(runs)
    assert err == {"0": {"mae": 0.5, "n": 2}, "1": {"mae": 0.2, "n": 1}}  # failed call and missing prediction skipped
    assert proxy_error_by_round(runs, by_source=True) == {"0:generator": {"mae": 0.5, "n": 2},
                                                          "1:substitution": {"mae": 0.2, "n": 1}}
    m = sun_metrics(runs, flags, [False, True, False, False, False])
    assert m["sun_hits"] == 3 and m["sun_formulas"] == ["LiF", "NaCl", "NaF"] and m["cumulative_sun"] == [1, 1, 2, 2, 3]
    assert m["zero_dimensional_hits"] == 1 and m["zero_dimensional_formulas"] == ["KCl"]
    with pytest.raises(ValueError, match="one flag"):
        sun_metrics(runs, flags[:2], flags[:2])


def _run(sun_by_round: dict[str, list[int]], *, formulas: list[str], sources: dict[str, list[int]] | None = None,
         mae: dict[str, float] | None = None) -> dict[str, Any]:
    """One seed's metrics as strategy_metrics returns them (only what the summary reads)."""
    hits = sum(v[0] for v in sun_by_round.values())
    calls = sum(v[1] for v in sun_by_round.values())
    cum = [0] * calls
    return {"oracle_calls": calls, "ok": calls, "unique_hits_ehull_le_0p1": hits, "unique_hits_ehull_le_0": 0,
            "hit_formulas": formulas, "diversity": {}, "best_e_above_hull_so_far": [0.0] * calls,
            "median_formation_energy": None, "cumulative_unique_hits_ehull_le_0p1": cum,
            "sun": {"sun": hits, "stable": hits, "sun_novel_formula": 0, "zero_dimensional_hits": 1},
            "sun_hits": hits, "sun_formulas": formulas, "zero_dimensional_hits": 1, "zero_dimensional_formulas": ["H2O"],
            "cumulative_sun": cum, "sun_by_round": sun_by_round,
            "sun_by_source": sources or {"generator": [hits, calls]},
            "proxy_error_by_round": {k: {"mae": v, "n": 5} for k, v in (mae or {}).items()}}


def test_sun_summary_compares_the_loop_with_each_baseline_paired_over_seeds() -> None:
    loop = [_run({"0": [1, 5], "1": [2, 5], "2": [3, 5]}, formulas=["A", "B"], sources={"generator": [2, 8],
                                                                                          "substitution": [4, 7]},
                 mae={"0": 0.5, "1": 0.3, "2": 0.2}),
            _run({"0": [1, 5], "1": [3, 5], "2": [2, 5]}, formulas=["B", "C", "D"], mae={"0": 0.7, "1": 0.5, "2": 0.4})]
    gfn = [_run({"0": [2, 15]}, formulas=["A"]), _run({"0": [1, 15]}, formulas=["A"])]
    sub = [_run({"0": [6, 15]}, formulas=["E", "F"]), _run({"0": [6, 15]}, formulas=["E", "G"])]
    s = summarize({"loop": loop, "gfn_once": gfn, "substitution_once": sub}, objective="sun")
    assert set(s["loop_vs"]) == {"gfn_once", "substitution_once"} and "loop_vs_unique_hits" in s
    st = s["strategies"]["loop"]
    assert st["sun_per_100"] == pytest.approx(40.0) and st["sun"] == 12 and st["distinct_sun_formulas"] == 4
    assert st["zero_dimensional_hits"] == 2  # reported beside, never inside, the S.U.N. count
    assert st["sun_by_round"]["0"] == {"sun": 2, "calls": 10, "per_100": 20.0, "per_100_ci95": [20.0, 20.0]}
    assert st["sun_by_round"]["1"]["sun"] == 5 and st["sun_by_round"]["2"]["calls"] == 10
    assert st["sun_by_source"]["substitution"] == {"sun": 4, "calls": 7, "per_100": 57.14, "per_100_ci95": [0.0, 57.14]}
    assert st["proxy_error_by_round"]["0"] == {"mae": 0.6, "n": 10, "mae_per_seed": [0.5, 0.7]}
    assert pooled_proxy_error([{"e": {"0:generator": {"mae": 0.5, "n": 1}, "10:substitution": {"mae": 0.1, "n": 3}}},
                               {"e": {"0:generator": {"mae": 0.7, "n": 3}}}], field="e") == {
        "0:generator": {"mae": 0.65, "n": 4, "mae_per_seed": [0.5, 0.7]},
        "10:substitution": {"mae": 0.1, "n": 3, "mae_per_seed": [0.1, None]}}
    vs = s["loop_vs"]["gfn_once"]  # loop 6 of 15 per seed; gfn 2 and 1 of 15: ahead in both seeds
    assert vs["difference_per_100_calls"] == pytest.approx(30.0) and vs["clearly_more"] is True
    assert vs["ratio"] == pytest.approx(4.0) and vs["distinct_sun_formulas"] == {"loop": 4, "gfn_once": 1, "ratio": 4.0}
    tie = s["loop_vs"]["substitution_once"]  # 6 of 15 each, every seed: difference exactly 0
    assert tie["difference_per_100_calls"] == 0.0 and tie["difference_ci95"] == [0.0, 0.0] and not tie["clearly_more"]
    learning = s["loop_learning"]
    assert learning["sun_per_100_first_round"] == 20.0 and learning["sun_per_100_later_rounds"] == 50.0
    assert learning["later_vs_first_ratio"] == pytest.approx(2.5) and learning["proxy_error_falls_every_round"] is True
    text = markdown(s)
    assert "loop − gfn_once, S.U.N. per 100 calls: **+30.0**" in text and "clearly more: yes" in text
    assert "| loop round |" in text and "| substitution | 7 | 4 |" in text and "0-D hits (not S.U.N.)" in text


def test_later_rounds_without_a_first_round_hit_and_a_rising_error() -> None:
    runs = [_run({"0": [0, 5], "1": [2, 5]}, formulas=[], mae={"0": 0.3, "1": 0.4}),
            _run({"0": [0, 5], "1": [1, 5]}, formulas=[], mae={"0": 0.3, "1": 0.2})]
    out = later_vs_first_round(runs)
    assert out["later_vs_first_ratio"] is None and out["sun_per_100_later_rounds"] == 30.0
    assert out["proxy_error_falls_every_round"] is False  # pooled 0.3 → 0.3: not a fall


def test_compare_sun_with_a_baseline_without_sun() -> None:
    out = compare_sun({"loop": [_run({"0": [2, 10]}, formulas=["A"])], "random": [_run({"0": [0, 10]}, formulas=[])]})
    assert out["random"]["ratio"] is None and out["random"]["distinct_sun_formulas"]["ratio"] is None
    assert out["random"]["difference_per_100_calls"] == 20.0


def test_sun_plot_and_cache_round_trip(tmp_path: Path) -> None:
    s = summarize({"loop": [_run({"0": [1, 4], "1": [2, 4]}, formulas=["A"])],
                   "random": [_run({"0": [0, 8]}, formulas=[])]}, objective="sun")
    s["strategies"]["loop"]["cumulative_sun"] = [[0, 1, 1, 1, 2, 2, 3, 3]]
    path = plot(s, tmp_path / "discovery.png")
    assert path.stat().st_size > 1000
    runs = [_e({"Na": 1, "Cl": 1}, round_index=2, source="substitution", predicted=-0.7),
            _e({"K": 1, "Cl": 1}, status="failed")]
    _save_cache(tmp_path / "c.json", BenchSettings(objective="sun", budget=30), runs)
    back = _load_cache(tmp_path / "c.json", BenchSettings(objective="sun", budget=30, seeds=5))
    assert back is not None and [(b.round, b.source) for b in back] == [(2, "substitution"), (0, "generator")]
    assert back[0].predicted == -0.7 and math.isnan(back[1].predicted)
    assert _load_cache(tmp_path / "c.json", BenchSettings(budget=30)) is None  # another objective: another round-0 score
    assert _load_cache(tmp_path / "c.json", BenchSettings(objective="sun", budget=30, oracle_weight=4)) is not None
    # the family weight acts from round 1 on, like the label weight: the baselines are the same runs
    assert _load_cache(tmp_path / "c.json", BenchSettings(objective="sun", budget=30, family_weight=3.0)) is not None
    assert _load_cache(tmp_path / "c.json", BenchSettings(objective="sun", budget=30, family_std=0.1)) is not None
    data = json.loads((tmp_path / "c.json").read_text())
    stale = {k: v for k, v in data.items() if k != "engine_revision"}  # written before the engine's FIRE fix
    (tmp_path / "c.json").write_text(json.dumps(stale))
    assert _load_cache(tmp_path / "c.json", BenchSettings(objective="sun", budget=30)) is None
    data["loop_features"]["novelty"]["known_penalty"] = 0.5  # written before sun_loop_features was retuned
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert _load_cache(tmp_path / "c.json", BenchSettings(objective="sun", budget=30)) is None


def test_loop_calls_carry_round_source_and_prediction_from_the_store() -> None:
    c = Crystal(225, {"Na": 4, "Cl": 4}, 5.6, 5.6, 5.6, 90, 90, 90, id="x",
                extra={"round": 2, "source": "substitution", "prediction": {"formation_energy_per_atom_mean": -1.9}})
    e = loop_evaluated(c, "ok", {"e_above_hull": 0.02, "formation_energy_per_atom": -2.0}, None)
    assert (e.round, e.source, e.predicted, e.e_above_hull, e.formation_energy) == (2, "substitution", -1.9, 0.02, -2.0)
    older = loop_evaluated(Crystal(225, {"Na": 4, "Cl": 4}, 5.6, 5.6, 5.6, 90, 90, 90, extra={"round": 0}), "failed",
                           {"e_above_hull": None}, None)
    assert older.source == "generator" and math.isnan(older.predicted) and math.isnan(older.e_above_hull)


@pytest.mark.slow
def test_substitution_baseline_relaxes_seed_substitutions_with_chgnet() -> None:
    """Real substitutions into near-hull seed structures, relaxed as structures by the CHGNet oracle."""
    from oracles.chgnet import CHGNetOracle
    from orchestration.bench_discovery.metrics import strategy_metrics
    from orchestration.bench_discovery.strategies import evaluate_structures, substitution_proposals

    settings = BenchSettings(objective="sun", budget=3, rounds=1, candidates_per_round=20)
    proposals = substitution_proposals(settings, 0, set())
    assert 0 < len(proposals) <= 20 and len({p.id for p in proposals}) == len(proposals)
    oracle = CHGNetOracle(workers=1, fmax=0.1, steps=100, timeout_s=120, device="cpu", reference=settings.reference)
    try:
        runs = evaluate_structures(oracle, proposals[:2], 0, predicted=[-1.0, -2.0])
    finally:
        oracle.close()
    assert [e.source for e in runs] == ["substitution"] * 2 and [e.predicted for e in runs] == [-1.0, -2.0]
    assert all(e.status in ("ok", "unconverged", "failed", "timeout", "invalid") for e in runs)
    assert any(e.status == "ok" and e.relaxed_cif and math.isfinite(e.e_above_hull) for e in runs)
    m = strategy_metrics(runs, settings.reference)
    assert m["sun_by_source"] == {"substitution": [m["sun_hits"], 2]} and m["oracle_calls"] == 2


@pytest.mark.slow
def test_bench_discovery_sun_command_end_to_end(tmp_path: Path) -> None:
    """Tiny budget: the loop and substitution once (the other baselines run in the other objectives' end-to-end
    test; ~5 min with GFN once too), 2 calls each, 1 seed, 2 rounds, a 200-row seed set for a fast proxy fit;
    the JSON has sun_per_100, loop_vs and the loop's per-round and per-source rates."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    cmd = [sys.executable, "-m", "orchestration.cli", "bench", "discovery", "--json", "--objective", "sun",
           "--budget", "2", "--seeds", "1", "--rounds", "2", "--candidates", "20", "--gfn-iterations", "2",
           "--gfn-iterations-per-round", "1", "--strategies", "loop,substitution_once", "--seed-rows", "200",
           "--out", str(tmp_path / "bench")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert set(result["strategies"]) == {"loop", "substitution_once"}
    assert set(result["loop_vs"]) == {"substitution_once"} and "loop_vs_unique_hits" in result
    assert "later_vs_first_ratio" in result["loop_learning"] and result["settings"]["objective"] == "sun"
    for s in result["strategies"].values():
        assert s["oracle_calls"] == 2 and "sun_per_100" in s and "sun_per_100_ci95" in s
    assert set(result["strategies"]["loop"]["sun_by_round"]) <= {"0", "1"}
    assert set(result["strategies"]["substitution_once"]["sun_by_source"]) == {"substitution"}
    assert "| loop round |" in (tmp_path / "bench" / "results.md").read_text()
    assert (tmp_path / "bench" / "discovery.png").stat().st_size > 1000


def test_help_names_each_objective_default() -> None:
    """The per-objective defaults are visible in --help (rich markup once swallowed a bracketed '[default: …]')."""
    from typer.testing import CliRunner

    from orchestration.bench_discovery import DEFAULT_SEEDS
    from orchestration.cli import app

    res = CliRunner().invoke(app, ["bench", "discovery", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.replace("│", " ").split())
    assert f"(default: {DEFAULT_SEEDS['sun']} with --objective sun, else {DEFAULT_SEEDS['hull']})" in text
    assert "(default: 60 with --objective sun, else 24)" in text and "(default: 0.5 with --objective sun" in text
