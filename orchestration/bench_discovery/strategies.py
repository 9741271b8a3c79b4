"""The benchmark's strategies: the loop as a campaign, and the baselines that reuse its round-0 models.

Every baseline scores with the loop's round-0 acquisition (:func:`orchestration.campaign.steps.acquisition`,
which includes the loop's novelty penalty when the config turns it on) and picks its whole budget in one shot
with the loop's selection (:func:`discovery.selection.select_batch`); candidates are deduplicated against the
seed data's (reduced formula, space group) keys like the loop's own candidates (:func:`discovery.selection.dedupe`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from discovery.crystal import Crystal
from discovery.selection import dedupe, select_batch
from orchestration.bench_discovery.settings import BenchSettings, Evaluated, campaign_config, search_space

if TYPE_CHECKING:
    from discovery.substitution import Proposal
    from orchestration.store import Store

Progress = Callable[[int, int], None]


def _num(v: float | None) -> float:
    return float(v) if v is not None and math.isfinite(v) else float("nan")


# -- the loop ------------------------------------------------------------------------------------------
def run_loop(settings: BenchSettings, seed: int, directory: Path) -> tuple[Path, list[Evaluated]]:
    """Run (or finish) the loop campaign of one seed; returns its config path and results in call order
    (round, then batch rank), each with its round, source and the proxy's prediction before labelling."""
    import yaml

    from orchestration.campaign.context import campaign_for, release
    from orchestration.flows import campaign_flow

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "campaign.yaml"
    path.write_text(yaml.safe_dump(campaign_config(settings, seed, directory), sort_keys=False))
    campaign_flow(str(path))
    camp = campaign_for(path)
    try:
        out = loop_calls(camp.store, camp.name, rounds=settings.rounds)
    finally:
        release(path)
    return path, out


def loop_calls(store: Store, name: str, *, rounds: int) -> list[Evaluated]:
    """The oracle calls of loop campaign ``name`` in call order (round, then batch rank)."""
    results = {r.candidate_id: r for r in store.results(name)}
    order = [cid for r in range(rounds) for cid in store.batch(name, r) if cid in results]
    crystals = {c.id: c for c in store.crystals(name, order)}
    return [loop_evaluated(crystals[cid], results[cid].status, results[cid].targets, results[cid].relaxed_cif)
            for cid in order]


def loop_evaluated(crystal: Crystal, status: str, targets: Mapping[str, float | None], relaxed_cif: str | None
                   ) -> Evaluated:
    """One loop call from its stored candidate (``extra``: round, source, prediction) and oracle result."""
    extra = crystal.extra
    prediction = extra.get("prediction")
    predicted = prediction.get("formation_energy_per_atom_mean") if isinstance(prediction, dict) else None
    return Evaluated(crystal, status, _num(targets.get("e_above_hull")), _num(targets.get("formation_energy_per_atom")),
                     relaxed_cif, round=int(extra.get("round") or 0),  # type: ignore[call-overload]
                     source=str(extra.get("source") or "generator"),
                     predicted=_num(float(predicted) if isinstance(predicted, (int, float)) else None))


# -- baselines -----------------------------------------------------------------------------------------
def random_candidates(settings: BenchSettings, seed: int, n: int, known: set[tuple[str, int]]) -> list[Crystal]:
    """``n`` random crystals with distinct (reduced formula, space group), none in ``known``."""
    from discovery.baselines import RandomCrystalSampler

    sampler = RandomCrystalSampler(search_space(settings))
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


def round0_scores(config_path: Path, pool: Sequence[Crystal]) -> tuple[np.ndarray, list[float]]:
    """The loop's round-0 acquisition scores (n,) of ``pool`` (higher is better; the novelty penalty included
    when the loop's config enables it) and the round-0 proxy's formation energy (eV/atom) of each."""
    from orchestration.campaign import steps
    from orchestration.campaign.context import campaign_for, release

    camp = campaign_for(config_path)
    try:
        scores, preds = steps.acquisition(camp, 0, steps.load_proxies(camp, 0), list(pool))
    finally:
        release(config_path)
    return scores, [_num(p.get("formation_energy_per_atom_mean")) for p in preds]


def select_once(config_path: Path, pool: Sequence[Crystal], scores: Sequence[float] | np.ndarray, budget: int,
                seed: int) -> list[int]:
    """Indices of ``budget`` members of ``pool`` chosen in one shot with the loop's selection settings."""
    from orchestration.campaign.context import campaign_for, release

    camp = campaign_for(config_path)
    try:
        sel = camp.config.selection
    finally:
        release(config_path)
    return select_batch(list(pool), scores, batch_size=budget, method=sel.method, diversity=sel.diversity, seed=seed)


