"""Round-by-round analysis of a finished loop campaign's store, without oracle calls: every candidate of every
round with its source, prior, pairs, parent, acquisition score and rank, and (for the batch) its oracle result
and S.U.N. label; and a replay of each round's selection on the stored pool and scores under other selection
settings (one score scale for all sources or one per source; with or without the earlier rounds' batches as
diversity context).

    python -m orchestration.bench_discovery.rounds runs/bench-sun/loop-s0 [more campaign dirs] [--json]

With ``--family-weights`` later rounds are replayed with a family bonus; with ``--family-stds`` each later
round's residual proxy is refitted on the stored labels with and without a family offset and scored on the
round's batch (:func:`residual_replay`).

The replay uses :func:`discovery.selection.select_batch` with the round's stored quota and seed; its
``pooled`` / context variant reproduces the stored batch of a campaign run before per-source score scales.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from discovery.crystal import Crystal, parse_composition
from discovery.loop import family_of, residual_family

REPLAY_VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("pooled scale, context", "pooled", True),
    ("pooled scale, no context", "pooled", False),
    ("per-source scale, context", "per_group", True),
    ("per-source scale, no context", "per_group", False),
)
"""(name, ``score_scale`` of select_batch, earlier batches as context)."""


def _connect(campaign_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{campaign_dir / 'store.db'}?mode=ro", uri=True)


def _json(text: object) -> dict[str, Any]:
    return json.loads(text) if isinstance(text, str) else {}


def candidates_frame(campaign_dir: str | Path) -> pd.DataFrame:
    """One row per stored candidate (read-only): round, source, formula, cell, score, proxy mean/std (eV/atom),
    novelty penalty, substitution parent / family (:func:`discovery.loop.family_of`) / family bonus / pairs / prior,
    selected and batch rank, oracle status, E_hull and
    formation energy (eV/atom), S.U.N. label; ``score_rank`` (1 = best) within the round and source and
    ``prior_rank`` within the round's substitutions. Rows in store order."""
    with _connect(Path(campaign_dir)) as con:
        cand = pd.read_sql("select candidate_id, round_index, space_group, composition, reduced_formula, a, b, c, alpha,"
                           " beta, gamma, score, prediction_json, selected, batch_rank, source, origin_json"
                           " from candidates order by id", con)
        res = pd.read_sql("select candidate_id, status, targets_json from oracle_results", con)
        lab = pd.read_sql("select candidate_id, sun from sun_labels", con)
    pred = cand.pop("prediction_json").map(_json)
    cand["mu"] = pred.map(lambda p: p.get("formation_energy_per_atom_mean"))
    cand["sd"] = pred.map(lambda p: p.get("formation_energy_per_atom_std"))
    cand["novelty_penalty"] = pred.map(lambda p: p.get("novelty_penalty", 0.0))
    org = cand.pop("origin_json").map(_json)
    cand["parent"] = org.map(lambda o: o.get("parent"))
    cand["pairs"] = org.map(lambda o: tuple(tuple(x) for x in o.get("substitutions", [])))
    cand["prior"] = org.map(lambda o: o.get("prior"))
    cand["proposal"] = org.map(lambda o: o.get("proposal"))
    links = {cid: str(par) for cid, par in zip(cand.candidate_id, cand.parent, strict=True) if par is not None}
    cand["family"] = [None if par is None else family_of(str(par), links) for par in cand.parent]
    cand["family_bonus"] = pred.map(lambda p: p.get("family_bonus", 0.0))
    targets = res.pop("targets_json").map(_json)
    res["e_hull"] = targets.map(lambda t: t.get("e_above_hull"))
    res["e_form"] = targets.map(lambda t: t.get("formation_energy_per_atom"))
    out = cand.merge(res, on="candidate_id", how="left").merge(lab, on="candidate_id", how="left")
    out["selected"] = out["selected"].astype(bool)
    out["score_rank"] = out.groupby(["round_index", "source"]).score.rank(ascending=False, method="first")
    subs = out.source == "substitution"
    out.loc[subs, "prior_rank"] = out[subs].groupby("round_index").prior.rank(ascending=False, method="first")
    return out


