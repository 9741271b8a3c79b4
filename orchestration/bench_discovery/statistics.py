"""Pooled statistics over seeds: rates with percentile-bootstrap CIs, paired comparisons of the loop with
each baseline, and the summary the report prints (per strategy, and for ``--objective sun`` per round and
per source)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from orchestration.bench_discovery.metrics import _tkey
from orchestration.bench_discovery.settings import HIT_THRESHOLDS


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


def summarize(per_seed: dict[str, list[dict[str, Any]]], *, objective: str = "formation_energy") -> dict[str, Any]:
    """Pool per-seed metrics: rates with CIs, totals, union diversity, ratio loop vs random. With ``objective``
    ``sun`` the loop is compared with each baseline on S.U.N. per 100 calls (``loop_vs``; unique hits move to
    ``loop_vs_unique_hits``) and each strategy gets its S.U.N. summary (:func:`sun_summary`)."""
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
        if all("sun_hits" in r for r in runs):
            s |= sun_summary(runs)
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
    if objective == "sun" and "loop" in per_seed and len(per_seed) > 1:
        out["loop_vs"] = compare_sun(per_seed)
        out["loop_vs_definition"] = ("loop against each strategy, S.U.N. results per oracle call pooled over seeds: "
                                     "ratio, difference per 100 calls, paired percentile-bootstrap 95 % CIs over seeds; "
                                     "clearly_more: the difference's CI lies above 0; distinct_sun_formulas: loop's and "
                                     "the baseline's over all seeds")
        out["loop_vs_unique_hits"] = compare_loop(per_seed)
        if "sun_by_round" in per_seed["loop"][0]:
            out["loop_learning"] = later_vs_first_round(per_seed["loop"])
    elif "loop" in per_seed and len(per_seed) > 1:
        out["loop_vs"] = compare_loop(per_seed)
        out["loop_vs_definition"] = ("loop against each strategy, unique hits with E_hull ≤ 0.1 eV/atom per oracle call "
                                     "pooled over seeds: ratio, difference per 100 calls, paired percentile-bootstrap "
                                     "95 % CIs over seeds; clearly_more: the difference's CI lies above 0")
    return out



# -- S.U.N. ------------------------------------------------------------------------------------------------
def _rate_entry(hits: Sequence[int], calls: Sequence[int]) -> dict[str, Any]:
    rate, lo, hi = bootstrap_rate(hits, calls)
    return {"sun": int(sum(hits)), "calls": int(sum(calls)), "per_100": round(rate, 2),
            "per_100_ci95": [round(lo, 2), round(hi, 2)]}


def pooled_by(runs: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Per group (``key``: ``sun_by_round`` or ``sun_by_source`` of each seed's metrics): S.U.N. results, calls
    and S.U.N. per 100 calls pooled over seeds, with a percentile bootstrap over seeds (a seed without the
    group counts as 0 of 0)."""
    groups = sorted({g for r in runs for g in r[key]}, key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g))
    return {g: _rate_entry([r[key].get(g, [0, 0])[0] for r in runs], [r[key].get(g, [0, 0])[1] for r in runs])
            for g in groups}


def pooled_proxy_error(runs: Sequence[dict[str, Any]], *, field: str = "proxy_error_by_round"
                       ) -> dict[str, dict[str, Any]]:
    """Per round (``field``: or per ``"<round>:<source>"``): the proxy's MAE (eV/atom) on the batch before
    labelling, pooled over seeds (weighted by calls), and per seed (None where a seed has no such call)."""
    rounds = sorted({k for r in runs for k in r.get(field, {})}, key=lambda k: (int(k.split(":")[0]), k))
    out: dict[str, dict[str, Any]] = {}
    for k in rounds:
        cells = [r.get(field, {}).get(k) for r in runs]
        n = sum(c["n"] for c in cells if c)
        out[k] = {"mae": round(sum(c["mae"] * c["n"] for c in cells if c) / n, 4), "n": n,
                  "mae_per_seed": [None if c is None else c["mae"] for c in cells]}
    return out


def sun_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One strategy's S.U.N. summary over seeds: ``sun_per_100`` with its CI, distinct S.U.N. formulas, 0-D hits
    (reported, not S.U.N.), cumulative S.U.N. curves, rates per round and per source, the proxy's error per round."""
    hits, calls = [r["sun_hits"] for r in runs], [r["oracle_calls"] for r in runs]
    rate, lo, hi = bootstrap_rate(hits, calls)
    formulas = sorted({f for r in runs for f in r["sun_formulas"]})
    return {
        "sun_per_100": round(rate, 2), "sun_per_100_ci95": [round(lo, 2), round(hi, 2)],
        "distinct_sun_formulas": len(formulas), "distinct_sun_formulas_per_seed": [len(r["sun_formulas"]) for r in runs],
        "sun_formulas": formulas,
        "zero_dimensional_hits": sum(r["zero_dimensional_hits"] for r in runs),
        "zero_dimensional_formulas": sorted({f for r in runs for f in r["zero_dimensional_formulas"]}),
        "cumulative_sun": [r["cumulative_sun"] for r in runs],
        "sun_by_round": pooled_by(runs, "sun_by_round"),
        "sun_by_source": pooled_by(runs, "sun_by_source"),
        "proxy_error_by_round": pooled_proxy_error(runs),
        "proxy_error_by_round_and_source": pooled_proxy_error(runs, field="proxy_error_by_round_and_source"),
    }


def compare_sun(per_seed: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """:func:`compare_loop` on S.U.N. results per call, with each side's distinct S.U.N. formulas (all seeds)."""
    out = compare_loop(per_seed, key="sun_hits")
    loop = len({f for r in per_seed["loop"] for f in r["sun_formulas"]})
    for name, c in out.items():
        other = len({f for r in per_seed[name] for f in r["sun_formulas"]})
        c["distinct_sun_formulas"] = {"loop": loop, name: other, "ratio": None if other == 0 else round(loop / other, 3)}
    return out


def later_vs_first_round(loop_runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The loop's S.U.N. rate in rounds ≥ 1 against round 0 (pooled over seeds; ratio with a paired
    percentile bootstrap over seeds, None where round 0 found none) and whether the proxy's error on each new
    batch fell round over round (pooled MAE strictly decreasing)."""
    def split(r: dict[str, Any]) -> tuple[int, int, int, int]:
        first = r["sun_by_round"].get("0", [0, 0])
        later = [v for k, v in r["sun_by_round"].items() if k != "0"]
        return sum(v[0] for v in later), sum(v[1] for v in later), first[0], first[1]

    cols = list(zip(*(split(r) for r in loop_runs), strict=True))
    point, lo, hi = bootstrap_ratio(*(list(c) for c in cols)) if sum(cols[1]) and sum(cols[3]) else (None, None, None)
    err = pooled_proxy_error(loop_runs)
    maes = [err[k]["mae"] for k in err]
    return {"sun_per_100_first_round": _rate_entry(list(cols[2]), list(cols[3]))["per_100"],
            "sun_per_100_later_rounds": _rate_entry(list(cols[0]), list(cols[1]))["per_100"],
            "later_vs_first_ratio": None if point is None else round(point, 3),
            "later_vs_first_ratio_ci95": [None if lo is None else round(lo, 3), None if hi is None else round(hi, 3)],
            "proxy_error_falls_every_round": bool(len(maes) > 1 and all(b < a for a, b in pairwise(maes)))}
