"""Discovery benchmark: stable unique hits per oracle call of the full loop against baselines.

Four strategies, each given the same oracle budget (``budget`` CHGNet relaxations per seed) in the
same search space (:data:`BENCH_SPACE`), with the same oracle settings and the same hull reference:

1. ``loop``: the full matloop campaign (proxy fit → Crystal-GFN training → sample → dedupe → MMR
   batch → CHGNet), ``rounds`` rounds run by :func:`orchestration.flows.campaign_flow` on a config
   built here (SQLite store, no MLflow), capped at ``budget`` oracle calls;
2. ``random``: :class:`discovery.baselines.RandomCrystalSampler` (uniform over SMACT-valid,
   Wyckoff-compatible compositions, compatible space groups and lattices), the first ``budget``
   distinct (reduced formula, space group) crystals, not seen in the seed data;
3. ``random_proxy``: ``rounds × candidates_per_round`` random crystals scored by the loop's
   round-0 proxy with the loop's acquisition, ``budget`` chosen by the loop's selection (MMR);
4. ``gfn_once``: the loop's round-0 Crystal-GFN (trained once on the round-0 proxy, never
   retrained), ``rounds × candidates_per_round`` samples, scored and selected like (3).

Strategies 3 and 4 reuse the loop's round-0 proxy and generator checkpoints (same seed, identical to
what a separate run would fit). A *hit* is an oracle result with status ``ok`` and
``e_above_hull`` ≤ 0.1 eV/atom (and, stricter, ≤ 0) against the benchmark's hull reference
(``reference``, default ``mp20+matbench``: MP-20, the complete Li-Fe-O system and 130k MatBench MP
formation energies moved to the MP2020 scale, see :mod:`oracles.reference`; the oracle labels every
strategy against it); hits are *unique* after removing relaxed structures that pymatgen's
``StructureMatcher`` (ltol 0.2, stol 0.3, angle_tol 5°; :func:`discovery.selection.unique_structures`)
finds equal to an earlier hit of the same strategy and seed. Rates are unique hits per 100 oracle
calls (failed relaxations count as calls); confidence intervals are percentile bootstraps over seeds.
``sun`` (``sun_counts``: stable, novel, unique, 0-D hits, ...) labels each strategy's calls with the
campaign's S.U.N. labels (:mod:`discovery.sun`, :func:`sun_counts`).
``*_covered`` counts only hits in chemical systems (or subsystems) where the reference holds at least
one compound: with the sparse ``mp20+li-fe-o`` reference many systems hold none, and there any
negative formation energy is a "hit".

``objective`` sets what the loop's acquisition (and so strategies 3 and 4) scores:
``formation_energy`` (default: UCB on the predicted formation energy) or ``hull`` (UCB on the predicted
distance to the reference hull, ``acquisition.relative_to_hull``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from discovery.crystal import Crystal
from discovery.selection import dedupe, select_batch, unique_structures
from discovery.sun import is_hit

STRATEGIES: tuple[str, ...] = ("loop", "random", "random_proxy", "gfn_once")
Objective = Literal["hull", "formation_energy"]
HIT_THRESHOLDS: tuple[float, ...] = (0.1, 0.0)

# The benchmark's search space: the paper's 22 elements, but small cells (≤ 3 elements, ≤ 8 atoms per
# element, ≤ 12 atoms, lengths 3–9 Å) so that one CHGNet relaxation takes seconds on one core.
BENCH_SPACE: dict[str, Any] = {
    "elements": ["H", "Li", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "V", "Mn",
                 "Fe", "Co", "Ni", "Cu", "Se"],
    "min_elements": 2, "max_elements": 3, "max_atoms_per_element": 8, "max_atoms": 12,
    "length_range": [3.0, 9.0], "angle_range": [60.0, 120.0],
}


@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark runs. ``budget``: oracle calls per strategy and seed."""

    budget: int = 24
    seeds: int = 2
    rounds: int = 3
    candidates_per_round: int = 300
    gfn_iterations_first: int = 150
    gfn_iterations_per_round: int = 50
    workers: int = 2
    device: str = "cpu"
    fmax: float = 0.1
    steps: int = 200
    oracle_timeout_s: float = 300.0
    strategies: tuple[str, ...] = STRATEGIES
    space: dict[str, Any] = field(default_factory=lambda: dict(BENCH_SPACE))
    reference: str = "mp20+matbench"
    objective: Objective = "formation_energy"
    oracle_weight: float = 1.0  # proxy.oracle_weight of the loop (rounds ≥ 1 only: baselines do not depend on it)
    seed_rows: int | None = None  # seed_data.max_rows: fewer labelled MP-20 rows for the round-0 proxy (a cold start)

    @property
    def relative_to_hull(self) -> str | None:
        """The acquisition's hull (``acquisition.relative_to_hull``), or None for plain formation energy."""
        return self.reference if self.objective == "hull" else None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.strategies) - set(STRATEGIES))
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
        if self.budget < self.rounds:
            raise ValueError(f"budget ({self.budget}) must be at least rounds ({self.rounds})")
        if self.candidates_per_round < math.ceil(self.budget / self.rounds):
            raise ValueError("candidates_per_round must be at least the per-round batch (budget / rounds)")
        if self.reference not in ("mp20+li-fe-o", "mp20+matbench"):
            raise ValueError(f"unknown hull reference {self.reference!r}; choose mp20+matbench or mp20+li-fe-o")
        if self.seed_rows is not None and self.seed_rows < 1:
            raise ValueError(f"seed_rows must be at least 1, not {self.seed_rows}")
        if self.objective not in ("hull", "formation_energy"):
            raise ValueError(f"unknown objective {self.objective!r}; choose hull or formation_energy")


