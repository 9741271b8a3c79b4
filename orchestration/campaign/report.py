"""After the oracle: round metrics, the batch table, CIFs of hits, plots, and logging to MLflow.

Everything here is derived from the store, so it can be recomputed after a crash. Tracking
failures never raise (see :mod:`orchestration.tracking`); a failing plot is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from discovery.crystal import Crystal, write_crystal_table
from orchestration.campaign import faults
from orchestration.campaign.context import Campaign
from orchestration.campaign.sun import label_campaign, round_report, sun_metrics
from orchestration.config import Target
from orchestration.store import ResultRecord
from orchestration.urls import mask_url

log = logging.getLogger("matloop.campaign")
CAMPAIGN_METRICS: tuple[str, ...] = ("best_so_far", "cumulative_unique_hits", "oracle_calls_total", "hit_rate",
                                     "cumulative_sun", "cumulative_stable", "cumulative_novel", "cumulative_unique",
                                     "cumulative_zero_dimensional_hits")
"""Round metrics also logged, per round, to the campaign's parent MLflow run."""


def primary_target(camp: Campaign) -> Target:
    """The first oracle-labelled target (the one 'best so far' and the plots follow)."""
    return next((t for t in camp.config.targets if t.source == "oracle"), camp.config.targets[0])


def _better(target: Target, a: float, b: float) -> bool:
    if target.goal == "maximize":
        return a > b
    if target.goal == "minimize":
        return a < b
    v = float(target.value or 0.0)
    return abs(a - v) < abs(b - v)


def _value(r: ResultRecord, name: str) -> float:
    v = r.targets.get(name) if r.status == "ok" else None
    return float(v) if v is not None and math.isfinite(v) else float("nan")


def best_result(camp: Campaign, results: list[ResultRecord]) -> ResultRecord | None:
    t = primary_target(camp)
    best: ResultRecord | None = None
    for r in results:
        v = _value(r, t.name)
        if not math.isnan(v) and (best is None or _better(t, v, _value(best, t.name))):
            best = r
    return best


def unique_hits(camp: Campaign, results: list[ResultRecord]) -> list[ResultRecord]:
    """Hits (success criterion on ok results), minus structures StructureMatcher finds equal after relaxation."""
    hits = [r for r in results if camp.config.success.is_hit(r.targets, status=r.status)]
    with_cif = [r for r in hits if r.relaxed_cif]
    if not with_cif:
        return hits
    from pymatgen.core import Structure

    from discovery.selection import unique_structures

    with warnings.catch_warnings():  # "fractional coordinates rounded", harmless and once per CIF
        warnings.simplefilter("ignore", UserWarning)
        structures = [Structure.from_str(r.relaxed_cif or "", fmt="cif") for r in with_cif]
    keep = set(unique_structures(structures))
    return [r for i, r in enumerate(with_cif) if i in keep] + [r for r in hits if not r.relaxed_cif]


def round_metrics(camp: Campaign, round_index: int) -> dict[str, float]:
    """Oracle success rate, hit rate, best so far, cumulative calls and unique hits after this round."""
    everything = [r for r in camp.store.results(camp.name) if r.round_index <= round_index]
    batch = [r for r in everything if r.round_index == round_index]
    n = max(1, len(batch))
    t = primary_target(camp)
    best = best_result(camp, everything)
    batch_values = [_value(r, t.name) for r in batch]
    finite = [v for v in batch_values if not math.isnan(v)]
    out = {
        "oracle_calls_round": float(len(batch)),
        "oracle_calls_total": float(len(everything)),
        "oracle_success_rate": sum(r.status == "ok" for r in batch) / n,
        "hits_round": float(sum(camp.config.success.is_hit(r.targets, status=r.status) for r in batch)),
        "cumulative_unique_hits": float(len(unique_hits(camp, everything))),
        "best_so_far": _value(best, t.name) if best is not None else float("nan"),
        f"batch_{t.name}_mean": float(np.mean(finite)) if finite else float("nan"),
        "oracle_wall_s_mean": float(np.mean([r.wall_s or 0.0 for r in batch])) if batch else 0.0,
    }
    out["hit_rate"] = out["hits_round"] / n
    return out