def round_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per round: pool size per source, generator candidates with a proxy σ above 1 eV/atom and the generator
    picks that converged, the pool's best score and the substitutions' share of the pooled [0, 1] score scale,
    the substitution picks' median score rank, how many have a known formula (novelty penalty), their S.U.N.
    count."""
    rows = []
    for r, pool in frame.groupby("round_index"):
        sub = pool[pool.source == "substitution"]
        gen = pool[pool.source == "generator"]
        lo, hi = pool.score.min(), pool.score.max()
        picks = sub[sub.selected]
        rows.append({
            "round": int(r), "pool_generator": len(gen), "pool_substitution": len(sub),
            "generator_sd_over_1": int((gen.sd > 1).sum()),
            "generator_picks_ok": f"{int((gen.selected & (gen.status == 'ok')).sum())}/{int(gen.selected.sum())}",
            "best_score": float(hi), "substitution_scale_share": float((sub.score.max() - sub.score.min()) / (hi - lo))
            if len(sub) and hi > lo else float("nan"),
            "substitution_picks": len(picks), "median_score_rank": float(picks.score_rank.median()) if len(picks) else float("nan"),
            "known_formula_picks": int((picks.novelty_penalty > 0).sum()), "sun": int(picks.sun.fillna(0).sum()),
        })
    return pd.DataFrame(rows)


def _stored_rounds(campaign_dir: Path, frame: pd.DataFrame
                   ) -> Iterator[tuple[int, pd.DataFrame, list[Crystal], dict[str, Any]]]:
    """Per round of ``frame``: its pool, the pool's crystals and the other :func:`discovery.selection.select_batch`
    arguments of its stored batch (batch size, method, diversity, seed, the earlier batches as context, sources as
    groups, the stored quota)."""
    from orchestration.campaign.context import round_seed

    with _connect(campaign_dir) as con:
        config = _json(con.execute("select config_json from campaigns").fetchone()[0])
        metrics = {int(i): _json(m) for i, m in con.execute('select "index", metrics_json from rounds')}
    sel = config.get("selection", {})
    for r, pool in frame.groupby("round_index"):
        m = metrics.get(int(r), {})
        earlier = frame[(frame.round_index < r) & frame.selected].sort_values(["round_index", "batch_rank"])
        yield int(r), pool, [_crystal(x) for x in pool.itertuples()], {
            "batch_size": int(pool.selected.sum()), "method": sel.get("method", "mmr"),
            "diversity": float(sel.get("diversity", 0.5)), "seed": round_seed(int(config.get("seed", 0)), int(r)),
            "context": [_crystal(x) for x in earlier.itertuples()], "groups": pool.source.tolist(),
            "quota": {k[len("quota_"):]: int(v) for k, v in m.items() if k.startswith("quota_")} or None}


def _known_outcomes(picks: pd.DataFrame, outcomes: dict[tuple[str, int], bool] | None) -> list[bool]:
    """S.U.N. labels in ``outcomes`` of those ``picks`` (by reduced formula and space group) that have one."""
    keys = [(f, int(g)) for f, g in zip(picks.reduced_formula, picks.space_group, strict=True)]
    return [outcomes[k] for k in keys if outcomes is not None and k in outcomes]


def replay(campaign_dir: str | Path, frame: pd.DataFrame | None = None,
           outcomes: dict[tuple[str, int], bool] | None = None) -> pd.DataFrame:
    """Each round's selection replayed on its stored pool and scores under :data:`REPLAY_VARIANTS` (the round's
    stored quota, seed, method and diversity). Per round and variant: picks shared with the stored batch, the
    substitution picks' median score rank and known-formula count, and among picks with an outcome in
    ``outcomes`` ((reduced formula, space group) → S.U.N., e.g. pooled over several runs) how many are S.U.N."""
    from discovery.selection import select_batch

    campaign_dir = Path(campaign_dir)
    frame = candidates_frame(campaign_dir) if frame is None else frame
    rows = []
    for r, pool, crystals, args in _stored_rounds(campaign_dir, frame):
        stored = set(pool.candidate_id[pool.selected])
        for name, scale, with_context in REPLAY_VARIANTS:
            chosen = select_batch(crystals, pool.score.to_numpy(float),
                                  **{**args, "context": args["context"] if with_context else []},
                                  score_scale=scale)  # type: ignore[arg-type]
            picks = pool.iloc[chosen]
            sub = picks[picks.source == "substitution"]
            known = _known_outcomes(sub, outcomes)
            rows.append({"round": r, "variant": name, "same_as_stored": len(stored & set(picks.candidate_id)),
                         "substitution_picks": len(sub),
                         "median_score_rank": float(sub.score_rank.median()) if len(sub) else float("nan"),
                         "known_formula_picks": int((sub.novelty_penalty > 0).sum()),
                         "with_outcome": len(known), "sun_of_those": int(sum(known))})
    return pd.DataFrame(rows)


def family_replay(campaign_dir: str | Path, weights: Sequence[float], frame: pd.DataFrame | None = None,
                  outcomes: dict[tuple[str, int], bool] | None = None) -> pd.DataFrame:
    """Rounds ≥ 1 replayed with :func:`discovery.loop.family_bonus` at each of ``weights`` added to the stored
    substitution scores (the campaign's own earlier substitution outcomes give the family rates; the stored
    pool, quota, seed, diversity and earlier batches as context; a pool proposed with family rates is not
    recreated). Per weight: picks shared with the stored batch (all of them at the campaign's own weight),
    substitution picks, how many come from a family with an earlier success, with
    only earlier failures, or from a campaign result, and among picks with an outcome in ``outcomes`` how many
    are S.U.N. Any stored family bonus is taken off first."""
    from discovery.loop import family_bonus
    from discovery.selection import select_batch
    from discovery.substitution import SubstitutionRates

    campaign_dir = Path(campaign_dir)
    frame = candidates_frame(campaign_dir) if frame is None else frame
    rows = []
    for r, pool, crystals, args in _stored_rounds(campaign_dir, frame):
        if r == 0:
            continue
        done = frame[(frame.round_index < r) & frame.status.notna() & (frame.source == "substitution")]
        rates = SubstitutionRates.from_outcomes(
            (pairs, bool(sun == 1), fam) for pairs, sun, fam in zip(done.pairs, done.sun, done.family, strict=True))
        families = [f if s == "substitution" else None for f, s in zip(pool.family, pool.source, strict=True)]
        base = pool.score.to_numpy(float) - pool.family_bonus.fillna(0.0).to_numpy(float)
        for w in weights:
            chosen = select_batch(crystals, base + family_bonus(families, rates, weight=w), **args)
            picks = pool.iloc[chosen]
            sub = picks[picks.source == "substitution"]
            ok = [f in rates.family_successes for f in sub.family]
            failed = [f in rates.family_failures and f not in rates.family_successes for f in sub.family]
            known = _known_outcomes(sub, outcomes)
            rows.append({"round": r, "family_weight": w,
                         "same_as_stored": len(set(picks.candidate_id) & set(pool.candidate_id[pool.selected])),
                         "substitution_picks": len(sub),
                         "family_succeeded": int(sum(ok)), "family_failed_only": int(sum(failed)),
                         "campaign_parent": int(sub.parent.astype(str).isin(set(frame.candidate_id)).sum()),
                         "with_outcome": len(known), "sun_of_those": int(sum(known))})
    return pd.DataFrame(rows)


def residual_replay(campaign_dir: str | Path, family_stds: Sequence[float], frame: pd.DataFrame | None = None
                    ) -> pd.DataFrame:
    """Rounds ≥ 1: the residual proxy refitted on the stored labels of the earlier rounds over the round's stored
    base ensemble, with ``proxy.residual_family_std`` at each of ``family_stds`` (0: no family term), and its
    formation-energy MAE (eV/atom) on the round's converged batch, the error the benchmark reports
    (``stored_mae``: the campaign's own predictions; a replay at the campaign's own setting repeats them). Labels
    and families as the campaign gives them (:func:`orchestration.campaign.candidates.label_families`)."""
    from discovery.datasets.base import LabeledSet
    from discovery.proxy import EnsembleProxy
    from discovery.proxy.residual import ResidualConfig, ResidualProxy

    campaign_dir = Path(campaign_dir)
    frame = candidates_frame(campaign_dir) if frame is None else frame
    target = "formation_energy_per_atom"
    rows = []
    for r in sorted(int(x) for x in frame.round_index.unique() if x > 0):
        done = frame[(frame.round_index < r) & (frame.status == "ok") & frame.e_form.notna()].sort_values("candidate_id")
        batch = frame[(frame.round_index == r) & frame.selected & (frame.status == "ok") & frame.e_form.notna()]
        if not len(done) or not len(batch):
            continue
        labels = LabeledSet([_crystal(x) for x in done.itertuples()], done.e_form.to_numpy(float)[:, None], (target,))
        groups = [residual_family(source=s, family=f, own_id=cid)
                  for f, s, cid in zip(done.family, done.source, done.candidate_id, strict=True)]
        batch_groups = [residual_family(source=s, family=f) for f, s in zip(batch.family, batch.source, strict=True)]
        base = EnsembleProxy.load(campaign_dir / "models" / "proxy" / f"round-{r:03d}" / target)
        crystals = [_crystal(x) for x in batch.itertuples()]
        y = batch.e_form.to_numpy(float)
        row: dict[str, Any] = {"round": r, "labels": len(done), "batch": len(batch),
                               "stored_mae": round(float(np.abs(batch.mu.to_numpy(float) - y).mean()), 4)}
        for std in family_stds:
            proxy = ResidualProxy.fit(base, labels, target=target, config=ResidualConfig(family_prior_std=std),
                                      groups=groups)
            mu = proxy.posterior(crystals, groups=batch_groups).mean[:, 0].double().numpy()
            row[f"mae_family_std_{std:g}"] = round(float(np.abs(mu - y).mean()), 4)
            row[f"fitted_family_std_{std:g}"] = round(float(proxy.info.get("family", 0.0)), 4)
        rows.append(row)
    return pd.DataFrame(rows)


def round0_view(campaign_dir: str | Path, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Where round 0 would have put every substitution pick: its rank among round 0's own proposals (the
    round's seed and Thompson draws, uniform rates, seed parents only, known formulas left out when the campaign
    left them out; NaN when round 0 could not propose it),
    its acquisition score under the round-0 proxy (UCB κ of the config, + the reference hull energy, − the
    known-formula penalty), its rank by that score in round 0's substitution pool and how many of round 0's
    unpicked substitutions score higher (the leftovers a later round could have used)."""
    from discovery.proxy import ucb
    from discovery.proxy.residual import load_proxy
    from discovery.substitution import propose_substitutions, seed_parents
    from orchestration.campaign.context import round_seed
    from orchestration.campaign.steps import hull_energies
    from orchestration.campaign.sun import known_formulas
    from orchestration.config import CampaignConfig, build_search_space

    campaign_dir = Path(campaign_dir)
    frame = candidates_frame(campaign_dir) if frame is None else frame
    with _connect(campaign_dir) as con:
        config = CampaignConfig.model_validate(_json(con.execute("select config_json from campaigns").fetchone()[0]))
    space = build_search_space(config)
    sub_cfg = config.sources.substitution
    near = sub_cfg.near_hull_at_most if sub_cfg is not None else 0.05
    known = known_formulas(config)
    sub = frame[frame.source == "substitution"].copy()
    # campaigns since 2026-12-05 propose no known formula under the novelty penalty; earlier ones did
    novel_only = config.novelty.enabled and config.novelty.known_penalty > 0 and not (
        sub.reduced_formula[sub.round_index == 0].isin(known).any())
    proposals = propose_substitutions(seed_parents(space=space, max_e_above_hull=near), space=space, n=100_000,
                                      seed=round_seed(config.seed, 0) % (2**31), partial=sub_cfg.partial if sub_cfg else True,
                                      exclude_formulas=known if novel_only else ())
    prior_rank = {p.id: i + 1 for i, p in enumerate(proposals)}
    target = config.targets[0].name
    proxy = load_proxy(campaign_dir / "models" / "proxy" / "round-000" / target)
    crystals = [_crystal(x) for x in sub.itertuples()]
    score = ucb(proxy.posterior(crystals), kappa=config.acquisition.kappa, maximize=False,
                max_sd=config.acquisition.max_sd).double().numpy()
    if config.acquisition.relative_to_hull is not None:
        score = score + hull_energies(config.acquisition.relative_to_hull, crystals)
    if config.novelty.enabled:
        score = score - config.novelty.known_penalty * sub.reduced_formula.isin(known).to_numpy(float)
    sub["score0"] = score
    pool0 = sub[sub.round_index == 0]
    left0 = pool0.score0[~pool0.selected].to_numpy()
    picks = sub[sub.selected]
    return pd.DataFrame({
        "round": picks.round_index, "formula": picks.reduced_formula, "parent": picks.parent,
        "prior_rank_round0": picks.proposal.map(lambda x: prior_rank.get(x, np.nan)),
        "score_round0": picks.score0.round(3),
        "rank_in_round0_pool": [int((pool0.score0 > v).sum()) + 1 for v in picks.score0],
        "round0_leftovers_above": [int((left0 > v).sum()) for v in picks.score0], "sun": picks.sun,
    })


def outcomes_of(frames: Sequence[pd.DataFrame]) -> dict[tuple[str, int], bool]:
    """(reduced formula, space group) → S.U.N. label of every evaluated candidate of ``frames``."""
    out: dict[tuple[str, int], bool] = {}
    for f in frames:
        done = f[f.status.notna()]
        for formula, sg, sun in zip(done.reduced_formula, done.space_group, done.sun.fillna(0), strict=True):
            out[(str(formula), int(sg))] = bool(sun)
    return out


def _crystal(row: Any) -> Crystal:
    return Crystal(int(row.space_group), parse_composition(row.composition), row.a, row.b, row.c, row.alpha,
                   row.beta, row.gamma, id=row.candidate_id)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("campaigns", nargs="+", type=Path, help="loop campaign directories (each with store.db)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    ap.add_argument("--round0", action="store_true", help="also where round 0 would have ranked every substitution "
                    "pick (its proposals and proxy; a few seconds per campaign)")
    ap.add_argument("--family-weights", type=lambda s: [float(x) for x in s.split(",")], default=None,
                    metavar="W1,W2,...", help="also replay rounds 1+ with these sources.substitution.family_weight "
                    "values (eV/atom) on the stored pools, e.g. 0,1,3,5")
    ap.add_argument("--family-stds", type=lambda s: [float(x) for x in s.split(",")], default=None,
                    metavar="S1,S2,...", help="also refit each later round's residual proxy on the stored labels with "
                    "these proxy.residual_family_std values (eV/atom; 0: none) and report its error on the round's "
                    "batch, e.g. 0,0.1")
    args = ap.parse_args(argv)
    frames = {str(d): candidates_frame(d) for d in args.campaigns}
    outcomes = outcomes_of(list(frames.values()))
    result: dict[str, Any] = {}
    for d, frame in frames.items():
        picks = frame[frame.selected].sort_values(["round_index", "batch_rank"])
        cols = ["round_index", "batch_rank", "source", "reduced_formula", "space_group", "parent", "pairs",
                "prior_rank", "score_rank", "score", "mu", "sd", "novelty_penalty", "status", "e_form", "e_hull", "sun"]
        result[d] = {"picks": picks[cols], "rounds": round_summary(frame), "replay": replay(d, frame, outcomes)}
        if args.round0:
            result[d]["round0"] = round0_view(d, frame)
        if args.family_weights:
            result[d]["family"] = family_replay(d, args.family_weights, frame, outcomes)
        if args.family_stds:
            result[d]["residual"] = residual_replay(d, args.family_stds, frame)
    if args.json:
        blob = {d: {k: json.loads(v.to_json(orient="records")) for k, v in parts.items()} for d, parts in result.items()}
        print(json.dumps(blob, indent=1))
        return 0
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 500):
        for d, parts in result.items():
            for k, v in parts.items():
                print(f"== {d}: {k}\n{v.to_string(index=False)}\n")
        allrep = pd.concat([p["replay"] for p in result.values()])
        agg = allrep.assign(later=np.where(allrep["round"] > 0, "rounds 1+", "round 0")).groupby(["variant", "later"]).agg(
            substitution_picks=("substitution_picks", "sum"), median_score_rank=("median_score_rank", "median"),
            known_formula_picks=("known_formula_picks", "sum"), with_outcome=("with_outcome", "sum"),
            sun_of_those=("sun_of_those", "sum"), same_as_stored=("same_as_stored", "sum"))
        print(f"== all campaigns: replay ({len(outcomes)} (formula, space group) outcomes pooled)\n{agg.to_string()}")
        if args.family_stds:
            res = pd.concat([p["residual"] for p in result.values()])
            cols = [c for c in res.columns if c.startswith(("stored_mae", "mae_"))]
            pooled = {c: (res[c] * res.batch).groupby(res["round"]).sum() / res.batch.groupby(res["round"]).sum()
                      for c in cols}
            print("== all campaigns: batch MAE (eV/atom) of the residual proxy refitted per family std, pooled over "
                  f"calls\n{pd.DataFrame(pooled).round(4).to_string()}")
        if args.family_weights:
            fam = pd.concat([p["family"] for p in result.values()]).groupby("family_weight").sum(numeric_only=True)
            print(f"== all campaigns: rounds 1+ replayed with a family bonus\n{fam.drop(columns='round').to_string()}")
        if args.round0:
            view = pd.concat([p["round0"] for p in result.values()])
            print("== all campaigns: substitution picks as round 0 would have ranked them\n" + view.groupby("round").agg(
                picks=("sun", "size"), sun=("sun", "sum"), median_prior_rank_round0=("prior_rank_round0", "median"),
                median_rank_in_round0_pool=("rank_in_round0_pool", "median"),
                median_round0_leftovers_above=("round0_leftovers_above", "median")).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