@dataclass
class Evaluated:
    """One oracle call of a strategy: the candidate, the result status and labels, the relaxed CIF."""

    crystal: Crystal
    status: str
    e_above_hull: float
    formation_energy: float
    relaxed_cif: str | None


# -- the loop as a campaign -------------------------------------------------------------------------
def campaign_config(settings: BenchSettings, seed: int, directory: Path) -> dict[str, Any]:
    """The campaign config (as YAML data) of the full loop for one seed."""
    batch = math.ceil(settings.budget / settings.rounds)
    return {
        "name": f"bench-discovery-s{seed}",
        "description": "matloop bench discovery: full loop",
        "seed": seed,
        "targets": [{"name": "formation_energy_per_atom", "goal": "minimize"}],
        "search_space": settings.space,
        "seed_data": {"dataset": "mp20", **({"max_rows": settings.seed_rows} if settings.seed_rows else {})},
        "proxy": {"members": 5, "hidden": 128, "layers": 3, "epochs": 60, "warm_start": True,
                  **({"oracle_weight": settings.oracle_weight} if settings.oracle_weight != 1.0 else {})},
        "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 0.125,
                        **({"relative_to_hull": settings.relative_to_hull} if settings.relative_to_hull else {})},
        "generator": {"iterations_first_round": settings.gfn_iterations_first,
                      "iterations_per_round": settings.gfn_iterations_per_round, "device": settings.device,
                      "hyper": {"hidden": 128, "layers": 2, "batch_size": 32}},
        "candidates_per_round": settings.candidates_per_round,
        "batch_size": batch,
        "selection": {"method": "mmr", "diversity": 0.5},
        "oracle": {"name": "chgnet", "settings": {"fmax": settings.fmax, "steps": settings.steps, "device": settings.device,
                                                  "reference": settings.reference},
                   "retries": 1, "retry_delay_s": 1, "timeout_s": settings.oracle_timeout_s},
        "rounds": settings.rounds,
        "stopping": {"max_oracle_calls": settings.budget},
        "success": {"metric": "e_above_hull", "at_most": 0.1},
        "campaign_dir": str(directory),
        "tracking": {"enabled": False},
        "runner": {"kind": "local", "max_workers": settings.workers},
    }


def run_loop(settings: BenchSettings, seed: int, directory: Path) -> tuple[Path, list[Evaluated]]:
    """Run (or finish) the loop campaign of one seed; returns its config path and results in call order."""
    import yaml

    from orchestration.campaign.context import campaign_for, release
    from orchestration.flows import campaign_flow

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "campaign.yaml"
    path.write_text(yaml.safe_dump(campaign_config(settings, seed, directory), sort_keys=False))
    campaign_flow(str(path))
    camp = campaign_for(path)
    try:
        results = {r.candidate_id: r for r in camp.store.results(camp.name)}
        order = [cid for r in range(settings.rounds) for cid in camp.store.batch(camp.name, r) if cid in results]
        crystals = {c.id: c for c in camp.store.crystals(camp.name, order)}
        out = [Evaluated(crystals[cid], results[cid].status, _num(results[cid].targets.get("e_above_hull")),
                         _num(results[cid].targets.get("formation_energy_per_atom")), results[cid].relaxed_cif)
               for cid in order]
    finally:
        release(path)
    return path, out


