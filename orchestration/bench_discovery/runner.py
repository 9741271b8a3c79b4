"""The benchmark's driver: every strategy for every seed, finished baselines cached per seed in ``--out``."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from discovery.crystal import Crystal
from oracles.batched.engine import ENGINE_REVISION
from orchestration.bench_discovery.metrics import strategy_metrics
from orchestration.bench_discovery.report import markdown, plot
from orchestration.bench_discovery.settings import (
    BenchSettings,
    Evaluated,
    oracle_optimizer,
    sun_loop_features,
)
from orchestration.bench_discovery.statistics import summarize
from orchestration.bench_discovery.strategies import (
    evaluate,
    evaluate_structures,
    gfn_once_candidates,
    random_candidates,
    run_loop,
    scored_selection,
    substitution_once,
)

OBJECTIVE_TEXT: dict[str, str] = {
    "formation_energy": "predicted formation energy",
    "hull": "predicted distance to the reference hull (acquisition.relative_to_hull)",
    "sun": ("predicted distance to the reference hull minus the novelty penalty (known and tried formulas), "
            "loop with substitutions, residual proxy, fresh generator with offline replay, selection across rounds "
            "(bench_discovery.settings.sun_loop_features)"),
}


def _save_cache(path: Path, settings: BenchSettings, evaluated: Sequence[Evaluated]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"crystal": {"space_group": e.crystal.space_group, "counts": e.crystal.counts, "lattice": list(e.crystal.lattice),
                         "id": e.crystal.id},
             "status": e.status, "e_above_hull": e.e_above_hull, "formation_energy": e.formation_energy,
             "relaxed_cif": e.relaxed_cif, "round": e.round, "source": e.source,
             "predicted": None if math.isnan(e.predicted) else e.predicted} for e in evaluated]
    path.write_text(json.dumps({"settings": asdict(settings), "loop_features": _features(settings),
                                "engine_revision": ENGINE_REVISION, "evaluated": rows}))


def _features(settings: BenchSettings) -> dict[str, Any] | None:
    """The loop's learning features (:func:`sun_loop_features`) a baseline's round-0 scoring and selection may
    depend on (all but the oracle-label weight, which acts from round 1), as JSON data; None unless ``sun``."""
    if settings.objective != "sun":
        return None
    features = sun_loop_features(settings)
    features["proxy"] = {k: v for k, v in features["proxy"].items() if k not in ("oracle_weight", "residual_family_std")}
    features["sources"] = {"substitution": {k: v for k, v in features["sources"]["substitution"].items()
                                            if k != "family_weight"}}  # acts from round 1, like oracle_weight
    return json.loads(json.dumps(features))


def _load_cache(path: Path, settings: BenchSettings) -> list[Evaluated] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    # seed s of a baseline is the same run whatever K, the other strategies, the loop's label and family weights (the
    # baselines use the loop's round-0 proxy and generator, fitted before any oracle label exists)
    skip = ("seeds", "strategies", "oracle_weight", "family_weight", "family_std")
    want = {k: v for k, v in json.loads(json.dumps(asdict(settings))).items() if k not in skip}
    # settings added later (absent from older caches) had their default then
    cached = json.loads(json.dumps(asdict(BenchSettings()))) | data.get("settings", {})
    if {k: v for k, v in cached.items() if k not in skip} != want:
        return None
    if data.get("loop_features") != _features(settings):  # sun_loop_features retuned since: score again
        return None
    if data.get("engine_revision", 1) != ENGINE_REVISION:  # relaxed by an engine that gives other results
        return None
    return [evaluated_from_json(r) for r in data["evaluated"]]


def evaluated_from_json(r: dict[str, Any]) -> Evaluated:
    """One cached call (a row of a cache file's ``evaluated`` list) as an :class:`Evaluated`."""
    c, lat = r["crystal"], r["crystal"]["lattice"]
    crystal = Crystal(c["space_group"], c["counts"], lat[0], lat[1], lat[2], lat[3], lat[4], lat[5], id=c["id"])
    predicted = r.get("predicted")
    return Evaluated(crystal, r["status"], float(r["e_above_hull"]), float(r["formation_energy"]), r["relaxed_cif"],
                     round=int(r.get("round", 0)), source=str(r.get("source", "generator")),
                     predicted=float("nan") if predicted is None else float(predicted))


def run_baseline(name: str, oracle: Any, settings: BenchSettings, config_path: Path, seed: int,
                 known: set[tuple[str, int]], progress: Callable[[int, int], None] | None = None) -> list[Evaluated]:
    """One baseline for one seed (``known``: the seed data's (reduced formula, space group) keys), relaxed with
    ``oracle`` at the loop's round-0 oracle seed; the loop of this seed must have run (its round-0 models)."""
    from orchestration.campaign.context import round_seed

    oseed = round_seed(seed, 0)
    if name == "substitution_once":
        proposals, predicted = substitution_once(config_path, settings, seed, known)
        return evaluate_structures(oracle, proposals, oseed, progress, predicted=predicted)
    if name == "random":
        return evaluate(oracle, random_candidates(settings, seed, settings.budget, known), oseed, progress, source="random")
    if name == "random_proxy":
        pool = random_candidates(settings, seed + 1000, settings.rounds * settings.candidates_per_round, known)
        chosen = scored_selection(config_path, pool, settings.budget, seed)
        return evaluate(oracle, chosen, oseed, progress, source="random")
    if name == "gfn_once":
        chosen = scored_selection(config_path, gfn_once_candidates(config_path, settings, seed, known), settings.budget, seed)
        return evaluate(oracle, chosen, oseed, progress, source="generator")
    raise ValueError(f"unknown baseline {name!r}")


def _bind(report: Callable[[str, int, int], None], desc: str) -> Callable[[int, int], None]:
    return lambda done, total: report(desc, done, total)


# -- driver ----------------------------------------------------------------------------------------------
def run_benchmark(settings: BenchSettings, out_dir: Path, *,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run every strategy for every seed; write ``results.json``, ``evaluated.jsonl`` and ``discovery.png``
    under ``out_dir``; return the summary (what ``matloop bench discovery --json`` prints)."""
    from oracles.chgnet import CHGNetOracle
    from orchestration.campaign.context import campaign_for, release
    from orchestration.campaign.data import seed_keys

    t_start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    per_seed: dict[str, list[dict[str, Any]]] = {s: [] for s in settings.strategies}
    timings: dict[str, float] = {s: 0.0 for s in settings.strategies}
    rows: list[dict[str, Any]] = []
    report = progress or (lambda _d, _i, _n: None)
    oracle = CHGNetOracle(workers=settings.workers, fmax=settings.fmax, steps=settings.steps,
                          timeout_s=settings.oracle_timeout_s, device=settings.device, reference=settings.reference,
                          decode_rattle=settings.decode_rattle, **oracle_optimizer(settings))
    try:
        for seed in range(settings.seeds):
            loop_dir = out_dir / f"loop-s{seed}"
            t0 = time.perf_counter()
            config_path, loop_eval = run_loop(settings, seed, loop_dir)
            timings["loop"] = timings.get("loop", 0.0) + time.perf_counter() - t0
            camp = campaign_for(config_path)
            known = seed_keys(camp.config)
            release(config_path)
            runs: dict[str, list[Evaluated]] = {"loop": loop_eval}
            for name in settings.strategies:
                if name == "loop":
                    continue
                cache = out_dir / "cache" / f"{name}-s{seed}.json"
                cached = _load_cache(cache, settings)
                if cached is not None:  # a re-run with the same settings reuses finished strategies
                    runs[name] = cached
                    continue
                t0 = time.perf_counter()
                runs[name] = run_baseline(name, oracle, settings, config_path, seed, known,
                                          _bind(report, f"seed {seed}: {name}"))
                timings[name] += time.perf_counter() - t0
                _save_cache(cache, settings, runs[name])
            for name in settings.strategies:
                per_seed[name].append(strategy_metrics(runs[name], settings.reference))
                for i, e in enumerate(runs[name]):
                    rows.append({"strategy": name, "seed": seed, "call": i, "id": e.crystal.id,
                                 "space_group": e.crystal.space_group, "composition": e.crystal.formula,
                                 "lattice": list(e.crystal.lattice), "status": e.status,
                                 "e_above_hull": None if math.isnan(e.e_above_hull) else e.e_above_hull,
                                 "formation_energy_per_atom": None if math.isnan(e.formation_energy) else e.formation_energy,
                                 "round": e.round, "source": e.source,
                                 "predicted_formation_energy_per_atom": None if math.isnan(e.predicted) else e.predicted})
    finally:
        oracle.close()
    summary = summarize(per_seed, objective=settings.objective)
    result = {
        "benchmark": "discovery",
        "budget_per_strategy_per_seed": settings.budget,
        "seeds": settings.seeds,
        "settings": asdict(settings),
        "oracle": f"chgnet relax ({settings.optimizer}, fmax {settings.fmax} eV/Å, ≤ {settings.steps} steps), hull "
                  f"reference {settings.reference}",
        "objective": OBJECTIVE_TEXT[settings.objective],
        "unique": "pymatgen StructureMatcher (ltol 0.2, stol 0.3, angle_tol 5) on relaxed structures, per strategy and seed",
        "sun_definition": ("S.U.N. (discovery.sun): status ok, E_hull <= 0.1 eV/atom, no StructureMatcher match among the "
                           "shipped MP-20 + Li-Fe-O structures of the same formula nor an earlier call of the run, not a "
                           "0-D packing; sun_novel_formula: also a formula absent from the hull reference"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, device {settings.device}",
        "wall_s": round(time.perf_counter() - t_start, 1),
        "wall_s_per_strategy": {k: round(v, 1) for k, v in timings.items()},
        **summary,
    }
    (out_dir / "evaluated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result["plot"] = str(plot(summary, out_dir / "discovery.png"))
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    (out_dir / "results.md").write_text(markdown(result))
    return result
