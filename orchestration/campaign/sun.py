"""S.U.N. labels of a campaign's oracle results (:mod:`discovery.sun`), computed after each round's results
are stored and before the round is logged, and persisted in the store's ``sun_labels`` table.

Known formulas: the dense hull reference :data:`KNOWN_FORMULAS_REFERENCE` (MP-20, Li-Fe-O and MatBench's
131k MP formulas; loaded once per process, ≈ 10 s) plus the seed data's. Known structures: the shipped MP-20
and Li-Fe-O structures. Resume: every stored result that has no labels is labelled in campaign order (round,
then batch rank) against the results before it, so a crash between results and labels relabels them, and
labels already stored are never written twice.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from discovery.sun import SunCounts, SunInput, SunLabeler, SunLabels, SunSettings, count

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from orchestration.config import CampaignConfig
    from orchestration.store import Store

KNOWN_FORMULAS_REFERENCE = "mp20+matbench"
DEFAULT_STABLE_AT_MOST = 0.1  # eV/atom, when the success criterion is not on e_above_hull


def sun_settings(config: CampaignConfig) -> SunSettings:
    """Stability bound from the success criterion (its ``at_most`` on ``e_above_hull``, else 0.1 eV/atom)."""
    s = config.success
    bound = s.at_most if s.metric == "e_above_hull" and s.at_most is not None else DEFAULT_STABLE_AT_MOST
    return SunSettings(stable_at_most=float(bound), zero_dimensional=config.sun.zero_dimensional)


@functools.cache
def reference_formulas(name: str = KNOWN_FORMULAS_REFERENCE) -> frozenset[str]:
    """Reduced formulas of every entry of hull reference ``name`` (cached per process)."""
    from oracles.reference import load_reference

    return frozenset(e.composition.reduced_formula for e in load_reference(name).entries)  # type: ignore[arg-type]


def known_formulas(config: CampaignConfig) -> frozenset[str]:
    """Formulas a campaign cannot call new: the dense hull reference's and its seed data's."""
    from orchestration.campaign.data import seed_data

    seeds = {c.reduced_formula() for t in config.targets for c in seed_data(config, t.name).crystals}
    return reference_formulas() | seeds


def labeler_for(config: CampaignConfig) -> SunLabeler:
    from discovery.datasets.reference_structures import load_reference_structures

    return SunLabeler(known_formulas=known_formulas(config), reference=load_reference_structures(),
                      settings=sun_settings(config))


def parse_cif(text: str | None) -> Structure | None:
    """The structure of a stored CIF, or None when there is none or it cannot be read."""
    if not text:
        return None
    from pymatgen.core import Structure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_str(text, fmt="cif")
    except Exception:
        return None


def label_campaign(store: Store, config: CampaignConfig) -> int:
    """Label every stored result of the campaign that has no labels yet (one transaction); returns how many."""
    name = config.name
    todo = set(store.unlabelled(name))
    if not todo:
        return 0
    results = store.results(name)
    crystals = {c.id: c for c in store.crystals(name, [r.candidate_id for r in results])}

    def rank(cid: str) -> int:
        value = crystals[cid].extra.get("batch_rank")
        return value if isinstance(value, int) else 0

    labeler = labeler_for(config)
    new: list[SunLabels] = []
    for r in sorted(results, key=lambda r: (r.round_index, rank(r.candidate_id), r.candidate_id)):
        e_hull = r.targets.get("e_above_hull")
        item = SunInput(r.candidate_id, r.round_index, r.status, None if e_hull is None else float(e_hull),
                        parse_cif(r.relaxed_cif), crystals[r.candidate_id].space_group)
        if r.candidate_id in todo:
            new.append(labeler.label(item))
        else:
            labeler.remember(item)
    settings = {**asdict(labeler.settings), "known_formulas": f"{KNOWN_FORMULAS_REFERENCE} + seed data",
                "reference_structures": "mp20 + li-fe-o"}
    return store.record_labels(name, new, settings=settings)


def sun_metrics(store: Store, name: str, round_index: int) -> dict[str, float]:
    """Round and cumulative (rounds ≤ ``round_index``) S.U.N. counts, as MLflow metrics."""
    labels = store.sun_labels(name)
    rounds = {r.candidate_id: r.round_index for r in store.results(name)}
    upto = [x for cid, x in labels.items() if rounds.get(cid, 0) <= round_index]
    mine = [cid for cid in labels if rounds.get(cid) == round_index]
    this = count([labels[cid] for cid in mine])
    total = count(upto)
    by_source: dict[str, float] = {}
    if mine:
        sources = {c.id: str(c.extra.get("source", "generator")) for c in store.crystals(name, mine)}
        for src in sorted(set(sources.values())):
            part = count([labels[cid] for cid in mine if sources[cid] == src])
            by_source[f"sun_round_{src}"] = float(part.sun)
            by_source[f"results_round_{src}"] = float(part.results)
    return {**by_source, "sun_round": float(this.sun), "cumulative_sun": float(total.sun),
            "cumulative_stable": float(total.stable),
            "cumulative_novel": float(total.novel), "cumulative_novel_formula": float(total.novel_formula),
            "cumulative_unique": float(total.unique),
            "cumulative_zero_dimensional_hits": float(total.zero_dimensional_hits),
            "cumulative_sun_novel_formula": float(total.sun_novel_formula)}


def round_report(store: Store, config: CampaignConfig, round_index: int) -> dict[str, Any]:
    """``sun.json`` of a round: settings, the round's and cumulative counts, and each result's labels."""
    labels = store.sun_labels(config.name)
    rounds = {r.candidate_id: r.round_index for r in store.results(config.name)}
    mine = [x for cid, x in labels.items() if rounds.get(cid) == round_index]
    cumulative: SunCounts = count([x for cid, x in labels.items() if rounds.get(cid, 0) <= round_index])
    return {"round": round_index, "settings": asdict(sun_settings(config)),
            "known_formulas": f"{KNOWN_FORMULAS_REFERENCE} + seed data", "reference_structures": "mp20 + li-fe-o",
            "counts_round": count(mine).as_dict(), "counts_cumulative": cumulative.as_dict(),
            "labels": [x.as_dict() for x in mine]}
