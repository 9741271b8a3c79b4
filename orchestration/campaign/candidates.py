"""What a round's candidate sources need from the store: tried formulas, per-source outcomes, substitution
parents and rates, offline trajectories for the generator. The decisions themselves are pure functions of
:mod:`discovery.loop` and :mod:`discovery.substitution`; this module only reads the campaign's records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from discovery.crystal import Crystal
from orchestration.campaign.context import Campaign
from orchestration.campaign.data import plain

if TYPE_CHECKING:
    from discovery.loop import SourceOutcome
    from discovery.substitution import Proposal, SubstitutionRates
    from oracles.base import Candidate


def tried_formulas(camp: Campaign, round_index: int) -> set[str]:
    """Reduced formulas of every candidate that an earlier round sent to the oracle (a batch member)."""
    out: set[str] = set()
    for c in camp.store.crystals(camp.name):
        if int(c.extra.get("round", 0)) < round_index and c.extra.get("selected"):  # type: ignore[call-overload]
            out.add(c.reduced_formula())
    return out


def earlier_batches(camp: Campaign, round_index: int) -> list[Crystal]:
    """The candidates earlier rounds sent to the oracle, in round order."""
    ids = [cid for r in range(round_index) for cid in camp.store.batch(camp.name, r)]
    return [plain(c) for c in camp.store.crystals(camp.name, ids)] if ids else []


def _successes(camp: Campaign, round_index: int) -> list[tuple[Crystal, bool, Any]]:
    """(candidate, success, result) of every result before ``round_index``; success = the S.U.N. label (or, where
    a result has no label yet, the campaign's hit rule). Read once per process and round: the earlier rounds are
    complete when a round starts, and their labels are stored by their log step (:func:`orchestration.campaign.sun.label_campaign`)."""
    key = f"successes-{round_index}"
    if key not in camp._extras:
        camp._extras[key] = _read_successes(camp, round_index)
    rows: list[tuple[Crystal, bool, Any]] = camp._extras[key]
    return rows


def _read_successes(camp: Campaign, round_index: int) -> list[tuple[Crystal, bool, Any]]:
    labels = camp.store.sun_labels(camp.name)
    results = [r for r in camp.store.results(camp.name) if r.round_index < round_index]
    crystals = {c.id: c for c in camp.store.crystals(camp.name, [r.candidate_id for r in results])} if results else {}
    out = []
    for r in results:
        lab = labels.get(r.candidate_id)
        ok = bool(lab.sun) if lab is not None else camp.config.success.is_hit(r.targets, status=r.status)
        out.append((crystals[r.candidate_id], ok, r))
    return out


def source_outcomes(camp: Campaign, round_index: int) -> dict[str, SourceOutcome]:
    """Per source: oracle calls and S.U.N. results of the rounds before ``round_index``."""
    from discovery.loop import source_outcomes as tally

    rows = _successes(camp, round_index)
    return tally([str(c.extra.get("source", "generator")) for c, _, _ in rows], [ok for _, ok, _ in rows])


def parent_links(camp: Campaign) -> dict[str, str]:
    """Substitution candidate id → the id of the parent it was substituted into (every round's candidates)."""
    return {c.id: str(c.extra["parent"]) for c in camp.store.crystals(camp.name)
            if c.extra.get("source") == "substitution" and c.extra.get("parent") is not None}


def label_families(camp: Campaign, crystals: Sequence[Crystal]) -> list[str | None]:
    """The family of each labelled crystal for the residual proxy's family term: a substitution result's is its
    parent's family (:func:`discovery.loop.family_of`), any other result is the root of its own family (the
    family its substitutions will carry)."""
    from discovery.loop import family_of, residual_family

    links = parent_links(camp)
    out: list[str | None] = []
    for c in crystals:
        parent = c.extra.get("parent")
        source = c.extra.get("source")
        out.append(residual_family(source=None if source is None else str(source), own_id=c.id,
                                   family=None if parent is None else family_of(str(parent), links)))
    return out


def substitution_rates(camp: Campaign, round_index: int) -> SubstitutionRates:
    """Success rates per substitution and per parent family (:func:`discovery.loop.family_of`) learned from the
    campaign's substitution results so far. Read once per process and round (the proposals and the family bonus
    both use them), as :func:`_successes`; callers do not change them."""
    key = f"substitution-rates-{round_index}"
    if key not in camp._extras:
        camp._extras[key] = _read_substitution_rates(camp, round_index)
    rates: SubstitutionRates = camp._extras[key]
    return rates


def _read_substitution_rates(camp: Campaign, round_index: int) -> SubstitutionRates:
    from discovery.loop import family_of
    from discovery.substitution import SubstitutionRates

    links = parent_links(camp)
    outcomes = []
    for c, ok, _ in _successes(camp, round_index):
        subs = c.extra.get("substitutions")
        if c.extra.get("source") == "substitution" and isinstance(subs, list):
            parent = c.extra.get("parent")
            family = family_of(str(parent), links) if parent is not None else None
            outcomes.append(([(str(a), str(b)) for a, b in subs], ok, family))
    return SubstitutionRates.from_outcomes(outcomes)


def campaign_parents(camp: Campaign, round_index: int, *, near_hull_at_most: float) -> list[Any]:
    """The campaign's own converged results within ``near_hull_at_most`` eV/atom of the hull, as parents; a
    substitution result keeps the family of the structure it was substituted into."""
    from discovery.loop import family_of
    from discovery.substitution import Parent
    from orchestration.campaign.sun import parse_cif

    links = parent_links(camp)
    out = []
    for c, _, r in _successes(camp, round_index):
        e = r.targets.get("e_above_hull")
        if r.status != "ok" or e is None or not math.isfinite(e) or e > near_hull_at_most:
            continue
        s = parse_cif(r.relaxed_cif)
        if s is not None:
            out.append(Parent(id=c.id, structure=s, e_above_hull=float(e), origin="campaign",
                              family=family_of(c.id, links)))
    return out


def propose(camp: Campaign, round_index: int, *, exclude_formulas: set[str]) -> list[Proposal]:
    """This round's substitution proposals (``sources.substitution``), deterministic for the round's seed.

    With the novelty penalty on known formulas (``novelty.enabled``, ``known_penalty`` > 0), no proposal has a
    known formula (:func:`orchestration.campaign.sun.known_formulas`): substituting into a near-hull structure
    mostly lands on a known compound (55 % of the 300 best-ranked proposals of the S.U.N. benchmark's round 0),
    which can be S.U.N. only as a new polymorph (1 of 16 such picks in its loops), and a soft penalty still let
    them fill half of the pool and some of the batch."""
    from discovery.substitution import propose_substitutions, seed_parents
    from orchestration.campaign.sun import known_formulas
    from orchestration.config import build_search_space

    novelty = camp.config.novelty
    if novelty.enabled and novelty.known_penalty > 0:
        exclude_formulas = set(exclude_formulas) | known_formulas(camp.config)

    cfg = camp.config.sources.substitution
    assert cfg is not None
    space = build_search_space(camp.config)
    parents = campaign_parents(camp, round_index, near_hull_at_most=cfg.near_hull_at_most)
    if cfg.seed_structures:
        parents += seed_parents(space=space, max_e_above_hull=cfg.near_hull_at_most)
    if not parents:
        return []
    return propose_substitutions(parents, space=space, n=cfg.candidates, seed=camp.seed_for(round_index) % (2**31),
                                 rates=substitution_rates(camp, round_index), partial=cfg.partial,
                                 exclude_formulas=exclude_formulas, family_rates=cfg.family_weight > 0)


def known_structure_matches(camp: Campaign, round_index: int, proposals: Sequence[Proposal]) -> set[int]:
    """Indices of proposals whose (unrelaxed) structure matches a relaxed result of an earlier round
    (pymatgen StructureMatcher, same reduced formula only)."""
    from discovery.selection import unique_structures
    from orchestration.campaign.sun import parse_cif

    by_formula: dict[str, list[Any]] = {}
    for r in camp.store.results(camp.name):
        if r.round_index < round_index and r.status == "ok":
            s = parse_cif(r.relaxed_cif)
            if s is not None:
                by_formula.setdefault(s.composition.reduced_formula, []).append(s)
    out: set[int] = set()
    for i, p in enumerate(proposals):
        known = by_formula.get(p.structure.composition.reduced_formula)
        if known and not unique_structures([p.structure], known=known):
            out.add(i)
    return out


def offline_crystals(camp: Campaign, round_index: int, *, limit: int = 64) -> list[Crystal]:
    """Labelled candidates to replay as offline trajectories: converged results of earlier rounds, lowest
    E_hull first (the generator's view: space group, composition, lattice of the candidate as proposed)."""
    rows = []
    for c, _, r in _successes(camp, round_index):
        e = r.targets.get("e_above_hull", r.targets.get("formation_energy_per_atom"))
        if r.status == "ok" and e is not None and math.isfinite(e):
            rows.append((float(e), c.id, plain(c)))
    rows.sort(key=lambda t: (t[0], t[1]))
    return [c for _, _, c in rows[:limit]]


def oracle_candidate(crystal: Crystal) -> Candidate:
    """What the oracle evaluates: the proposed structure of a substitution candidate, else the crystal row."""
    from oracles.base import Candidate
    from orchestration.campaign.sun import parse_cif

    cif = crystal.extra.get("structure_cif")
    structure = parse_cif(cif) if isinstance(cif, str) else None
    if structure is not None:
        return Candidate.from_structure(structure, id=crystal.id)
    return Candidate.from_crystal(plain(crystal))
