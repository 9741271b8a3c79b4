"""After the oracle: round metrics, the batch table, CIFs of hits, plots, and logging to MLflow.

Everything here is derived from the store, so it can be recomputed after a crash. Tracking
failures never raise (see :mod:`orchestration.tracking`); a failing plot is skipped with a warning.

In MLflow the campaign's parent run gets, per round (step = round index), the metrics of
:data:`CAMPAIGN_METRICS` (charts in the UI) and the table ``hits.json`` of every hit so far, with
links to its CIF, picture and text in the round run that found it; each round run gets all round
metrics, ``batch.csv``, ``sun.json``, ``hits/`` (``<id>.cif``, ``<id>.png``, ``<id>.txt``), ``plots/``
and the round's proxy and generator as ``pyfunc`` models.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from discovery.crystal import Crystal, write_crystal_table
from orchestration.campaign import faults
from orchestration.campaign.context import Campaign
from orchestration.campaign.sun import label_campaign, round_report, sun_metrics
from orchestration.config import Target
from orchestration.store import ResultRecord

log = logging.getLogger("matloop.campaign")
CAMPAIGN_METRICS: tuple[str, ...] = ("best_so_far", "cumulative_sun", "cumulative_unique_hits", "cumulative_stable",
                                     "cumulative_novel", "cumulative_unique", "cumulative_zero_dimensional_hits",
                                     "hits_round", "hit_rate", "proxy_error_batch", "oracle_calls_round",
                                     "oracle_calls_total", "oracle_success_rate", "t_oracle_s", "t_round_steps_s")
"""Round metrics also logged, per round (step = round index), to the campaign's parent MLflow run (with every
``proxy_error_batch_<target>``)."""
ROUND_TIMES: tuple[str, ...] = ("t_proxy_s", "t_generator_s", "t_sample_s", "t_select_s", "t_oracle_s", "t_labels_s")
"""The step times summed into ``t_round_steps_s`` (time per round): each is the elapsed time of one step, and the
steps run one after another (``t_oracle_s``, recorded by the flow, is the elapsed time of the whole batch, however
many candidates ran at once, summed over the runs of a resumed round). The flow's own ``t_round_s`` (round run only)
is the wall time of the last process that ran the round."""
HITS_TABLE = "hits.json"
MODEL_METRIC = {"generator": ("hit_rate", "max")}
"""How a round's generator is ranked for ``champion``: the hit rate of the batch it proposed (oracle-checked). A
proxy is ranked by its validation MAE on the primary target (``proxy_mae_<target>``, lower is better)."""


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
    out.update(proxy_errors(camp, round_index))
    return out


def proxy_errors(camp: Campaign, round_index: int) -> dict[str, float]:
    """Mean absolute error of the proxy's prediction, made before labelling (``pred_<target>_mean``), against
    the oracle's labels of the round's batch: ``proxy_error_batch_<target>`` per oracle target, and
    ``proxy_error_batch`` for the primary target. Targets without a finite pair are left out."""
    rows = camp.store.table(camp.name, round_index=round_index)
    primary = primary_target(camp).name
    out: dict[str, float] = {}
    for t in camp.config.targets:
        errors = []
        for c in rows:
            pred, label = c.extra.get(f"pred_{t.name}_mean"), c.extra.get(t.name)
            if c.extra.get("status") == "ok" and _finite(pred) and _finite(label):
                errors.append(abs(float(pred) - float(label)))
        if errors:
            out[f"proxy_error_batch_{t.name}"] = float(np.mean(errors))
            if t.name == primary:
                out["proxy_error_batch"] = out[f"proxy_error_batch_{t.name}"]
    return out


def round_time(metrics: dict[str, float]) -> float:
    """``t_round_steps_s``: the round's step times (:data:`ROUND_TIMES`) summed."""
    return float(sum(metrics.get(k, 0.0) for k in ROUND_TIMES if _finite(metrics.get(k, 0.0))))