def _plots(camp: Campaign, round_index: int, results: list[ResultRecord], out: Path) -> list[Path]:
    from orchestration import plots

    t = primary_target(camp)
    paths: list[Path] = []
    by_round: dict[int, list[float]] = {}
    for r in results:
        by_round.setdefault(r.round_index, []).append(_value(r, t.name))
    try:
        paths.append(plots.property_distributions(by_round, target=t.name, out=out / f"{t.name}_by_round.png"))
        paths.append(plots.best_so_far([_value(r, t.name) for r in results], target=t.name,
                                       maximize=t.goal == "maximize", out=out / "best_so_far.png"))
        fe = [(r, float(v)) for r in results if r.status == "ok"
              and (v := r.targets.get("formation_energy_per_atom")) is not None]
        if fe:
            crystals = {c.id: c for c in camp.store.crystals(camp.name, [r.candidate_id for r, _ in fe])}
            systems: dict[tuple[str, ...], int] = {}
            for r, _ in fe:
                key = tuple(sorted(crystals[r.candidate_id].counts))
                if 2 <= len(key) <= 3:
                    systems[key] = systems.get(key, 0) + 1
            if systems:
                chem = max(sorted(systems), key=lambda k: systems[k])
                pts = [(dict(crystals[r.candidate_id].counts), float(v)) for r, v in fe]
                hull = plots.hull(pts, elements=chem, out=out / f"hull_{'-'.join(chem)}.png")
                if hull is not None:
                    paths.append(hull)
    except Exception as exc:  # a plot must never stop a round
        log.warning("plotting round %d failed: %s", round_index, exc)
    return paths


def write_round_files(camp: Campaign, round_index: int) -> Path:
    """``rounds/round-NNN/``: batch.csv (crystal table with results and S.U.N. labels), sun.json (counts and
    labels), hits/*.cif, plots/*.png."""
    d = camp.round_dir(round_index)
    table: list[Crystal] = camp.store.table(camp.name, round_index=round_index)
    write_crystal_table(table, d / "batch.csv")
    (d / "sun.json").write_text(json.dumps(round_report(camp.store, camp.config, round_index), indent=1))
    results = [r for r in camp.store.results(camp.name) if r.round_index <= round_index]
    hits_dir = d / "hits"
    for r in results:
        if r.round_index == round_index and r.relaxed_cif and camp.config.success.is_hit(r.targets, status=r.status):
            hits_dir.mkdir(exist_ok=True)
            (hits_dir / f"{r.candidate_id}.cif").write_text(r.relaxed_cif)
    _plots(camp, round_index, results, d / "plots")
    return d


