"""Discovery benchmark: metrics on known inputs, and `matloop bench discovery` end to end at a tiny budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from discovery.crystal import Crystal
from orchestration.bench_discovery import (
    BenchSettings,
    Evaluated,
    bootstrap_difference,
    bootstrap_rate,
    bootstrap_ratio,
    campaign_config,
    markdown,
    strategy_metrics,
    summarize,
)

ROOT = Path(__file__).resolve().parents[2]


def _cif(a: float, species: tuple[str, str] = ("Na", "Cl")) -> str:
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])
    return str(s.to(fmt="cif"))


def _e(e_hull: float, cif: str | None, status: str = "ok", counts: dict[str, int] | None = None) -> Evaluated:
    c = Crystal(225, counts or {"Na": 4, "Cl": 4}, 5.6, 5.6, 5.6, 90, 90, 90)
    return Evaluated(c, status, e_hull, -2.0, cif)


def test_unique_hits_best_so_far_and_diversity(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.bench_discovery import metrics

    monkeypatch.setattr(metrics, "_COVERED", {("mp20+matbench", frozenset({"Na", "Cl"})): True,
                                                      ("mp20+matbench", frozenset({"K", "Cl"})): False})
    nacl, nacl_strained, kcl = _cif(5.6), _cif(5.65), _cif(6.3, ("K", "Cl"))
    runs = [_e(0.3, nacl), _e(0.05, nacl), _e(-0.01, nacl_strained),  # same structure twice: one unique hit
            _e(float("nan"), None, status="failed"), _e(0.0, kcl, counts={"K": 4, "Cl": 4})]
    m = strategy_metrics(runs)
    assert m["oracle_calls"] == 5 and m["ok"] == 4
    assert m["hits_ehull_le_0p1"] == 3 and m["unique_hits_ehull_le_0p1"] == 2
    assert m["hits_ehull_le_0"] == 2 and m["unique_hits_ehull_le_0"] == 2
    assert m["cumulative_unique_hits_ehull_le_0p1"] == [0, 1, 1, 1, 2]
    assert m["best_e_above_hull_so_far"] == [0.3, 0.05, -0.01, -0.01, -0.01]
    assert m["diversity"]["distinct_formulas"] == 2 and m["diversity"]["distinct_chemical_systems"] == 2
    assert m["hit_formulas"] == ["KCl", "NaCl"]
    assert m["unique_hits_ehull_le_0p1_covered"] == 1  # KCl's system marked as holding no reference compound
    assert m["unique_hits_ehull_le_0p1_new_composition"] == 0  # MP knows NaCl and KCl
    # S.U.N. with the campaign's labels: the failed call is never counted; the strained NaCl is not unique
    assert m["sun"]["results"] == 5 and m["sun"]["converged"] == 4 and m["sun"]["stable"] == 3
    assert m["sun"]["unique"] == 2 and m["sun"]["novel_formula"] == 0 and m["sun"]["sun_novel_formula"] == 0
    # the per-call S.U.N. flags behind the S.U.N. report agree with the counts
    assert m["sun_hits"] == m["sun"]["sun"] and m["cumulative_sun"][-1] == m["sun_hits"] and len(m["cumulative_sun"]) == 5
    assert m["sun_by_round"] == {"0": [m["sun_hits"], 5]} and m["sun_by_source"] == {"generator": [m["sun_hits"], 5]}
    assert m["zero_dimensional_hits"] == m["sun"]["zero_dimensional_hits"] and len(m["sun_formulas"]) <= 2
    flagged = strategy_metrics([_e(-0.5, nacl, status="unconverged")])
    assert flagged["hits_ehull_le_0p1"] == 0 and flagged["sun"]["sun"] == 0 and flagged["sun"]["stable"] == 0


def test_hits_with_formulas_the_reference_lacks_are_new_compositions(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.bench_discovery import metrics
    from orchestration.campaign import sun

    monkeypatch.setattr(sun, "reference_formulas", lambda name="mp20+matbench": frozenset({"NaCl"}))
    c = Crystal(221, {"Na": 1, "Cl": 3}, 5.0, 5.0, 5.0, 90, 90, 90)
    assert not metrics.known_formula(c) and metrics.known_formula(_e(0.0, None).crystal)


@pytest.mark.slow
def test_covered_systems_of_the_shipped_reference() -> None:
    from orchestration.bench_discovery import covered

    def c(counts: dict[str, int]) -> Crystal:
        return Crystal(1, counts, 5, 5, 5, 90, 90, 90)

    for ref in ("mp20+li-fe-o", "mp20+matbench"):
        assert covered(c({"Li": 2, "Fe": 2, "O": 4}), ref)  # the full MP Li-Fe-O system is shipped
        assert covered(c({"Li": 1, "Fe": 1, "O": 2, "Se": 1}), ref)  # through its Li-Fe-O subsystem
    assert not covered(c({"Mg": 1, "F": 2}), "mp20+li-fe-o")  # MP-20 holds no Mg-F compound
    assert covered(c({"Mg": 1, "F": 2}), "mp20+matbench")  # MatBench does


def test_bootstrap_rates_and_ratio() -> None:
    assert bootstrap_rate([3, 3, 3], [30, 30, 30]) == (10.0, 10.0, 10.0)  # identical seeds: no spread
    rate, lo, hi = bootstrap_rate([0, 6], [30, 30])
    assert rate == 10.0 and lo == 0.0 and hi == 20.0
    point, lo2, hi2 = bootstrap_ratio([6, 6], [30, 30], [2, 2], [30, 30])
    assert point == pytest.approx(3.0) and lo2 == pytest.approx(3.0) and hi2 == pytest.approx(3.0)
    assert bootstrap_ratio([6, 6], [30, 30], [0, 0], [30, 30]) == (None, None, None)


def test_summarize_reports_the_ratio_and_counts() -> None:
    def run(hits: int) -> dict:
        return {"oracle_calls": 10, "ok": 10, "unique_hits_ehull_le_0p1": hits, "unique_hits_ehull_le_0": hits // 2,
                "unique_hits_ehull_le_0p1_covered": hits // 4, "unique_hits_ehull_le_0p1_new_composition": hits // 3,
                "hit_formulas": ["NaCl"], "diversity": {"distinct_formulas": 1}, "best_e_above_hull_so_far": [0.0] * 10,
                "cumulative_unique_hits_ehull_le_0p1": [0] * 10, "median_formation_energy": -1.0}

    s = summarize({"loop": [run(6), run(4)], "random": [run(2), run(2)], "random_proxy": [run(2), run(2)],
                   "gfn_once": [run(3), run(3)]})
    assert s["ratio_loop_vs_random"] == 2.5 and s["ratio_loop_vs_random_ehull_le_0"] == 2.5
    assert "sun" not in s["strategies"]["loop"]  # runs without S.U.N. counts (older caches) still summarise
    with_sun = summarize({"loop": [{**run(6), "sun": {"sun": 2, "stable": 3}}, {**run(4), "sun": {"sun": 1, "stable": 1}}]})
    loop = with_sun["strategies"]["loop"]
    assert loop["sun"] == 3 and loop["sun_per_seed"] == [2, 1] and loop["sun_counts"] == {"sun": 3, "stable": 4}
    assert loop["sun_per_100_calls"] == 15.0 and with_sun["counts"]["loop"]["sun"] == 3
    assert s["counts"]["loop"] == {"unique_hits_ehull_le_0p1": 10, "unique_hits_ehull_le_0": 5,
                                   "unique_hits_ehull_le_0p1_covered": 2, "unique_hits_ehull_le_0p1_new_composition": 3,
                                   "oracle_calls": 20}
    assert s["ratio_loop_vs_random_covered"] is None  # random: 2 // 4 = 0 covered hits
    assert s["strategies"]["random"]["unique_hits_ehull_le_0p1_per_100_calls"] == 20.0
    assert s["strategies"]["loop"]["unique_hits_ehull_le_0p1_per_100_calls_ci95"] == [40.0, 60.0]
    none = summarize({"loop": [run(2)], "random": [run(1)]})  # random: 0 hits at E_hull <= 0
    assert none["ratio_loop_vs_random_ehull_le_0"] is None and none["ratio_loop_vs_random"] == 2.0


def test_bootstrap_difference_is_paired_and_defined_without_hits() -> None:
    assert bootstrap_difference([3, 3], [30, 30], [0, 0], [30, 30]) == (10.0, 10.0, 10.0)  # ratio would be unbounded
    d, lo, hi = bootstrap_difference([4, 2], [20, 20], [2, 0], [20, 20])  # loop 2 ahead in each seed
    assert d == pytest.approx(10.0) and lo == pytest.approx(10.0) and hi == pytest.approx(10.0)  # paired: no spread
    d, lo, hi = bootstrap_difference([4, 2], [20, 20], [0, 2], [20, 20])  # ahead in one seed, tied in the other
    assert d == pytest.approx(10.0) and lo == pytest.approx(0.0) and hi == pytest.approx(20.0)


def test_summarize_compares_the_loop_with_every_baseline() -> None:
    def run(hits: int) -> dict:
        return {"oracle_calls": 10, "ok": 10, "unique_hits_ehull_le_0p1": hits, "unique_hits_ehull_le_0": 0,
                "hit_formulas": [], "diversity": {}, "best_e_above_hull_so_far": [], "median_formation_energy": None,
                "cumulative_unique_hits_ehull_le_0p1": []}

    s = summarize({"loop": [run(4), run(5), run(3)], "random": [run(0), run(0), run(0)],
                   "random_proxy": [run(1), run(2), run(1)], "gfn_once": [run(4), run(4), run(4)]})
    vs = s["loop_vs"]
    assert set(vs) == {"random", "random_proxy", "gfn_once"}
    assert vs["random"]["ratio"] is None and vs["random"]["clearly_more"] is True  # 40 per 100 calls vs none
    assert vs["random_proxy"]["difference_per_100_calls"] == pytest.approx(26.67) and vs["random_proxy"]["clearly_more"]
    assert vs["gfn_once"]["difference_per_100_calls"] == 0.0 and not vs["gfn_once"]["clearly_more"]
    text = markdown(s | {"strategies": {}})
    assert "undefined (random found no unique hit)" in text
    assert "loop − gfn_once" in text and "clearly more: no" in text and "loop − random_proxy" in text


def test_loop_config_is_a_valid_campaign_with_the_budget_as_cap(tmp_path: Path) -> None:
    from orchestration.config import CampaignConfig, build_search_space

    cfg = CampaignConfig.model_validate(campaign_config(BenchSettings(budget=10, rounds=3), 4, tmp_path))
    assert cfg.stopping.max_oracle_calls == 10 and cfg.batch_size == 4 and cfg.rounds == 3 and cfg.seed == 4
    assert cfg.oracle.name == "chgnet" and cfg.success.at_most == 0.1
    assert cfg.acquisition.relative_to_hull is None and cfg.oracle.settings["reference"] == "mp20+matbench"
    hull = CampaignConfig.model_validate(campaign_config(BenchSettings(objective="hull"), 0, tmp_path))
    assert hull.acquisition.relative_to_hull == "mp20+matbench"
    assert cfg.proxy.oracle_weight == 1.0
    weighted = CampaignConfig.model_validate(campaign_config(BenchSettings(oracle_weight=25), 0, tmp_path))
    assert weighted.proxy.oracle_weight == 25
    assert cfg.seed_data.max_rows is None
    cold = CampaignConfig.model_validate(campaign_config(BenchSettings(seed_rows=200), 0, tmp_path))
    assert cold.seed_data.max_rows == 200
    with pytest.raises(ValueError, match="seed_rows"):
        BenchSettings(seed_rows=0)
    with pytest.raises(ValueError, match="unknown hull reference"):
        BenchSettings(reference="elements")
    assert len(build_search_space(cfg).elements) == 22
    with pytest.raises(ValueError, match="unknown strategies"):
        BenchSettings(strategies=("loop", "bayes"))
    assert "optimizer" not in cfg.oracle.settings  # FIRE: the oracle's default, the loop's config as before
    bfgs = CampaignConfig.model_validate(campaign_config(BenchSettings(optimizer="BFGS"), 0, tmp_path))
    assert bfgs.oracle.settings["optimizer"] == "BFGS" and bfgs.oracle.settings["engine"] == "batched"
    with pytest.raises(ValueError, match="unknown optimizer 'LBFGS'; choose FIRE or BFGS"):
        BenchSettings(optimizer="LBFGS")  # type: ignore[arg-type]


@pytest.mark.slow
def test_bench_discovery_command_end_to_end(tmp_path: Path) -> None:
    """Tiny budget: 2 calls per strategy, 1 seed, 1 round; stdout is exactly one JSON object."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    cmd = [sys.executable, "-m", "orchestration.cli", "bench", "discovery", "--json", "--budget", "2", "--seeds", "1",
           "--rounds", "1", "--candidates", "20", "--gfn-iterations", "2", "--gfn-iterations-per-round", "1",
           "--out", str(tmp_path / "bench")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert set(result["counts"]) == {"loop", "random", "random_proxy", "gfn_once"}
    assert "ratio_loop_vs_random" in result and "ratio_loop_vs_random_ci95" in result
    for s in result["strategies"].values():
        assert s["oracle_calls"] == 2
        assert len(s["best_e_above_hull_so_far"][0]) == 2 and len(s["cumulative_unique_hits_ehull_le_0p1"][0]) == 2
        assert "unique_hits_ehull_le_0p1_per_100_calls_ci95" in s and "diversity_of_hits" in s
    assert (tmp_path / "bench" / "discovery.png").stat().st_size > 1000
    rows = (tmp_path / "bench" / "evaluated.jsonl").read_text().splitlines()
    assert len(rows) == 8 and {json.loads(r)["strategy"] for r in rows} == set(result["counts"])