def _finite(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and math.isfinite(v)


def hull_reference(camp: Campaign, results: list[ResultRecord]) -> str:
    """The name of the hull reference the oracle judged ``e_above_hull`` against (its provenance), else the
    oracle setting, else :data:`oracles.reference.DEFAULT_REFERENCE`."""
    from oracles.reference import DEFAULT_REFERENCE

    for r in results:
        ref = r.provenance.get("reference") or (r.provenance.get("settings") or {}).get("reference")
        if isinstance(ref, str) and ref:
            return ref
    return str(camp.config.oracle.settings.get("reference") or DEFAULT_REFERENCE)


def _binary_hulls(camp: Campaign, fe: list[tuple[ResultRecord, float]], reference: str, out: Path,
                  *, limit: int = 2) -> list[Path]:
    """The reference hull of the campaign's ``limit`` most sampled binary systems, with its candidates."""
    from pymatgen.core import Composition

    from oracles.reference import load_reference
    from orchestration import plots

    crystals = {c.id: c for c in camp.store.crystals(camp.name, [r.candidate_id for r, _ in fe])}
    by_system: dict[tuple[str, str], list[tuple[ResultRecord, float]]] = {}
    for r, v in fe:
        c = crystals.get(r.candidate_id)
        if c is not None and len(c.counts) == 2 and math.isfinite(v):
            by_system.setdefault(tuple(sorted(c.counts)), []).append((r, v))  # type: ignore[arg-type]
    if not by_system:
        return []
    ref = load_reference(reference)  # type: ignore[arg-type]
    paths = []
    for system in sorted(by_system, key=lambda k: (-len(by_system[k]), k))[:limit]:
        a, b = system
        diagram = ref.phase_diagram(frozenset(system))
        hull_line = [(e.composition.get_atomic_fraction(b), diagram.get_form_energy_per_atom(e))
                     for e in diagram.stable_entries]
        ref_points = [(e.composition.get_atomic_fraction(b), e.e_form) for e in ref.system_entries(frozenset(system))
                      if len(e.composition.elements) == 2]
        by_round: dict[int, list[tuple[float, float]]] = {}
        for r, v in by_system[system]:
            x = Composition(crystals[r.candidate_id].counts).get_atomic_fraction(b)
            by_round.setdefault(r.round_index, []).append((x, v))
        paths.append(plots.binary_hull((a, b), hull_line=hull_line, reference_points=ref_points,
                                       points_by_round=by_round, reference=reference, out=out / f"hull_{a}-{b}.png"))
    return paths


def _plots(camp: Campaign, round_index: int, results: list[ResultRecord], out: Path) -> list[Path]:
    """Property histograms, best so far, energies above the reference hull per round, and the reference hull
    of the most sampled binary systems with the campaign's candidates (each plot on its own: one failing is
    skipped with a warning)."""
    from orchestration import plots
    from orchestration.campaign.sun import sun_settings

    t = primary_target(camp)
    paths: list[Path] = []
    by_round: dict[int, list[float]] = {}
    for r in results:
        by_round.setdefault(r.round_index, []).append(_value(r, t.name))
    reference = hull_reference(camp, results)
    e_hull: dict[int, list[float]] = {}
    for r in results:
        if r.status == "ok" and _finite(r.targets.get("e_above_hull")):
            e_hull.setdefault(r.round_index, []).append(float(r.targets["e_above_hull"]))
    fe = [(r, float(v)) for r in results if r.status == "ok"
          and (v := r.targets.get("formation_energy_per_atom")) is not None]
    jobs: list[tuple[str, Any]] = [
        ("property", lambda: [plots.property_distributions(by_round, target=t.name, out=out / f"{t.name}_by_round.png")]),
        ("best so far", lambda: [plots.best_so_far([_value(r, t.name) for r in results], target=t.name,
                                                   maximize=t.goal == "maximize", out=out / "best_so_far.png")]),
        ("e_above_hull", lambda: [plots.e_above_hull_by_round(
            e_hull, reference=reference, stable_at_most=sun_settings(camp.config).stable_at_most,
            out=out / "e_above_hull_by_round.png")] if e_hull else []),
        ("reference hull", lambda: _binary_hulls(camp, fe, reference, out) if fe else []),
    ]
    for what, job in jobs:
        try:
            paths += job()
        except Exception as exc:  # a plot must never stop a round
            log.warning("plotting round %d (%s) failed: %s", round_index, what, exc)
    return paths


def structure_previews(cif: str, *, candidate_id: str, out_dir: Path) -> list[Path]:
    """Beside ``<id>.cif``: ``<id>.png`` (three views of the cell) and ``<id>.txt`` (formula, space group,
    lattice, sites and the CIF), both shown by MLflow's artifact viewer (a .cif is not)."""
    import warnings as _warnings

    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from orchestration import plots

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        s = Structure.from_str(cif, fmt="cif")
        try:
            sg = SpacegroupAnalyzer(s, symprec=0.1).get_space_group_symbol()
        except Exception:
            sg = "?"
    title = f"{candidate_id}: {s.composition.reduced_formula} ({sg}), {len(s)} atoms"
    text = out_dir / f"{candidate_id}.txt"
    text.write_text(f"{title}\n\n{s}\n\n--- CIF ---\n{cif}")
    paths = [text]
    try:
        paths.append(plots.structure(cif, title=title, out=out_dir / f"{candidate_id}.png"))
    except Exception as exc:
        log.warning("picture of %s failed: %s", candidate_id, exc)
    return paths


def write_round_files(camp: Campaign, round_index: int) -> Path:
    """``rounds/round-NNN/``: batch.csv (crystal table with results and S.U.N. labels), sun.json (counts and
    labels), hits/<id>.cif with <id>.png and <id>.txt previews, plots/*.png."""
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
            try:
                structure_previews(r.relaxed_cif, candidate_id=r.candidate_id, out_dir=hits_dir)
            except Exception as exc:  # a preview must never stop a round
                log.warning("preview of %s failed: %s", r.candidate_id, exc)
    _plots(camp, round_index, results, d / "plots")
    return d


def top_markdown(camp: Campaign, round_index: int, *, run_link: str | None, campaign_link: str | None = None,
                 limit: int = 10) -> str:
    """Markdown summary of a round for the Prefect artifact: links to the MLflow runs (URLs with a tracking
    server, else the run ids and how to open them), metrics and the best candidates."""
    t = primary_target(camp)
    rec = camp.store.get_round(camp.name, round_index)
    rows = [c for c in camp.store.table(camp.name, round_index=round_index)]
    rows.sort(key=lambda c: (not isinstance(c.extra.get(t.name), float), c.extra.get(t.name) or 0.0),
              reverse=t.goal == "maximize")
    lines = [f"# {camp.name}: round {round_index}", ""]
    lines.append(f"MLflow round run: {_md_link(run_link)}" if run_link else "MLflow run: (tracking off or unavailable)")
    if campaign_link:
        lines += ["", f"MLflow campaign run (per-round charts, table of hits): {_md_link(campaign_link)}"]
    m = rec.metrics
    lines += ["", "| metric | value |", "|---|---|"]
    for k in ("hit_rate", "oracle_success_rate", "best_so_far", "cumulative_unique_hits", "cumulative_sun",
              "cumulative_stable", "cumulative_novel", "cumulative_unique", "cumulative_zero_dimensional_hits",
              "proxy_error_batch", "oracle_calls_total", "t_round_steps_s",
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


def _md_link(link: str) -> str:
    """A leading URL of ``link`` as a Markdown link (the rest stays text)."""
    url, _, rest = link.partition(" ")
    return f"[{url}]({url}){' ' + rest if rest else ''}" if url.startswith(("http://", "https://")) else link


def hits_table(camp: Campaign, round_index: int, *, artifact_uri: str | None, run_id: str | None) -> Any:
    """The round's hits as rows of the campaign's hit table (a DataFrame): id, round, formula, space groups,
    the primary target, E_hull, S.U.N. flags, and where its structure is (``cif``/``picture``/``text``: artifact
    URIs in the round run ``round_run_id``; ``local_cif``: the file in the campaign directory)."""
    import pandas as pd

    t = primary_target(camp)
    hits_dir = camp.round_dir(round_index) / "hits"
    rows = []
    for c in camp.store.table(camp.name, round_index=round_index):
        floats = {k: x for k, x in c.extra.items() if isinstance(x, float)}
        if not camp.config.success.is_hit(floats, status=str(c.extra.get("status"))):
            continue
        has_cif = (hits_dir / f"{c.id}.cif").exists()
        base = f"{artifact_uri.rstrip('/')}/hits/{c.id}" if artifact_uri else f"hits/{c.id}"
        value, e_hull = c.extra.get(t.name), c.extra.get("e_above_hull")
        rows.append({
            "id": c.id, "round": round_index, "formula": c.reduced_formula(), "space_group": c.space_group,
            "relaxed_space_group": c.extra.get("relaxed_space_group"),
            t.name: float(value) if _finite(value) else None,
            "e_above_hull": float(e_hull) if _finite(e_hull) else None,
            "sun": sun_flags(c.extra), "cif": f"{base}.cif" if has_cif else None,
            "picture": f"{base}.png" if (hits_dir / f"{c.id}.png").exists() else None,
            "text": f"{base}.txt" if (hits_dir / f"{c.id}.txt").exists() else None,
            "round_run_id": run_id, "local_cif": str(hits_dir / f"{c.id}.cif") if has_cif else None,
        })
    return pd.DataFrame(rows)


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
    """Metrics into the store, files into the round dir, and everything into the round's MLflow run; the
    campaign metrics and the new hits into the campaign's parent run."""
    t0 = time.perf_counter()
    label_campaign(camp.store, camp.config)  # every stored result without labels (a resumed round's too)
    faults.point("labelled")
    metrics = {**round_metrics(camp, round_index), **sun_metrics(camp.store, camp.name, round_index),
               "t_labels_s": time.perf_counter() - t0}
    metrics["t_round_steps_s"] = round_time({**camp.store.get_round(camp.name, round_index).metrics, **metrics})
    camp.store.advance_round(camp.name, round_index, "evaluated", metrics=metrics)
    d = write_round_files(camp, round_index)
    tracker = camp.tracker
    run_id = tracker.start_round(round_index, params={"round": round_index, "seed": camp.seed_for(round_index)})
    rec = camp.store.get_round(camp.name, round_index)
    all_metrics = {**rec.metrics, **metrics}
    tracker.log_metrics(all_metrics, step=round_index)
    tracker.log_metrics({k: v for k, v in all_metrics.items() if k in CAMPAIGN_METRICS or k.startswith("proxy_error_batch_")},
                        step=round_index, run="campaign")
    tracker.log_artifact(d / "batch.csv")
    tracker.log_artifact(d / "sun.json")
    for sub in ("hits", "plots"):
        if (d / sub).is_dir():
            tracker.log_artifact(d / sub, artifact_path=sub)
    if run_id is not None:
        hits = hits_table(camp, round_index, artifact_uri=tracker.artifact_uri("round"), run_id=run_id)
        if len(hits):
            tracker.log_table(hits, HITS_TABLE)
    for kind, version in (("proxy", rec.proxy_version), ("generator", rec.generator_version)):
        if version is None:
            continue
        uri = tracker.log_model(kind, camp.model_dir(kind, round_index), round_index=round_index,  # type: ignore[arg-type]
                                metric=validation_metric(camp, kind, all_metrics))
        if uri:
            camp.store.add_model(camp.name, kind, round_index=round_index,  # type: ignore[arg-type]
                                 path=camp.model_dir(kind, round_index), mlflow_uri=uri)
    link = tracker.run_link(run_id) if run_id else None
    campaign_link = tracker.run_link(tracker.parent_run_id) if tracker.parent_run_id else None
    metrics["t_log_s"] = time.perf_counter() - t0
    faults.point("logged")
    camp.store.advance_round(camp.name, round_index, "logged", metrics={"t_log_s": metrics["t_log_s"]},
                             mlflow_run_id=run_id)
    return {"run_id": run_id, "link": link, "campaign_link": campaign_link,
            "markdown": top_markdown(camp, round_index, run_link=link, campaign_link=campaign_link)}


def validation_metric(camp: Campaign, kind: str, metrics: dict[str, float]) -> tuple[str, float, Any] | None:
    """(name, value, goal) ranking a round's model for the ``champion`` alias (see :data:`MODEL_METRIC`), or None
    when the round has no finite value of it."""
    name, goal = MODEL_METRIC.get(kind) or (f"proxy_mae_{primary_target(camp).name}", "min")
    value = metrics.get(name)
    return (name, float(value), goal) if value is not None and math.isfinite(value) else None