def _num(v: float | None) -> float:
    return float(v) if v is not None and math.isfinite(v) else float("nan")


# -- baselines -----------------------------------------------------------------------------------------
def random_candidates(settings: BenchSettings, seed: int, n: int, known: set[tuple[str, int]]) -> list[Crystal]:
    """``n`` random crystals with distinct (reduced formula, space group), none in ``known``."""
    from discovery.baselines import RandomCrystalSampler
    from orchestration.config import CampaignConfig, build_search_space

    cfg = CampaignConfig.model_validate(campaign_config(settings, seed, Path(".")))
    sampler = RandomCrystalSampler(build_search_space(cfg))
    rng = np.random.default_rng([seed, 7])
    out: list[Crystal] = []
    seen = set(known)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct random crystals")
        c = sampler.sample_one(rng, id=f"random-s{seed}-{len(out):05d}")
        key = (c.reduced_formula(), c.space_group)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def scored_selection(config_path: Path, pool: Sequence[Crystal], budget: int, seed: int) -> list[Crystal]:
    """Score ``pool`` with the loop's round-0 proxy and acquisition and select ``budget`` with its selection."""
    from orchestration.campaign import steps
    from orchestration.campaign.context import campaign_for, release

    camp = campaign_for(config_path)
    try:
        scores, _ = steps.acquisition(camp, 0, steps.load_proxies(camp, 0), list(pool))
        sel = camp.config.selection
        chosen = select_batch(list(pool), scores, batch_size=budget, method=sel.method, diversity=sel.diversity,
                              seed=seed)
    finally:
        release(config_path)
    return [pool[i] for i in chosen]


def gfn_once_candidates(config_path: Path, settings: BenchSettings, seed: int, known: set[tuple[str, int]]) -> list[Crystal]:
    """Samples of the loop's round-0 generator (trained once on the round-0 proxy), deduplicated."""
    from discovery.gfn import CrystalGFN
    from orchestration.campaign.context import campaign_for, release

    camp = campaign_for(config_path)
    try:
        gfn = CrystalGFN.load(camp.model_dir("generator", 0), device=settings.device)
    finally:
        release(config_path)
    n = settings.rounds * settings.candidates_per_round
    sampled = gfn.sample(n, seed=seed + 101)
    crystals = [Crystal(c.space_group, c.counts, *c.lattice, id=f"gfn-once-s{seed}-{i:05d}") for i, c in enumerate(sampled)]
    kept = dedupe(crystals, known=known).kept
    return [crystals[i] for i in kept]


def evaluate(oracle: Any, crystals: Sequence[Crystal], seed: int,
             progress: Callable[[int, int], None] | None = None) -> list[Evaluated]:
    from oracles.base import Candidate

    results = oracle.evaluate([Candidate.from_crystal(c) for c in crystals], seed=seed, progress=progress)
    return [Evaluated(c, r.status, _num(r.targets.get("e_above_hull")), _num(r.targets.get("formation_energy_per_atom")),
                      r.structure_cif) for c, r in zip(crystals, results, strict=True)]


# -- metrics -------------------------------------------------------------------------------------------
def unique_hit_flags(evaluated: Sequence[Evaluated], threshold: float) -> list[bool]:
    """Per call: True when it is a hit (ok, E_hull ≤ threshold) not matching an earlier hit (StructureMatcher)."""
    from pymatgen.core import Structure

    hits = [i for i, e in enumerate(evaluated) if is_hit(e.status, e.e_above_hull, at_most=threshold)]
    flags = [False] * len(evaluated)
    with_cif = [i for i in hits if evaluated[i].relaxed_cif]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_str(evaluated[i].relaxed_cif or "", fmt="cif") for i in with_cif]
        keep = unique_structures(structures)
    for k in keep:
        flags[with_cif[k]] = True
    for i in hits:
        if not evaluated[i].relaxed_cif:
            flags[i] = True
    return flags


def covered(crystal: Crystal, reference: str = "mp20+matbench") -> bool:
    """True when the hull reference holds at least one compound in the crystal's chemical system (or a
    subsystem), i.e. its E_hull is measured against more than the elements alone. In a system the
    reference does not cover, any negative formation energy counts as "on the hull"."""
    from oracles.reference import load_reference

    elements = frozenset(crystal.counts)
    if (reference, elements) not in _COVERED:
        entries = load_reference(reference).system_entries(elements)  # type: ignore[arg-type]
        _COVERED[reference, elements] = any(len(e.composition.elements) > 1 for e in entries)
    return _COVERED[reference, elements]


