"""The round's steps. Each reads what it needs from the store and the campaign directory, writes
its outputs (model directories, candidates, the batch, results) and moves the round state on.

Every step is a no-op when the round is already past it, and a pure function of (config seed,
round index, labels from earlier rounds), so re-running a step after a crash reproduces it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np
import torch

from discovery.crystal import Crystal
from orchestration.campaign import faults
from orchestration.campaign.candidates import earlier_batches, oracle_candidate, tried_formulas
from orchestration.campaign.context import Campaign
from orchestration.campaign.data import best_label, label_weights, plain, seed_keys, training_set
from orchestration.campaign.progress import step
from orchestration.config import ConfigError, build_search_space
from orchestration.store import ROUND_STATES, RoundState


def past(camp: Campaign, round_index: int, state: RoundState) -> bool:
    """True when the round has already reached ``state``."""
    cur = camp.store.get_round(camp.name, round_index).state
    return ROUND_STATES.index(cur) >= ROUND_STATES.index(state)  # type: ignore[arg-type]


# -- proxy ----------------------------------------------------------------------------------------
def _proxy_config(camp: Campaign, round_index: int) -> Any:
    from discovery.proxy import EnsembleConfig

    p = camp.config.proxy
    return EnsembleConfig(n_members=p.members, hidden=max(8, p.hidden), n_layers=p.layers, epochs=p.epochs,
                          warm_epochs=max(1, p.epochs // 3), lr=p.learning_rate, batch_size=max(8, p.batch_size),
                          seed=camp.seed_for(round_index) % (2**31))


def fit_proxies(camp: Campaign, round_index: int) -> str:
    """Fit one ensemble per target on all labels so far (warm start from the last round's); returns the dir."""
    out = camp.model_dir("proxy", round_index)
    if past(camp, round_index, "proxy_fitted"):
        return str(out)
    from discovery.proxy import EnsembleProxy

    t0 = time.perf_counter()
    # Warm start from the previous round's model (every earlier round is completed and has one);
    # never from this round's own, which a killed run may already have saved.
    prev_dir = camp.model_dir("proxy", round_index - 1) if round_index > 0 else None
    metrics: dict[str, float] = {}
    for target in camp.config.targets:
        target_dir = out / target.name
        if target.source == "seed_proxy" and prev_dir is not None:  # fit once on the seed data, then reuse
            EnsembleProxy.load(f"{prev_dir}/{target.name}").save(target_dir)
            continue
        data = training_set(camp.store, camp.config, target, before_round=round_index)
        warm = EnsembleProxy.load(f"{prev_dir}/{target.name}") if prev_dir and camp.config.proxy.warm_start else None
        proxy = EnsembleProxy(target_names=(target.name,), config=_proxy_config(camp, round_index))
        with step(f"round {round_index}: fit proxy ({target.name}, {len(data)} labels)", total=None) as update:
            report = proxy.fit(data, warm_start=warm, weights=label_weights(camp.config, target, data),
                               progress=lambda e, n: update(e))
        proxy.save(target_dir)
        if camp.config.proxy.residual and target.source == "oracle":
            metrics.update(_fit_residual(camp, round_index, proxy, target.name, target_dir))
        val = report.validation.get(target.name, {})
        metrics.update({f"proxy_mae_{target.name}": val.get("mae", float("nan")),
                        f"proxy_calibration_scale_{target.name}": report.calibration_scale.get(target.name, 1.0),
                        f"proxy_coverage_90_{target.name}": val.get("coverage_90_crossfit", val.get("coverage_90", float("nan"))),
                        f"proxy_n_train_{target.name}": float(report.n_train)})
    record = camp.store.add_model(camp.name, "proxy", round_index=round_index, path=out)
    metrics["t_proxy_s"] = time.perf_counter() - t0
    faults.point("proxy_fitted")
    camp.store.advance_round(camp.name, round_index, "proxy_fitted", proxy_version=record.version, metrics=metrics)
    return str(out)


def _fit_residual(camp: Campaign, round_index: int, base: Any, target: str, target_dir: Any) -> dict[str, float]:
    """Fit the residual model on the campaign's own oracle labels (rounds before this one) over ``base`` and save
    both in ``target_dir`` (no labels yet: the base proxy alone stays there)."""
    from discovery.proxy.residual import ResidualConfig, ResidualProxy
    from orchestration.campaign.candidates import label_families
    from orchestration.campaign.data import oracle_labels

    labels = oracle_labels(camp.store, camp.name, target, before_round=round_index)
    if not len(labels):
        return {f"proxy_residual_labels_{target}": 0.0}
    family_std = camp.config.proxy.residual_family_std
    config = ResidualConfig(family_prior_std=family_std)
    groups = label_families(camp, labels.crystals) if family_std > 0 else None
    residual = ResidualProxy.fit(base, labels, target=target, config=config, groups=groups)
    residual.save(target_dir)
    out = {f"proxy_residual_labels_{target}": float(len(labels))}
    if family_std > 0:
        out[f"proxy_residual_family_std_{target}"] = float(residual.info.get("family", 0.0))
    return out


def load_proxies(camp: Campaign, round_index: int) -> dict[str, Any]:
    from discovery.proxy.residual import load_proxy

    d = camp.model_dir("proxy", round_index)
    return {t.name: load_proxy(d / t.name) for t in camp.config.targets}


def acquisition(camp: Campaign, round_index: int, proxies: dict[str, Any], crystals: Sequence[Crystal], *,
                families: Sequence[str | None] | None = None) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Acquisition scores (n,), higher is better (weighted over targets), and per-crystal predictions.
    ``families``: the crystals' substitution families, for a residual proxy with a family term (None: none)."""
    from discovery.proxy import expected_improvement, greedy, target_value, ucb
    from discovery.proxy.residual import ResidualProxy

    acq = camp.config.acquisition
    total = torch.zeros(len(crystals))
    preds: list[dict[str, float]] = [{} for _ in crystals]
    for target in camp.config.targets:
        proxy = proxies[target.name]
        post = proxy.posterior(crystals, groups=families) if isinstance(proxy, ResidualProxy) else proxy.posterior(crystals)
        maximize = target.goal == "maximize"
        if target.goal == "target":
            s = target_value(post, value=float(target.value or 0.0), kappa=acq.kappa if acq.kind == "ucb" else 0.0,
                             max_sd=acq.max_sd)
        elif acq.kind == "greedy":
            s = greedy(post, maximize=maximize)
        elif acq.kind == "ucb":
            s = ucb(post, kappa=acq.kappa, maximize=maximize, max_sd=acq.max_sd)
        else:
            best = best_label(camp.store, camp.config, target, before_round=round_index)
            s = expected_improvement(post, best=best, maximize=maximize, xi=acq.xi, max_sd=acq.max_sd)
        if acq.relative_to_hull is not None and target.name == "formation_energy_per_atom":
            s = s.float() + torch.as_tensor(hull_energies(acq.relative_to_hull, crystals), dtype=torch.float32)
        total += target.weight * s.float()
        mu, sd = post.column(0)
        for i in range(len(crystals)):
            preds[i][f"{target.name}_mean"] = float(mu[i])
            preds[i][f"{target.name}_std"] = float(sd[i])
    out = total.numpy().astype(float)
    if camp.config.novelty.enabled and len(crystals):
        penalty = novelty(camp, round_index, [c.reduced_formula() for c in crystals])
        out = out - penalty
        for i in range(len(crystals)):
            preds[i]["novelty_penalty"] = float(penalty[i])
    return out, preds


def novelty(camp: Campaign, round_index: int, formulas: Sequence[str]) -> np.ndarray:
    """(n,) novelty penalties (eV/atom, :func:`discovery.loop.novelty_penalty`) of the round: known formulas are
    the dense hull reference's and the seed data's, tried ones those earlier rounds sent to the oracle (both
    fixed for a round, so computed once per process and round)."""
    from discovery.loop import novelty_penalty
    from orchestration.campaign.candidates import tried_formulas
    from orchestration.campaign.sun import known_formulas

    key = f"novelty-{round_index}"
    if key not in camp._extras:
        camp._extras[key] = (known_formulas(camp.config), tried_formulas(camp, round_index))
    known, tried = camp._extras[key]
    n = camp.config.novelty
    return novelty_penalty(formulas, known=known, tried=tried, known_penalty=n.known_penalty,
                           tried_penalty=n.tried_penalty)


def hull_energies(reference: str, crystals: Sequence[Crystal]) -> np.ndarray:
    """(n,) formation energy (eV/atom) of the reference hull at each crystal's composition (≤ 0).

    Subtracting it from a predicted formation energy gives the predicted energy above that hull; a score
    −(μ − κσ) becomes −(μ − E_hull − κσ)."""
    from pymatgen.core import Composition

    from oracles.reference import load_reference

    ref = load_reference(reference)  # type: ignore[arg-type]
    return np.array([ref.hull_energy_per_atom(Composition(c.counts)) for c in crystals], dtype=float)


def log_rewards(camp: Campaign, scores: np.ndarray) -> np.ndarray:
    from discovery.proxy import log_reward_from_acquisition

    t = torch.as_tensor(scores, dtype=torch.float32)
    return log_reward_from_acquisition(t, temperature=camp.config.acquisition.temperature).numpy().astype(float)


# -- generator ------------------------------------------------------------------------------------
def _generator_settings(camp: Campaign) -> tuple[Any, Any]:
    from discovery.gfn import PolicyConfig, TrainConfig

    hyper: dict[str, Any] = dict(camp.config.generator.hyper)
    pol = {f.name: hyper[f.name] for f in fields(PolicyConfig) if f.name in hyper}
    tr = {f.name: hyper[f.name] for f in fields(TrainConfig) if f.name in hyper}
    return PolicyConfig(**pol), TrainConfig(**tr)


def _pretrained_generator(camp: Campaign) -> Any:
    """The Crystal-GFN of ``generator.checkpoint``; its search space must be the campaign's."""
    from discovery.gfn import CrystalGFN
    from orchestration.config.schema import resolve_checkpoint

    value = camp.config.generator.checkpoint
    assert value is not None
    gfn = CrystalGFN.load(resolve_checkpoint(value), device=camp.config.generator.device)
    space = build_search_space(camp.config)
    if gfn.space != space:
        raise ConfigError(f"generator.checkpoint: {value} was trained on another search space ({gfn.space}) than "
                          f"this config's search_space ({space}); make search_space match it, or remove "
                          "generator.checkpoint to train from scratch")
    return gfn


def train_generator(camp: Campaign, round_index: int) -> str:
    """Train (round 0) or fine-tune (warm start from the last checkpoint) the Crystal-GFN on the
    acquisition reward of this round's proxy; returns the checkpoint dir."""
    out = camp.model_dir("generator", round_index)
    if past(camp, round_index, "generator_trained"):
        return str(out)
    from discovery.gfn import CrystalGFN, VolumePriorReward

    t0 = time.perf_counter()
    seed = camp.seed_for(round_index)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    if round_index > 0 and camp.config.generator.retrain == "fresh":  # same model, new weights, full training
        prev = CrystalGFN.load(camp.model_dir("generator", round_index - 1), device=camp.config.generator.device)
        gfn = CrystalGFN.fresh_like(prev, seed=seed)
        iterations = camp.config.generator.iterations_first_round
    elif round_index > 0:  # warm start from the previous round's checkpoint (not from this round's, see fit_proxies)
        gfn = CrystalGFN.load(camp.model_dir("generator", round_index - 1), device=camp.config.generator.device)
        iterations = camp.config.generator.iterations_per_round
    elif camp.config.generator.checkpoint is not None:  # round 0 fine-tunes a trained model
        gfn = _pretrained_generator(camp)
        iterations = camp.config.generator.iterations_first_round
    else:
        policy, train = _generator_settings(camp)
        gfn = CrystalGFN(build_search_space(camp.config), device=camp.config.generator.device, seed=seed,
                         policy=policy, train=train)
        iterations = camp.config.generator.iterations_first_round
    torch.manual_seed(seed)
    proxies = load_proxies(camp, round_index)

    def proxy_reward(crystals: Sequence[Crystal]) -> np.ndarray:
        return log_rewards(camp, acquisition(camp, round_index, proxies, crystals)[0])

    reward = VolumePriorReward(proxy_reward, weight=camp.config.generator.volume_prior)

    offline: dict[str, Any] = {}
    if camp.config.generator.offline_replay and round_index > 0:
        from orchestration.campaign.candidates import offline_crystals

        offline = {"offline": offline_crystals(camp, round_index)}
    with step(f"round {round_index}: train generator", total=iterations) as update:
        report = gfn.train(reward, iterations=iterations, progress=lambda i, _row: update(i), log_every=5, **offline)
    gfn.save(out)
    (out / "train_report.json").write_text(json.dumps({k: v for k, v in asdict(report).items()}, default=float))
    record = camp.store.add_model(camp.name, "generator", round_index=round_index, path=out)
    metrics = {"gfn_loss": report.loss, "gfn_log_z": report.log_z, "gfn_iterations": float(report.iterations),
               "gfn_trajectories_per_s": report.trajectories_per_s, "t_generator_s": time.perf_counter() - t0}
    faults.point("generator_trained")
    camp.store.advance_round(camp.name, round_index, "generator_trained", generator_version=record.version, metrics=metrics)
    return str(out)


# -- sampling and selection -----------------------------------------------------------------------
def sample_candidates(camp: Campaign, round_index: int) -> int:
    """Sample N crystals, drop duplicates (seed data, earlier rounds, within the sample), score and store them."""
    if past(camp, round_index, "sampled"):
        return len(camp.store.crystals(camp.name, None))
    from discovery.gfn import CrystalGFN
    from discovery.loop import earlier_keys, untried
    from discovery.selection import dedupe

    t0 = time.perf_counter()
    seed = camp.seed_for(round_index)
    gfn = CrystalGFN.load(camp.model_dir("generator", round_index), device=camp.config.generator.device)
    n = camp.config.candidates_per_round
    with step(f"round {round_index}: sample {n} candidates", total=n) as update:
        sampled = gfn.sample(n, seed=seed, progress=update)
    crystals = [Crystal(c.space_group, c.counts, *c.lattice, id=f"r{round_index:03d}-{i:05d}") for i, c in enumerate(sampled)]
    sources = ["generator"] * len(crystals)
    origins: list[dict[str, Any] | None] = [None] * len(crystals)
    tried = tried_formulas(camp, round_index) if camp.config.selection.skip_tried_formulas else set()
    extra_metrics: dict[str, float] = {}
    if camp.config.sources.substitution is not None:
        subs, origin_list, extra_metrics = _substitution_candidates(camp, round_index, exclude_formulas=tried)
        crystals += subs
        sources += ["substitution"] * len(subs)
        origins += origin_list
    earlier = earlier_keys(camp.store.crystals(camp.name), round_index=round_index)
    result = dedupe(crystals, known=earlier | seed_keys(camp.config))
    keep = [result.kept[j] for j in untried([crystals[i].reduced_formula() for i in result.kept], tried=tried)]
    kept = [crystals[i] for i in keep]
    picked = [origins[i] for i in keep]
    scores, preds = acquisition(camp, round_index, load_proxies(camp, round_index), kept, families=_families(picked))
    scores = _with_family_bonus(camp, round_index, scores, preds, picked)
    camp.store.add_candidates(camp.name, round_index, kept, scores=list(scores), predictions=preds,
                              sources=[sources[i] for i in keep], origins=picked)
    logr = log_rewards(camp, scores) if len(kept) else np.zeros(1)
    metrics = {"n_sampled": float(n), "n_unique": float(len(kept)), "n_duplicates_known": float(result.n_known),
               "n_duplicates_repeated": float(result.n_repeated), "n_tried_formula": float(len(result.kept) - len(keep)),
               "n_candidates_substitution": float(sum(sources[i] == "substitution" for i in keep)),
               **extra_metrics, "reward_log_mean": float(np.mean(logr)),
               "reward_log_max": float(np.max(logr)), "reward_log_min": float(np.min(logr)),
               "reward_log_std": float(np.std(logr)), "t_sample_s": time.perf_counter() - t0}
    faults.point("sampled")
    camp.store.advance_round(camp.name, round_index, "sampled", metrics=metrics)
    return len(kept)


def _families(origins: Sequence[dict[str, Any] | None]) -> list[str | None]:
    """The substitution family of each candidate (None for the generator's)."""
    return [str(o["family"]) if o is not None and o.get("family") else None for o in origins]


def _with_family_bonus(camp: Campaign, round_index: int, scores: np.ndarray, preds: list[dict[str, float]],
                       origins: Sequence[dict[str, Any] | None]) -> np.ndarray:
    """``scores`` plus :func:`discovery.loop.family_bonus` on the substitution candidates (``family_weight`` > 0;
    recorded per candidate as the prediction ``family_bonus``)."""
    sub = camp.config.sources.substitution
    if sub is None or sub.family_weight <= 0 or not len(scores):
        return scores
    from discovery.loop import family_bonus
    from orchestration.campaign.candidates import substitution_rates

    families = _families(origins)
    bonus = family_bonus(families, substitution_rates(camp, round_index), weight=sub.family_weight)
    for i, f in enumerate(families):
        if f is not None:
            preds[i]["family_bonus"] = float(bonus[i])
    return np.asarray(scores, dtype=float) + bonus


def _substitution_candidates(camp: Campaign, round_index: int, *, exclude_formulas: set[str]
                             ) -> tuple[list[Crystal], list[dict[str, Any] | None], dict[str, float]]:
    """The round's substitution proposals as candidates (generator view + origin with the structure), minus
    those matching a relaxed result of an earlier round."""
    from oracles.base import structure_to_cif
    from orchestration.campaign.candidates import known_structure_matches, propose

    proposals = propose(camp, round_index, exclude_formulas=exclude_formulas)
    matched = known_structure_matches(camp, round_index, proposals)
    out: list[Crystal] = []
    origins: list[dict[str, Any] | None] = []
    for i, p in enumerate(proposals):
        if i in matched:
            continue
        c = p.crystal
        out.append(Crystal(c.space_group, dict(c.counts), *c.lattice, id=f"r{round_index:03d}-sub-{i:05d}"))
        origins.append({"structure_cif": structure_to_cif(p.structure), "parent": p.parent_id, "proposal": p.id,
                        "substitutions": [list(x) for x in p.substitutions], "partial": p.partial, "prior": p.prior,
                        "family": p.family})
    return out, origins, {"n_proposed_substitution": float(len(proposals)),
                          "n_substitution_matched_earlier": float(len(matched))}


def batch_size_for(camp: Campaign, round_index: int) -> int:
    """B, capped so that the campaign never exceeds ``stopping.max_oracle_calls``."""
    from discovery.loop import batch_cap

    before = sum(1 for r in camp.store.results(camp.name) if r.round_index < round_index)
    earlier_batches = sum(len(camp.store.batch(camp.name, r)) for r in range(round_index))
    return batch_cap(camp.config.batch_size, max_calls=camp.config.stopping.max_oracle_calls,
                     calls_so_far=max(before, earlier_batches))


def select(camp: Campaign, round_index: int) -> list[str]:
    """Choose a diverse batch of B among the round's candidates and create its oracle jobs."""
    if past(camp, round_index, "selected"):
        return camp.store.batch(camp.name, round_index)
    from discovery.selection import diversity_summary, select_batch

    t0 = time.perf_counter()
    pool = [c for c in camp.store.crystals(camp.name) if c.extra.get("round") == round_index]
    scores = [float(c.extra["score"]) if c.extra.get("score") is not None else float("nan") for c in pool]  # type: ignore[arg-type]
    sel = camp.config.selection
    b = batch_size_for(camp, round_index)
    groups = [str(c.extra.get("source", "generator")) for c in pool]
    quota: dict[str, int] | None = None
    sub = camp.config.sources.substitution
    if sub is not None:
        from discovery.loop import source_split
        from orchestration.campaign.candidates import source_outcomes

        split = source_split(b, share=sub.share, adaptive=sub.adaptive, min_share=sub.min_share,
                             outcomes=source_outcomes(camp, round_index), rule=sub.split_rule)
        quota = {str(k): v for k, v in split.items()}
    context = earlier_batches(camp, round_index) if sel.across_rounds else []
    chosen = select_batch([plain(c) for c in pool], scores, batch_size=b, method=sel.method, diversity=sel.diversity,
                          seed=camp.seed_for(round_index), context=context, groups=groups, quota=quota)
    ids = [pool[i].id for i in chosen]
    camp.store.select_batch(camp.name, round_index, ids, oracle=camp.config.oracle.name)
    faults.point("selected")
    div = {f"batch_{k}": float(v) for k, v in diversity_summary([pool[i] for i in chosen]).items()}
    if quota is not None:
        div.update({f"quota_{k}": float(v) for k, v in quota.items()})
        div.update({f"batch_from_{k}": float(sum(groups[i] == k for i in chosen)) for k in quota})
    camp.store.advance_round(camp.name, round_index, "selected",
                             metrics={**div, "batch_size": float(len(ids)), "t_select_s": time.perf_counter() - t0})
    return ids


# -- oracle ---------------------------------------------------------------------------------------
def evaluate_candidate(camp: Campaign, round_index: int, candidate_id: str) -> str:
    """Evaluate one batch candidate with the oracle and persist its result (once); returns its status.

    A candidate that already has a result is not evaluated again. Exceptions (transient failures:
    a dead worker, a store hiccup) propagate so that the task is retried.
    """
    if candidate_id not in camp.store.pending(camp.name, round_index):
        return "done"
    candidate = oracle_candidate(camp.store.crystals(camp.name, [candidate_id])[0])
    camp.store.start_job(camp.name, candidate_id)
    faults.point("oracle_started")
    with camp.oracles.acquire() as oracle:
        result = oracle.evaluate([candidate], seed=camp.seed_for(round_index))[0]
    provenance = {**result.provenance, "message": result.message, "n_steps": result.n_steps, "worker": _worker()}
    camp.store.record_result(camp.name, candidate_id, status=result.status, targets=dict(result.targets),
                             relaxed_cif=result.structure_cif, provenance=provenance, wall_s=result.wall_time_s)
    faults.point("result_recorded")
    return result.status


def evaluate_batch(camp: Campaign, round_index: int, candidate_ids: Sequence[str]) -> list[str]:
    """Evaluate several batch candidates in one oracle call (the batched engine relaxes them together) and
    persist each result as the oracle reports it (``on_result``: per candidate with ``workers: 0``), so a
    killed task loses only the candidates still relaxing; returns their statuses.

    Candidates that already have a result are skipped (resume repeats nothing); exceptions propagate so that
    the task is retried, and the retry evaluates only those still pending."""
    import inspect

    from oracles.base import OracleResult

    pending = set(camp.store.pending(camp.name, round_index))
    ids = [c for c in candidate_ids if c in pending]
    if not ids:
        return []
    cands = [oracle_candidate(c) for c in camp.store.crystals(camp.name, ids)]
    for cid in ids:
        camp.store.start_job(camp.name, cid)
        faults.point("oracle_started")
    recorded: dict[str, str] = {}

    def record(index: int, result: OracleResult) -> None:
        cid = ids[index]
        if cid in recorded:
            return
        provenance = {**result.provenance, "message": result.message, "n_steps": result.n_steps,
                      "worker": _worker(), "oracle_task": "batch"}
        camp.store.record_result(camp.name, cid, status=result.status, targets=dict(result.targets),
                                 relaxed_cif=result.structure_cif, provenance=provenance, wall_s=result.wall_time_s)
        recorded[cid] = result.status
        faults.point("result_recorded")

    with camp.oracles.acquire() as oracle:
        if "on_result" in inspect.signature(oracle.evaluate).parameters:
            results = oracle.evaluate(cands, seed=camp.seed_for(round_index), on_result=record)  # type: ignore[call-arg]
        else:
            results = oracle.evaluate(cands, seed=camp.seed_for(round_index))
    for i, result in enumerate(results):
        record(i, result)
    return [recorded[c] for c in ids]


def batched_oracle(camp: Campaign) -> bool:
    """Whether the campaign's oracle relaxes a batch together (one oracle task per round's batch): SevenNet, and
    CHGNet when the config names ``engine: batched``. A CHGNet config that leaves ``engine`` out relaxes on the
    batched engine too (the default, oracles.engines) but one candidate per task, as before the default changed:
    the round keeps the runner's parallelism (threads, Dask workers) and each candidate its own task, stored as
    it finishes, with the hard timeout and crash isolation of a worker process."""
    oc = camp.config.oracle
    return oc.name == "sevennet" or (oc.name == "chgnet" and oc.settings.get("engine") == "batched")


def _worker() -> dict[str, Any]:
    """Where an oracle task ran: host, process and, on a SLURM allocation (Dask jobqueue), the job id."""
    import os
    import socket

    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    if os.environ.get("SLURM_JOB_ID"):
        out["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return out
