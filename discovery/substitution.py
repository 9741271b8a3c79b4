"""Isovalent-substitution candidates: the second candidate source of a discovery round (GNoME-style).

A :class:`Parent` is a relaxed structure near the convex hull (an MP-20 seed structure or a
result the campaign confirmed). A :class:`Proposal` replaces elements of a parent by isovalent ones
(:func:`isovalent_pairs`) — all sites of an element (full) or one Wyckoff orbit of it (partial) —
and rescales the volume; the oracle relaxes the 3-D structure directly (no pyxtal decoding).
Proposals are ranked by the learned success rates of their substitutions
(:class:`~discovery.substitution_rates.SubstitutionRates`, Thompson-sampled) times the parent's
quality. Everything here is pure: no store, no Prefect, no MLflow.

Symmetry. A Wyckoff orbit is mapped onto itself by every operation of the parent's space group G, so
replacing all sites of an element by one not yet present (full) or one whole orbit of it (partial) leaves
every operation of G a symmetry of the result: a full substitution keeps the space group; a partial one
keeps G as a subgroup of the new group — the same group in practice, a higher one only by accident (the
tests check G's operations on partial proposals). Splitting an orbit, which would lower G, is not done.
The proposal's ``crystal`` is always recomputed with spglib
(:func:`~discovery.datasets.structures.crystal_from_structure`), and every search-space check is made on
that crystal; the spglib estimate on the parent only prunes candidates cheaply.

Chemistry. A parent must have a charge-balanced assignment of one oxidation state per element
(:func:`~discovery.substitution_rates.charge_assignments`, SMACT's rule): mixed-valence parents (Fe₃O₄,
Co₃O₄) and intermetallics give no proposals.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import spglib
from pymatgen.core import Composition, Element, Structure

from discovery.crystal import Crystal
from discovery.datasets.structures import RowError, crystal_from_structure
from discovery.gfn.space import SearchSpace
from discovery.substitution_parents import Parent, parent_quality, seed_parents
from discovery.substitution_rates import (
    MIN_LAMBDA,
    Pair,
    SubstitutionRates,
    atomic_radius,
    charge_assignments,
    ionic_radius,
    isovalent_pairs,
    oxidation_states,
    pauling_ok,
    smact_valid,
    substitutable,
    substitution_lambda,
)

__all__ = [
    "Parent", "Proposal", "SubstitutionRates", "charge_assignments", "isovalent_pairs", "oxidation_states",
    "parent_quality", "propose_substitutions", "seed_parents", "substitution_lambda",
]

SYMPREC = 0.1  # Å, as crystal_from_structure and the MP-20 tables
ANGLE_TOLERANCE = 5.0  # degrees
MAX_MAPS_PER_PARENT = 64  # cap on the required substitutions tried per parent (nearest radii first)
MAX_ID_LENGTH = 120
VOLUME_RATIO_MIN, VOLUME_RATIO_MAX = 0.5, 2.0  # clip of the rescaled / parent volume


@dataclass(frozen=True, slots=True)
class Proposal:
    """One substituted structure, ready for the oracle."""

    id: str  # deterministic, unique per (parent id, substitution), <= 120 characters
    structure: Structure  # substituted, volume-rescaled structure (what the oracle relaxes)
    crystal: Crystal  # crystal_from_structure(structure, id=id): its space group, conventional counts, lattice
    parent_id: str
    substitutions: tuple[Pair, ...]  # (old element, new element) pairs, sorted
    partial: bool  # True when only part of an element's sites were replaced
    prior: float  # the ranking probability used (0..1)
    family: str = ""  # the parent's family (Parent.family_id)


@cache
def _reduced_formula(counts_items: tuple[tuple[str, int], ...]) -> str:
    return Composition(dict(counts_items)).reduced_formula


@cache
def _normalised_formula(text: str) -> str:
    try:
        return Composition(text).reduced_formula
    except Exception:
        return text


# ----------------------------------------------------------------------------------------------------------
# parents: symmetry analysis, cached


@dataclass(frozen=True, slots=True)
class _ParentInfo:
    structure: Structure  # held so that the id() in the cache key cannot be reused while cached
    space_group: int
    conv_counts: dict[str, int]  # spglib standardised (conventional) cell, an estimate of the Crystal's counts
    site_counts: dict[str, int]  # atoms per element in ``structure``
    orbits: dict[str, tuple[tuple[int, ...], ...]]  # element -> its Wyckoff orbits (site indices), by first index
    species: tuple[str, ...]  # element of each site
    assignments: tuple[dict[str, int], ...]  # charge-balanced oxidation states of the parent (charge_assignments)

    def states(self, element: str) -> set[int]:
        """Oxidation states ``element`` takes in some charge-balanced assignment of the parent."""
        return {a[element] for a in self.assignments}


_INFO: dict[tuple[str, int], _ParentInfo] = {}


def _parent_info(parent: Parent) -> _ParentInfo | None:
    """The parent's symmetry and charge facts; None when it cannot host a substitution (disordered, no
    charge-balanced assignment, failed spglib analysis), decided before spglib where possible."""
    key = (parent.id, id(parent.structure))
    info = _INFO.get(key)
    if info is not None and info.structure is parent.structure:
        return info
    if len(_INFO) > 50_000:
        _INFO.clear()
    s = parent.structure
    if not s.is_ordered or len(s) == 0:
        return None
    species = tuple(str(sp.symbol) for sp in s.species)
    site_counts: dict[str, int] = {}
    for el in species:
        site_counts[el] = site_counts.get(el, 0) + 1
    g = math.gcd(*site_counts.values())
    assignments = charge_assignments(tuple(sorted((k, v // g) for k, v in site_counts.items())))
    if not assignments:  # not cached: a cached None could not hold its structure's id (and this is cheap)
        return None
    try:
        ds = spglib.get_symmetry_dataset((s.lattice.matrix.tolist(), s.frac_coords.tolist(), list(s.atomic_numbers)),
                                         symprec=SYMPREC, angle_tolerance=ANGLE_TOLERANCE)
    except Exception:
        ds = None
    if ds is None:
        return None
    conv: dict[str, int] = {}
    for z in ds.std_types:
        el = Element.from_Z(int(z)).symbol
        conv[el] = conv.get(el, 0) + 1
    groups: dict[int, list[int]] = {}
    for i, rep in enumerate(ds.equivalent_atoms):
        groups.setdefault(int(rep), []).append(i)
    orbits: dict[str, list[tuple[int, ...]]] = {}
    for idx in sorted(groups.values(), key=lambda grp: grp[0]):
        orbits.setdefault(species[idx[0]], []).append(tuple(idx))
    out = _ParentInfo(s, int(ds.number), conv, site_counts, {k: tuple(v) for k, v in orbits.items()}, species,
                      assignments)
    _INFO[key] = out
    return out


# ----------------------------------------------------------------------------------------------------------
# candidates


@dataclass(frozen=True, slots=True)
class _Candidate:
    parent: int  # index into the parents
    full: tuple[Pair, ...]  # full replacements
    partial: tuple[str, str, int] | None  # (old, new, orbit index among old's orbits)
    counts: dict[str, int]  # estimated conventional counts
    formula: str  # reduced formula
    space_group: int  # estimated (the parent's)

    @property
    def substitutions(self) -> tuple[Pair, ...]:
        extra = [(self.partial[0], self.partial[1])] if self.partial else []
        return tuple(sorted({*self.full, *extra}))


def _candidate_id(parent_id: str, cand: _Candidate) -> str:
    parts = [f"{a}-{b}" for a, b in sorted(cand.full)]
    if cand.partial:
        a, b, k = cand.partial
        parts.append(f"{a}-{b}-o{k}")
    tail = ".".join(sorted(parts))
    text = f"{parent_id}:{tail}"
    if len(text) <= MAX_ID_LENGTH:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    return f"{parent_id[: MAX_ID_LENGTH - len(tail) - 15]}~{digest}:{tail}"[-MAX_ID_LENGTH:]


def _in_space_counts(counts: dict[str, int], space: SearchSpace, allowed: frozenset[str]) -> bool:
    return (
        all(el in allowed for el in counts)
        and space.min_elements <= len(counts) <= space.max_elements
        and max(counts.values()) <= space.max_atoms_per_element
        and sum(counts.values()) <= space.max_atoms
    )


def _by_radius(old: str, partners: Sequence[str]) -> list[str]:
    r = atomic_radius(old)
    return sorted(partners, key=lambda e: (abs(atomic_radius(e) - r), e))


def _candidates(pi: int, info: _ParentInfo, space: SearchSpace, *, partial: bool,
                pairs: dict[str, tuple[str, ...]], excluded: frozenset[str]) -> Iterator[_Candidate]:
    """Every substitution of one parent that passes the cheap (counts-only) checks."""
    allowed = frozenset(space.elements)
    present = set(info.conv_counts)
    outside = sorted(el for el in present if el not in allowed)
    inside = sorted(el for el in present if el in allowed)

    def partners(a: str) -> list[str]:  # isovalent in this parent: b can take a state a has in a balanced assignment
        sa = info.states(a)
        return [b for b in _by_radius(a, pairs.get(a, ())) if b in allowed and any(substitutable(a, b, q, MIN_LAMBDA) for q in sa)]

    options = [[b for b in partners(a) if b not in present] for a in outside]
    if any(not o for o in options):
        return
    maps = itertools.islice(
        (m for m in itertools.product(*options) if len(set(m)) == len(m)), MAX_MAPS_PER_PARENT,
    ) if outside else iter([()])
    for images in maps:
        required = tuple(zip(outside, images, strict=True))
        used = present | set(images)
        extras: list[tuple[tuple[Pair, ...], tuple[str, str, int] | None]] = [] if not required else [((), None)]
        for a in inside:
            for b in partners(a):
                if b in used:
                    continue
                extras.append((((a, b),), None))
                if partial and len(info.orbits.get(a, ())) > 1:
                    extras.extend(((), (a, b, k)) for k in range(len(info.orbits[a])))
        for full_extra, part in extras:
            full = required + full_extra
            subs = [*full, *([part[:2]] if part else [])]
            assignment = _assignment_for(info, subs)
            if assignment is None:
                continue  # each pair is isovalent in some assignment, but not all in the same one
            counts = dict(info.conv_counts)
            for a, b in full:
                counts[b] = counts.pop(a)
            if part is not None:
                a, b, k = part
                frac = len(info.orbits[a][k]) / info.site_counts[a]
                moved = counts[a] * frac
                if abs(moved - round(moved)) > 1e-6:
                    continue
                counts[b] = round(moved)
                counts[a] -= counts[b]
            if not _in_space_counts(counts, space, allowed):
                continue
            if not pauling_ok(assignment, subs, counts) and not smact_valid(counts):
                continue
            formula = _reduced_formula(tuple(sorted(counts.items())))
            if formula in excluded:
                continue
            if space.space_groups is not None and info.space_group not in space.space_groups:
                continue
            yield _Candidate(pi, full, part, counts, formula, info.space_group)


def _assignment_for(info: _ParentInfo, subs: Sequence[Sequence[str]]) -> dict[str, int] | None:
    """The parent's first charge-balanced assignment in which every new element can take the old one's state."""
    for a in info.assignments:
        if all(substitutable(old, new, a[old], MIN_LAMBDA) for old, new in subs):
            return a
    return None


def _rescaled(parent: Parent, info: _ParentInfo, cand: _Candidate) -> Structure:
    """The substituted structure, its volume scaled by pymatgen's reference-lattice-scaling rule.

    RLS (``RLSVolumePredictor``): ``V_new = V_parent · (Σ_k r_k n_k^{1/3} / Σ_k r'_k n'_k^{1/3})³`` over the
    elements ``k`` of the parent (radii per unit length, the 1/3 power for packing), where ``r_k`` is the mean
    radius of the atoms now on the sites ``k`` occupied in the parent: for a full substitution this is RLS
    exactly; for a partial one it keeps the site groups of the parent (RLS summed over the new composition
    would count a split element twice: Σ n^{1/3} grows when an element is split, inflating SiO₂ → Si₂SeO₃ by 4×).

    Radii: pymatgen's (Shannon) ionic radii at the parent's oxidation states — its first charge-balanced
    assignment (:func:`charge_assignments`) in which each new element takes the state of the one it replaces
    (isovalence), chosen instead of RLS's bond-valence analysis, which is slower and fails on many non-oxides;
    for a substituted pair, atomic radii for both ions when either has no positive ionic radius (H⁺), and for
    an untouched element whichever it has (it cancels in the ratio). The volume ratio is clipped to
    [``VOLUME_RATIO_MIN``, ``VOLUME_RATIO_MAX``]: radii rules fail in both directions for the odd pair
    (Li⁺ → H⁺) and a relaxation from a cell crushed or doubled in volume rarely recovers.
    """
    species = list(info.species)
    mapping = dict(cand.full)
    species = [mapping.get(el, el) for el in species]
    if cand.partial is not None:
        a, b, k = cand.partial
        for i in info.orbits[a][k]:
            species[i] = b
    s = parent.structure
    new = Structure(s.lattice, species, s.frac_coords, coords_are_cartesian=False)
    states = _assignment_for(info, cand.substitutions) or {}
    subs = cand.substitutions

    def radius(el: str, state: int | None, partner: str | None) -> float:
        if state is not None:
            r = ionic_radius(el, state)
            rp = ionic_radius(partner, state) if partner is not None else 1.0
            if r is not None and r > 0 and rp is not None and rp > 0:
                return r
        return atomic_radius(el)

    num = den = 0.0
    for old, n_old in info.site_counts.items():
        q = states.get(old)
        partners = [b for a, b in subs if a == old]
        partner = partners[0] if partners else None
        r_old = radius(old, q, partner)
        now = [species[i] for i, el in enumerate(info.species) if el == old]
        r_now = sum(r_old if el == old else radius(el, q, old) for el in now) / n_old
        weight = n_old ** (1 / 3)
        num += r_now * weight
        den += r_old * weight
    ratio = min(max((num / den) ** 3, VOLUME_RATIO_MIN), VOLUME_RATIO_MAX)
    new.scale_lattice(float(s.volume) * ratio)
    return new


def _crystal_ok(c: Crystal, space: SearchSpace, excluded: frozenset[str]) -> bool:
    counts = {k: v for k, v in c.counts.items() if v > 0}
    return (
        _in_space_counts(counts, space, frozenset(space.elements))
        and smact_valid(counts)
        and (space.space_groups is None or c.space_group in space.space_groups)
        and c.reduced_formula() not in excluded
    )


def propose_substitutions(parents: Sequence[Parent], *, space: SearchSpace, n: int, seed: int,
                          rates: SubstitutionRates | None = None, partial: bool = True,
                          exclude_formulas: Collection[str] = (), thompson: bool = True,
                          family_rates: bool = False) -> list[Proposal]:
    """Up to ``n`` proposals, best first, deterministic for a ``seed``.

    Candidates: every parent element outside ``space.elements`` must be replaced (fully) by an isovalent
    element of the space not yet in the parent (at most ``MAX_MAPS_PER_PARENT`` such maps per parent,
    closest atomic radii first); on top of that, one element of the space may be replaced fully, or —
    when ``partial`` — on one of its Wyckoff orbits (an element with a single orbit has no partial
    substitution). A new element never merges with one already present. Isovalent *in the parent*: the new
    element takes the oxidation state the old one has in a charge-balanced assignment of the parent, at a
    positive data-mined λ (:func:`~discovery.substitution_rates.substitutable`), all pairs of a proposal in the
    same assignment.

    Ranking: ``prior = q(parent) · Π_pairs p(pair)``, with ``p`` one Thompson draw per distinct pair from
    ``rates`` (its posterior mean when ``thompson`` is False; ``SubstitutionRates()`` when ``rates`` is None)
    and ``q`` :func:`parent_quality`; ties break on (parent id, substitutions). Pairs start at the prior mean
    (1/3 by default) until outcomes arrive, so a fresh ranking is parent quality plus Thompson noise. With
    ``family_rates`` the product also has a factor per parent family (:attr:`Parent.family_id`): one draw from its
    family rate for a family with outcomes in ``rates`` (taken after the pair draws, so those do not change), the
    prior mean for the others (a constant: a ranking before any outcome is the same as without family rates).

    Every proposal is checked on its ``crystal`` (spglib at 0.1 Å, conventional cell): SMACT-valid, elements in
    ``space.elements``, ``min_elements..max_elements`` elements, ``<= max_atoms`` atoms and
    ``<= max_atoms_per_element`` per element, space group in ``space.space_groups`` when set, reduced formula
    not in ``exclude_formulas``; the proposals have distinct (reduced formula, space group). The lattice is
    *not* checked against ``space.length_range``/``angle_range``: a proposal is a 3-D structure for the oracle,
    not a GFN action, and its conventional cell may fall outside the GFN's lattice box.

    Volume: rescaled after substitution by pymatgen's reference-lattice-scaling rule (see ``_rescaled``), so
    that NaCl → KCl starts at 1.43 × the NaCl volume (the experimental ratio is 1.39), and the relaxation
    starts near equilibrium rather than at the parent's volume.

    Cost: spglib once per parent (cached for the process by parent id and structure object), a counts-only
    check per candidate, and ``crystal_from_structure`` only for candidates ranked high enough to be used.
    """
    if n <= 0 or not parents:
        return []
    rates = rates if rates is not None else SubstitutionRates()
    excluded = frozenset(_normalised_formula(f) for f in exclude_formulas)
    infos = [_parent_info(p) for p in parents]
    vocab = set(space.elements)
    for info in infos:
        if info is not None:
            vocab.update(info.conv_counts)
    pairs = isovalent_pairs(sorted(vocab, key=lambda e: Element(e).Z))
    cands = [
        c for pi, info in enumerate(infos) if info is not None
        for c in _candidates(pi, info, space, partial=partial, pairs=pairs, excluded=excluded)
    ]
    rng = np.random.default_rng(seed)
    all_pairs = sorted({p for c in cands for p in c.substitutions})
    draws = {p: rates.sample(p, rng) if thompson else rates.mean(p) for p in all_pairs}
    quality = [parent_quality(p.e_above_hull) for p in parents]
    if family_rates:
        fams = sorted({parents[c.parent].family_id for c in cands} & set(rates.families))
        fdraw = {f: rates.family_sample(f, rng) if thompson else rates.family_mean(f) for f in fams}
        quality = [q * fdraw.get(p.family_id, rates.prior_mean) for q, p in zip(quality, parents, strict=True)]
    ranked = [(-quality[c.parent] * math.prod(draws[p] for p in c.substitutions), c) for c in cands]
    ranked.sort(key=lambda t: (t[0], parents[t[1].parent].id, t[1].full, t[1].partial or ()))

    out: list[Proposal] = []
    seen: set[tuple[str, int]] = set()
    used_ids: set[str] = set()
    for neg_prior, c in ranked:
        if len(out) >= n:
            break
        if (c.formula, c.space_group) in seen:
            continue
        parent, info = parents[c.parent], infos[c.parent]
        pid = _candidate_id(parent.id, c)
        if pid in used_ids:  # two parents given the same id
            continue
        assert info is not None
        structure = _rescaled(parent, info, c)
        try:
            crystal = crystal_from_structure(structure, id=pid, symprec=SYMPREC, angle_tolerance=ANGLE_TOLERANCE)
        except RowError:
            continue
        key = (crystal.reduced_formula(), crystal.space_group)
        if key in seen or not _crystal_ok(crystal, space, excluded):
            continue
        seen.add(key)
        used_ids.add(pid)
        out.append(Proposal(pid, structure, crystal, parent.id, c.substitutions, c.partial is not None, -neg_prior,
                            parent.family_id))
    return out