_COVERED: dict[tuple[str, frozenset[str]], bool] = {}


def known_formula(crystal: Crystal, reference: str = "mp20+matbench") -> bool:
    """True when the hull reference already holds a phase of the crystal's reduced formula: a hit there is a
    rediscovered (or new polymorph of a) known compound rather than a new composition."""
    from oracles.reference import load_reference

    if reference not in _KNOWN:
        _KNOWN[reference] = {e.composition.reduced_formula for e in load_reference(reference).entries}  # type: ignore[arg-type]
    return crystal.reduced_formula() in _KNOWN[reference]


_KNOWN: dict[str, set[str]] = {}


def sun_counts(evaluated: Sequence[Evaluated], reference: str = "mp20+matbench") -> dict[str, int]:
    """S.U.N. counts of one strategy run (:func:`discovery.sun.count`), labelled like a campaign's results
    (E_hull ≤ 0.1 eV/atom, 0-D packings excluded) in call order: known formulas are the reference's,
    known structures the shipped MP-20 and Li-Fe-O ones, uniqueness and novelty within the run."""
    from discovery.datasets.reference_structures import load_reference_structures
    from discovery.sun import SunInput, SunLabeler, count
    from orchestration.campaign.sun import parse_cif

    known_formula(Crystal(1, {"H": 1}, 1, 1, 1, 90, 90, 90), reference)  # fills _KNOWN[reference]
    labeler = SunLabeler(known_formulas=_KNOWN[reference], reference=load_reference_structures())
    labels = [labeler.label(SunInput(str(i), 0, e.status, None if math.isnan(e.e_above_hull) else e.e_above_hull,
                                     parse_cif(e.relaxed_cif), e.crystal.space_group))
              for i, e in enumerate(evaluated)]
    return count(labels).as_dict()


def strategy_metrics(evaluated: Sequence[Evaluated], reference: str = "mp20+matbench") -> dict[str, Any]:
    """Counts, unique hits (both thresholds), curves and the diversity of the unique hits of one run."""
    out: dict[str, Any] = {"oracle_calls": len(evaluated), "ok": sum(e.status == "ok" for e in evaluated)}
    for t in HIT_THRESHOLDS:
        flags = unique_hit_flags(evaluated, t)
        key = _tkey(t)
        out[f"hits_{key}"] = sum(is_hit(e.status, e.e_above_hull, at_most=t) for e in evaluated)
        out[f"unique_hits_{key}"] = sum(flags)
        out[f"cumulative_unique_hits_{key}"] = np.cumsum(flags).astype(int).tolist()
        if t == HIT_THRESHOLDS[0]:
            hits = [e.crystal for e, f in zip(evaluated, flags, strict=True) if f]
            out["unique_hits_ehull_le_0p1_covered"] = sum(covered(c, reference) for c in hits)
            out["unique_hits_ehull_le_0p1_new_composition"] = sum(not known_formula(c, reference) for c in hits)
            out["hit_formulas"] = sorted({c.reduced_formula() for c in hits})
            out["diversity"] = {
                "distinct_formulas": len({c.reduced_formula() for c in hits}),
                "distinct_chemical_systems": len({"-".join(sorted(c.counts)) for c in hits}),
                "distinct_elements": len({el for c in hits for el in c.counts}),
                "distinct_space_groups": len({c.space_group for c in hits}),
            }
    e = np.array([x.e_above_hull if x.status == "ok" else np.nan for x in evaluated])
    best = np.fmin.accumulate(np.where(np.isnan(e), np.inf, e)) if len(e) else e
    out["best_e_above_hull_so_far"] = [None if not np.isfinite(b) else round(float(b), 4) for b in best]
    fe = np.array([x.formation_energy if x.status == "ok" else np.nan for x in evaluated])
    out["median_formation_energy"] = float(np.nanmedian(fe)) if np.isfinite(fe).any() else None
    out["sun"] = sun_counts(evaluated, reference)
    return out


def _tkey(t: float) -> str:
    return "ehull_le_" + (f"{t:g}".replace(".", "p").replace("-", "m"))