def scored_selection(config_path: Path, pool: Sequence[Crystal], budget: int, seed: int) -> list[Crystal]:
    """Score ``pool`` with the loop's round-0 proxy and acquisition and select ``budget`` with its selection."""
    scores, preds = round0_scores(config_path, pool)
    chosen = select_once(config_path, pool, scores, budget, seed)
    return [_tag(pool[i], preds[i]) for i in chosen]


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


def substitution_proposals(settings: BenchSettings, seed: int, known: set[tuple[str, int]], *,
                           exclude_formulas: Collection[str] = ()) -> list[Proposal]:
    """``rounds × candidates_per_round`` substitutions into the seed data's near-hull structures only (E_hull ≤
    0.05 eV/atom, full and partial, :mod:`discovery.substitution` with uniform rates), deduplicated like the
    other baselines (distinct crystals, none with a seed (reduced formula, space group) key), none with a
    reduced formula in ``exclude_formulas``."""
    from discovery.substitution import propose_substitutions, seed_parents

    space = search_space(settings)
    parents = seed_parents(space=space, max_e_above_hull=0.05)
    proposals = propose_substitutions(parents, space=space, n=settings.rounds * settings.candidates_per_round,
                                      seed=seed + 211, rates=None, partial=True, exclude_formulas=exclude_formulas)
    kept = dedupe([p.crystal for p in proposals], known=known).kept
    return [proposals[i] for i in kept]


def substitution_once(config_path: Path, settings: BenchSettings, seed: int, known: set[tuple[str, int]]
                      ) -> tuple[list[Proposal], list[float]]:
    """The ``budget`` substitution proposals the loop's round-0 acquisition and selection pick in one shot
    (scored on ``proposal.crystal``), and the round-0 proxy's formation energy (eV/atom) of each. Under the
    ``sun`` objective, like the loop's substitution source, no proposal has a known formula (the reference's or
    the seed data's): :func:`novel_formulas_only`."""
    exclude = novel_formulas_only(settings, known)
    proposals = substitution_proposals(settings, seed, known, exclude_formulas=exclude)
    pool = [p.crystal for p in proposals]
    scores, preds = round0_scores(config_path, pool)
    chosen = select_once(config_path, pool, scores, settings.budget, seed)
    return [proposals[i] for i in chosen], [preds[i] for i in chosen]


def novel_formulas_only(settings: BenchSettings, known: set[tuple[str, int]]) -> frozenset[str]:
    """The formulas substitution proposals must avoid: under ``sun`` the hull reference's and the seed data's
    (``known`` keys), as the loop's campaign does (:func:`orchestration.campaign.candidates.propose`); else none."""
    if settings.objective != "sun":
        return frozenset()
    from orchestration.campaign.sun import reference_formulas

    return reference_formulas() | {f for f, _ in known}


def _tag(crystal: Crystal, predicted: float) -> Crystal:
    """``crystal`` with the round-0 proxy's formation energy (eV/atom) in ``extra["predicted"]``."""
    return replace(crystal, extra={**crystal.extra, "predicted": predicted})



# -- the oracle ------------------------------------------------------------------------------------------
def evaluate(oracle: Any, crystals: Sequence[Crystal], seed: int, progress: Progress | None = None, *,
             source: str = "generator") -> list[Evaluated]:
    """Relax ``crystals`` (decoded by the oracle) in one batch; one :class:`Evaluated` each, in order."""
    from oracles.base import Candidate

    results = oracle.evaluate([Candidate.from_crystal(c) for c in crystals], seed=seed, progress=progress)
    return [_evaluated(c, r, source) for c, r in zip(crystals, results, strict=True)]


def evaluate_structures(oracle: Any, proposals: Sequence[Proposal], seed: int, progress: Progress | None = None, *,
                        predicted: Sequence[float] | None = None) -> list[Evaluated]:
    """Relax substitution proposals as the structures they are (no decoding step); ``predicted``: the proxy's
    formation energy (eV/atom) of each, recorded with the result."""
    from oracles.base import Candidate

    results = oracle.evaluate([Candidate.from_structure(p.structure, id=p.id) for p in proposals], seed=seed,
                              progress=progress)
    preds = list(predicted) if predicted is not None else [float("nan")] * len(proposals)
    return [_evaluated(_tag(p.crystal, f), r, "substitution") for p, f, r in zip(proposals, preds, results, strict=True)]


def _evaluated(crystal: Crystal, result: Any, source: str) -> Evaluated:
    predicted = crystal.extra.get("predicted")
    return Evaluated(crystal, result.status, _num(result.targets.get("e_above_hull")),
                     _num(result.targets.get("formation_energy_per_atom")), result.structure_cif, round=0,
                     source=source, predicted=_num(predicted if isinstance(predicted, float) else None))