def top_markdown(camp: Campaign, round_index: int, *, run_link: str | None, limit: int = 10) -> str:
    """Markdown summary of a round for the Prefect artifact: metrics and the best candidates."""
    t = primary_target(camp)
    rec = camp.store.get_round(camp.name, round_index)
    rows = [c for c in camp.store.table(camp.name, round_index=round_index)]
    rows.sort(key=lambda c: (not isinstance(c.extra.get(t.name), float), c.extra.get(t.name) or 0.0),
              reverse=t.goal == "maximize")
    lines = [f"# {camp.name}: round {round_index}", ""]
    lines.append(f"MLflow run: {run_link}" if run_link else "MLflow run: (tracking off or unavailable)")
    m = rec.metrics
    lines += ["", "| metric | value |", "|---|---|"]
    for k in ("hit_rate", "oracle_success_rate", "best_so_far", "cumulative_unique_hits", "cumulative_sun",
              "cumulative_stable", "cumulative_novel", "cumulative_unique", "cumulative_zero_dimensional_hits",
              "oracle_calls_total",
              "batch_distinct_space_groups", "batch_distinct_compositions"):
        if k in m:
            lines.append(f"| {k} | {m[k]:.4g} |")
    lines += ["", f"| id | formula | space group (sampled → relaxed) | dim | status | {t.name} | hit | S.U.N. |",
              "|---|---|---|---|---|---|---|---|"]
    for c in rows[:limit]:
        v = c.extra.get(t.name)
        floats = {k: x for k, x in c.extra.items() if isinstance(x, float)}
        hit = camp.config.success.is_hit(floats, status=str(c.extra.get("status")))
        shown = f"{v:.4g}" if isinstance(v, float) else "—"
        relaxed, dim = c.extra.get("relaxed_space_group"), c.extra.get("dimensionality")
        sg = f"{c.space_group} → {relaxed}" if relaxed is not None else str(c.space_group)
        lines.append(f"| {c.id} | {c.reduced_formula()} | {sg} | {'' if dim is None else dim} | {c.extra.get('status')} "
                     f"| {shown} | {'yes' if hit else ''} | {sun_flags(c.extra)} |")
    return "\n".join(lines)


def sun_flags(extra: dict[str, object]) -> str:
    """Short S.U.N. label text of a table row: ``S.U.N.`` or which of stable/unique/novel hold (``s·u·n``)."""
    if extra.get("converged") is None:
        return ""
    if extra.get("sun"):
        return "S.U.N."
    flags = [f for f, k in (("s", "stable"), ("u", "unique"), ("n", "novel_structure")) if extra.get(k)]
    zero = " 0-D" if extra.get("dimensionality") == 0 else ""
    return ("·".join(flags) or "–") + zero


def log_round(camp: Campaign, round_index: int) -> dict[str, Any]:
    """Metrics into the store, files into the round dir, and everything into the round's MLflow run."""
    t0 = time.perf_counter()
    label_campaign(camp.store, camp.config)  # every stored result without labels (a resumed round's too)
    faults.point("labelled")
    metrics = {**round_metrics(camp, round_index), **sun_metrics(camp.store, camp.name, round_index),
               "t_labels_s": time.perf_counter() - t0}
    camp.store.advance_round(camp.name, round_index, "evaluated", metrics=metrics)
    d = write_round_files(camp, round_index)
    tracker = camp.tracker
    run_id = tracker.start_round(round_index, params={"round": round_index, "seed": camp.seed_for(round_index)})
    rec = camp.store.get_round(camp.name, round_index)
    all_metrics = {**rec.metrics, **metrics}
    tracker.log_metrics(all_metrics, step=round_index)
    tracker.log_metrics({k: all_metrics[k] for k in CAMPAIGN_METRICS if k in all_metrics}, step=round_index, run="campaign")
    tracker.log_artifact(d / "batch.csv")
    tracker.log_artifact(d / "sun.json")
    for sub in ("hits", "plots"):
        if (d / sub).is_dir():
            tracker.log_artifact(d / sub, artifact_path=sub)
    for kind, version in (("proxy", rec.proxy_version), ("generator", rec.generator_version)):
        if version is None:
            continue
        uri = tracker.log_model(kind, camp.model_dir(kind, round_index), round_index=round_index)
        if uri:
            camp.store.add_model(camp.name, kind, round_index=round_index,  # type: ignore[arg-type]
                                 path=camp.model_dir(kind, round_index), mlflow_uri=uri)
    link = tracker.run_url(run_id) or (f"{mask_url(tracker.uri)} (run {run_id})" if run_id else None)
    metrics["t_log_s"] = time.perf_counter() - t0
    faults.point("logged")
    camp.store.advance_round(camp.name, round_index, "logged", metrics={"t_log_s": metrics["t_log_s"]},
                             mlflow_run_id=run_id)
    return {"run_id": run_id, "link": link, "markdown": top_markdown(camp, round_index, run_link=link)}