def bootstrap_rate(hits: Sequence[int], calls: Sequence[int], *, n_boot: int = 5000, seed: int = 0
                   ) -> tuple[float, float, float]:
    """(rate, low, high): hits per 100 calls pooled over seeds, 95 % percentile bootstrap over seeds."""
    h = np.asarray(hits, dtype=float)
    c = np.asarray(calls, dtype=float)
    rate = 100.0 * h.sum() / max(c.sum(), 1.0)
    if len(h) < 2:
        return rate, rate, rate
    idx = np.random.default_rng(seed).integers(0, len(h), size=(n_boot, len(h)))
    boots = 100.0 * h[idx].sum(axis=1) / np.maximum(c[idx].sum(axis=1), 1.0)
    return rate, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def bootstrap_ratio(h1: Sequence[int], c1: Sequence[int], h2: Sequence[int], c2: Sequence[int], *,
                    n_boot: int = 5000, seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """Ratio of pooled hits-per-call of strategy 1 over strategy 2 with a paired bootstrap over seeds.

    ``None`` where strategy 2 found nothing (the ratio is unbounded)."""
    a, b, ca, cb = (np.asarray(x, dtype=float) for x in (h1, h2, c1, c2))

    def ratio(ix: np.ndarray) -> float:
        den = b[ix].sum() / cb[ix].sum()
        return float("inf") if den == 0 else float((a[ix].sum() / ca[ix].sum()) / den)

    point = ratio(np.arange(len(a)))
    if not math.isfinite(point):
        return None, None, None
    if len(a) < 2:
        return point, point, point
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    boots = np.array([ratio(ix) for ix in idx])
    finite = boots[np.isfinite(boots)]
    hi: float | None = float(np.percentile(boots, 97.5)) if np.isfinite(boots).mean() >= 0.975 else None
    lo: float | None = float(np.percentile(finite, 2.5)) if len(finite) else None
    return point, lo, hi


def bootstrap_difference(h1: Sequence[int], c1: Sequence[int], h2: Sequence[int], c2: Sequence[int], *,
                         n_boot: int = 5000, seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high): pooled hits per 100 calls of strategy 1 minus strategy 2, with a paired
    95 % percentile bootstrap over seeds (the same resampled seeds for both, as both share each seed's
    round-0 models). Defined also where a strategy found nothing, unlike the ratio."""
    a, b, ca, cb = (np.asarray(x, dtype=float) for x in (h1, h2, c1, c2))

    def diff(ix: np.ndarray) -> np.ndarray:
        return 100.0 * (a[ix].sum(axis=-1) / np.maximum(ca[ix].sum(axis=-1), 1.0)
                        - b[ix].sum(axis=-1) / np.maximum(cb[ix].sum(axis=-1), 1.0))

    point = float(diff(np.arange(len(a))))
    if len(a) < 2:
        return point, point, point
    boots = diff(np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a))))
    return point, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def compare_loop(per_seed: dict[str, list[dict[str, Any]]], *, key: str = "unique_hits_ehull_le_0p1"
                 ) -> dict[str, dict[str, Any]]:
    """The loop against each other strategy: ratio and difference of pooled unique hits per call (``key``),
    with paired bootstrap CIs over seeds, and whether the loop is *clearly* ahead (the difference's 95 %
    CI lies above zero)."""
    out: dict[str, dict[str, Any]] = {}
    if "loop" not in per_seed:
        return out
    loop_h = [r[key] for r in per_seed["loop"]]
    loop_c = [r["oracle_calls"] for r in per_seed["loop"]]
    for name, runs in per_seed.items():
        if name == "loop":
            continue
        h, c = [r[key] for r in runs], [r["oracle_calls"] for r in runs]
        ratio, rlo, rhi = bootstrap_ratio(loop_h, loop_c, h, c)
        d, dlo, dhi = bootstrap_difference(loop_h, loop_c, h, c)
        out[name] = {"ratio": None if ratio is None else round(ratio, 3),
                     "ratio_ci95": [None if rlo is None else round(rlo, 3), None if rhi is None else round(rhi, 3)],
                     "difference_per_100_calls": round(d, 2), "difference_ci95": [round(dlo, 2), round(dhi, 2)],
                     "clearly_more": bool(dlo > 0)}
    return out


def summarize(per_seed: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Pool per-seed metrics: rates with CIs, totals, union diversity, ratio loop vs random."""
    strategies: dict[str, Any] = {}
    for name, runs in per_seed.items():
        calls = [r["oracle_calls"] for r in runs]
        s: dict[str, Any] = {"oracle_calls": sum(calls), "ok": sum(r["ok"] for r in runs)}
        for t in HIT_THRESHOLDS:
            k = _tkey(t)
            hits = [r[f"unique_hits_{k}"] for r in runs]
            rate, lo, hi = bootstrap_rate(hits, calls)
            s[f"unique_hits_{k}"] = sum(hits)
            s[f"unique_hits_{k}_per_seed"] = hits
            s[f"unique_hits_{k}_per_100_calls"] = round(rate, 2)
            s[f"unique_hits_{k}_per_100_calls_ci95"] = [round(lo, 2), round(hi, 2)]
        cov = [r.get("unique_hits_ehull_le_0p1_covered", 0) for r in runs]
        rate, lo, hi = bootstrap_rate(cov, calls)
        s["unique_hits_ehull_le_0p1_covered"] = sum(cov)
        s["unique_hits_ehull_le_0p1_covered_per_100_calls"] = round(rate, 2)
        s["unique_hits_ehull_le_0p1_covered_per_100_calls_ci95"] = [round(lo, 2), round(hi, 2)]
        s["unique_hits_ehull_le_0p1_new_composition"] = sum(r.get("unique_hits_ehull_le_0p1_new_composition", 0)
                                                            for r in runs)
        formulas = sorted({f for r in runs for f in r["hit_formulas"]})
        s["diversity_of_hits"] = {
            "per_seed": [r["diversity"] for r in runs],
            "distinct_formulas_all_seeds": len(formulas),
        }
        s["hit_formulas"] = formulas
        s["best_e_above_hull_so_far"] = [r["best_e_above_hull_so_far"] for r in runs]
        s["cumulative_unique_hits_ehull_le_0p1"] = [r["cumulative_unique_hits_ehull_le_0p1"] for r in runs]
        s["median_formation_energy_per_seed"] = [r["median_formation_energy"] for r in runs]
        if all("sun" in r for r in runs):
            sun = [r["sun"] for r in runs]
            s["sun_counts"] = {k: sum(x[k] for x in sun) for k in sun[0]}
            rate, lo, hi = bootstrap_rate([x["sun"] for x in sun], calls)
            s["sun"], s["sun_per_seed"] = s["sun_counts"]["sun"], [x["sun"] for x in sun]
            s["sun_per_100_calls"], s["sun_per_100_calls_ci95"] = round(rate, 2), [round(lo, 2), round(hi, 2)]
        strategies[name] = s
    out: dict[str, Any] = {"strategies": strategies,
                           "counts": {n: {k: v for k, v in s.items() if k.startswith("unique_hits") and "per_" not in k}
                                      | {"oracle_calls": s["oracle_calls"]} | ({"sun": s["sun"]} if "sun" in s else {})
                                      for n, s in strategies.items()}}
    if "loop" in per_seed and "random" in per_seed:
        for t in HIT_THRESHOLDS:
            k = _tkey(t)
            args = [[r[x] for r in per_seed[n]] for n in ("loop", "random") for x in (f"unique_hits_{k}", "oracle_calls")]
            point, rlo, rhi = bootstrap_ratio(args[0], args[1], args[2], args[3])
            suffix = "" if t == HIT_THRESHOLDS[0] else f"_{k}"
            out[f"ratio_loop_vs_random{suffix}"] = None if point is None else round(point, 3)
            out[f"ratio_loop_vs_random{suffix}_ci95"] = [None if rlo is None else round(rlo, 3), None if rhi is None else round(rhi, 3)]
        args = [[r.get(x, 0) for r in per_seed[n]] for n in ("loop", "random")
                for x in ("unique_hits_ehull_le_0p1_covered", "oracle_calls")]
        point, rlo, rhi = bootstrap_ratio(args[0], args[1], args[2], args[3])
        out["ratio_loop_vs_random_covered"] = None if point is None else round(point, 3)
        out["ratio_loop_vs_random_covered_ci95"] = [None if rlo is None else round(rlo, 3), None if rhi is None else round(rhi, 3)]
        out["ratio_definition"] = ("unique hits per oracle call (E_hull ≤ 0.1 eV/atom; `_ehull_le_0` variant E_hull ≤ 0) of "
                                   "loop / random, pooled over seeds; CI: paired percentile bootstrap over seeds; "
                                   "null when random found none")
    if "loop" in per_seed and len(per_seed) > 1:
        out["loop_vs"] = compare_loop(per_seed)
        out["loop_vs_definition"] = ("loop against each strategy, unique hits with E_hull ≤ 0.1 eV/atom per oracle call "
                                     "pooled over seeds: ratio, difference per 100 calls, paired percentile-bootstrap "
                                     "95 % CIs over seeds; clearly_more: the difference's CI lies above 0")
    return out


def markdown(result: dict[str, Any]) -> str:
    """The benchmark's table (one row per strategy) and the loop-vs-random ratios, as markdown."""
    def ci(v: list[Any]) -> str:
        return f"[{'–' if v[0] is None else v[0]}, {'unbounded' if v[1] is None else v[1]}]"

    lines = ["| strategy | oracle calls | ok | unique hits E_hull ≤ 0.1 | per 100 calls (95 % CI) | unique hits E_hull ≤ 0 "
             "| per 100 calls (95 % CI) | hits ≤ 0.1 in covered systems | per 100 calls (95 % CI) | distinct hit formulas "
             "| hits ≤ 0.1 with a formula new to the reference |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in result["strategies"].items():
        lines.append(
            f"| {name} | {s['oracle_calls']} | {s['ok']} | {s['unique_hits_ehull_le_0p1']} "
            f"({'+'.join(map(str, s['unique_hits_ehull_le_0p1_per_seed']))}) | {s['unique_hits_ehull_le_0p1_per_100_calls']} "
            f"{ci(s['unique_hits_ehull_le_0p1_per_100_calls_ci95'])} | {s['unique_hits_ehull_le_0']} | "
            f"{s['unique_hits_ehull_le_0_per_100_calls']} {ci(s['unique_hits_ehull_le_0_per_100_calls_ci95'])} | "
            f"{s.get('unique_hits_ehull_le_0p1_covered', '–')} | {s.get('unique_hits_ehull_le_0p1_covered_per_100_calls', '–')} "
            f"{ci(s.get('unique_hits_ehull_le_0p1_covered_per_100_calls_ci95', ['–', '–']))} | "
            f"{s['diversity_of_hits']['distinct_formulas_all_seeds']} | {s.get('unique_hits_ehull_le_0p1_new_composition', '–')} |")
    lines.append("")
    for key, label in (("ratio_loop_vs_random", "E_hull ≤ 0.1"), ("ratio_loop_vs_random_ehull_le_0", "E_hull ≤ 0"),
                       ("ratio_loop_vs_random_covered", "E_hull ≤ 0.1, covered systems")):
        if key in result:
            value = "undefined (random found no unique hit)" if result[key] is None else result[key]
            lines.append(f"- loop / random, unique hits per oracle call ({label}): **{value}** "
                         f"(95 % CI {ci(result[key + '_ci95'])})")
    for name, c in result.get("loop_vs", {}).items():
        ratio = "undefined" if c["ratio"] is None else c["ratio"]
        lines.append(f"- loop − {name}, unique hits (E_hull ≤ 0.1) per 100 calls: **{c['difference_per_100_calls']:+}** "
                     f"(95 % CI [{c['difference_ci95'][0]}, {c['difference_ci95'][1]}]; ratio {ratio}, CI {ci(c['ratio_ci95'])}); "
                     f"clearly more: {'yes' if c['clearly_more'] else 'no'}")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out: Path) -> Path:
    """Two panels: cumulative unique hits (E_hull ≤ 0.1) and best E_hull so far, against oracle calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(zip(STRATEGIES, ("C3", "C0", "C1", "C2"), strict=True))
    for name, s in summary["strategies"].items():
        for key, ax in (("cumulative_unique_hits_ehull_le_0p1", axes[0]), ("best_e_above_hull_so_far", axes[1])):
            curves = [np.array([np.nan if v is None else v for v in c], dtype=float) for c in s[key]]
            n = min(len(c) for c in curves) if curves else 0
            if not n:
                continue
            x = np.arange(1, n + 1)
            for c in curves:
                ax.plot(np.arange(1, len(c) + 1), c, color=colors.get(name, "k"), alpha=0.25, lw=1)
            ax.plot(x, np.nanmean(np.stack([c[:n] for c in curves]), axis=0), color=colors.get(name, "k"), lw=2, label=name)
    axes[0].set(xlabel="oracle calls", ylabel="unique hits (E_hull ≤ 0.1 eV/atom)", title="cumulative unique hits")
    axes[1].set(xlabel="oracle calls", ylabel="best E_hull so far (eV/atom)", title="best so far")
    axes[0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _save_cache(path: Path, settings: BenchSettings, evaluated: Sequence[Evaluated]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"crystal": {"space_group": e.crystal.space_group, "counts": e.crystal.counts, "lattice": list(e.crystal.lattice),
                         "id": e.crystal.id},
             "status": e.status, "e_above_hull": e.e_above_hull, "formation_energy": e.formation_energy,
             "relaxed_cif": e.relaxed_cif} for e in evaluated]
    path.write_text(json.dumps({"settings": asdict(settings), "evaluated": rows}))


def _load_cache(path: Path, settings: BenchSettings) -> list[Evaluated] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    # seed s of a baseline is the same run whatever K, the other strategies and the loop's label weight (the
    # baselines use the loop's round-0 proxy and generator, fitted before any oracle label exists)
    skip = ("seeds", "strategies", "oracle_weight")
    want = {k: v for k, v in json.loads(json.dumps(asdict(settings))).items() if k not in skip}
    # settings added later (absent from older caches) had their default then
    cached = json.loads(json.dumps(asdict(BenchSettings()))) | data.get("settings", {})
    if {k: v for k, v in cached.items() if k not in skip} != want:
        return None
    out = []
    for r in data["evaluated"]:
        c, lat = r["crystal"], r["crystal"]["lattice"]
        crystal = Crystal(c["space_group"], c["counts"], lat[0], lat[1], lat[2], lat[3], lat[4], lat[5], id=c["id"])
        out.append(Evaluated(crystal, r["status"], float(r["e_above_hull"]), float(r["formation_energy"]), r["relaxed_cif"]))
    return out


def _bind(report: Callable[[str, int, int], None], desc: str) -> Callable[[int, int], None]:
    return lambda done, total: report(desc, done, total)


# -- driver ----------------------------------------------------------------------------------------------
def run_benchmark(settings: BenchSettings, out_dir: Path, *,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run every strategy for every seed; write ``results.json``, ``evaluated.jsonl`` and ``discovery.png``
    under ``out_dir``; return the summary (what ``matloop bench discovery --json`` prints)."""
    from oracles.chgnet import CHGNetOracle
    from orchestration.campaign.context import campaign_for, release, round_seed
    from orchestration.campaign.data import seed_keys

    t_start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    per_seed: dict[str, list[dict[str, Any]]] = {s: [] for s in settings.strategies}
    timings: dict[str, float] = {s: 0.0 for s in settings.strategies}
    rows: list[dict[str, Any]] = []
    report = progress or (lambda _d, _i, _n: None)
    oracle = CHGNetOracle(workers=settings.workers, fmax=settings.fmax, steps=settings.steps,
                          timeout_s=settings.oracle_timeout_s, device=settings.device, reference=settings.reference)
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
            oseed = round_seed(seed, 0)
            pool_n = settings.rounds * settings.candidates_per_round
            for name in settings.strategies:
                if name == "loop":
                    continue
                cache = out_dir / "cache" / f"{name}-s{seed}.json"
                cached = _load_cache(cache, settings)
                if cached is not None:  # a re-run with the same settings reuses finished strategies
                    runs[name] = cached
                    continue
                t0 = time.perf_counter()
                if name == "random":
                    chosen = random_candidates(settings, seed, settings.budget, known)
                elif name == "random_proxy":
                    pool = random_candidates(settings, seed + 1000, pool_n, known)
                    chosen = scored_selection(config_path, pool, settings.budget, seed)
                else:
                    pool = gfn_once_candidates(config_path, settings, seed, known)
                    chosen = scored_selection(config_path, pool, settings.budget, seed)
                runs[name] = evaluate(oracle, chosen, oseed, _bind(report, f"seed {seed}: {name}"))
                timings[name] += time.perf_counter() - t0
                _save_cache(cache, settings, runs[name])
            for name in settings.strategies:
                per_seed[name].append(strategy_metrics(runs[name], settings.reference))
                for i, e in enumerate(runs[name]):
                    rows.append({"strategy": name, "seed": seed, "call": i, "id": e.crystal.id,
                                 "space_group": e.crystal.space_group, "composition": e.crystal.formula,
                                 "lattice": list(e.crystal.lattice), "status": e.status,
                                 "e_above_hull": None if math.isnan(e.e_above_hull) else e.e_above_hull,
                                 "formation_energy_per_atom": None if math.isnan(e.formation_energy) else e.formation_energy})
    finally:
        oracle.close()
    summary = summarize(per_seed)
    result = {
        "benchmark": "discovery",
        "budget_per_strategy_per_seed": settings.budget,
        "seeds": settings.seeds,
        "settings": asdict(settings),
        "oracle": f"chgnet relax (fmax {settings.fmax} eV/Å, ≤ {settings.steps} steps), hull reference {settings.reference}",
        "objective": ("predicted distance to the reference hull (acquisition.relative_to_hull)" if settings.relative_to_hull
                      else "predicted formation energy"),
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