def test_finished_baselines_are_cached_per_seed_and_settings(tmp_path: Path) -> None:
    from orchestration.bench_discovery import _load_cache, _save_cache

    runs = [_e(0.05, _cif(5.6)), _e(float("nan"), None, status="failed")]
    path = tmp_path / "random-s0.json"
    _save_cache(path, BenchSettings(budget=6, seeds=2), runs)
    back = _load_cache(path, BenchSettings(budget=6, seeds=1))  # seed 0 is the same run whatever K is
    assert back is not None and [b.crystal for b in back] == [r.crystal for r in runs]
    assert back[0].e_above_hull == 0.05 and back[1].status == "failed" and back[0].relaxed_cif == runs[0].relaxed_cif
    assert _load_cache(path, BenchSettings(budget=9, seeds=2)) is None  # other settings: run again
    assert _load_cache(path, BenchSettings(budget=6, oracle_weight=20)) is not None  # the loop's refit only
    assert _load_cache(path, BenchSettings(budget=6, seed_rows=200)) is None  # another round-0 proxy
    assert _load_cache(path, BenchSettings(budget=6, optimizer="BFGS")) is None  # another relaxer
    older = json.loads(path.read_text())
    del older["settings"]["seed_rows"]  # a cache written before the setting existed had its default
    path.write_text(json.dumps(older))
    assert _load_cache(path, BenchSettings(budget=6)) is not None
    assert _load_cache(path, BenchSettings(budget=6, seed_rows=200)) is None
