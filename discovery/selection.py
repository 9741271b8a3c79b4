"""Batch selection: remove duplicates, then choose a diverse batch from scored candidates.

Pure functions over :class:`~discovery.crystal.Crystal` lists and numpy arrays; no prefect/mlflow.

* Dedupe key: (reduced formula, space group). A candidate is a duplicate when its key was already
  proposed or labelled (``known``) or appeared earlier in the same list.
* Distance between two crystals, in [0, 1], a weighted sum of three parts each in [0, 1]:
  composition (half the L1 distance between atomic-fraction vectors), space group (0 same group,
  ``same_system`` same crystal-lattice system, 1 otherwise) and lattice (mean |Δ log length| and
  |Δ angle|/90°, squashed by ``x / (1 + x)``).
* ``select_batch``: ``"mmr"`` greedy maximal marginal relevance,
  ``(1 - diversity) * score01 + diversity * min distance to the batch``; ``"k_center"`` farthest-first
  over the best-scored pool (size ``pool_factor * B``) starting from the best score; ``"greedy"``
  the top-B scores. Ties are broken by a seeded random order, so results are deterministic.
* ``unique_structures``: after relaxation, drop structures that StructureMatcher finds equal to a
  known one or an earlier one (e.g. to count unique hits).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from discovery.crystal import Crystal

if TYPE_CHECKING:
    from pymatgen.core import Structure

DedupeKey = tuple[str, int]
SelectionMethod = Literal["mmr", "k_center", "greedy"]
ScoreScale = Literal["per_group", "pooled"]

_SYSTEM_BOUNDS = (2, 15, 74, 142, 167, 194, 230)  # last space group of each crystal system


def dedupe_key(crystal: Crystal) -> DedupeKey:
    """(reduced formula, space group): two crystals with the same key count as the same candidate."""
    return (crystal.reduced_formula(), int(crystal.space_group))


@dataclass(frozen=True, slots=True)
class DedupeResult:
    kept: list[int]  # indices into the input, in input order
    n_known: int  # dropped because the key was already known
    n_repeated: int  # dropped because the key appeared earlier in the input


def dedupe(crystals: Sequence[Crystal], *, known: Collection[DedupeKey] = ()) -> DedupeResult:
    """Indices of the first occurrence of each key not in ``known``."""
    seen = set(known)
    in_batch: set[DedupeKey] = set()
    kept: list[int] = []
    n_known = n_rep = 0
    for i, c in enumerate(crystals):
        key = dedupe_key(c)
        if key in in_batch:
            n_rep += 1
        elif key in seen:
            n_known += 1
        else:
            kept.append(i)
        in_batch.add(key)
    return DedupeResult(kept, n_known, n_rep)


@dataclass(frozen=True, slots=True)
class DistanceWeights:
    composition: float = 0.5
    space_group: float = 0.3
    lattice: float = 0.2
    same_system: float = 0.5  # space-group distance for two groups of the same crystal system

    def __post_init__(self) -> None:
        parts = (self.composition, self.space_group, self.lattice)
        if min(parts) < 0 or sum(parts) <= 0:
            raise ValueError(f"distance weights must be >= 0 with a positive sum, got {parts}")
        if not 0 <= self.same_system <= 1:
            raise ValueError(f"same_system must be in [0, 1], got {self.same_system}")


@dataclass(frozen=True, slots=True)
class Features:
    """Per-crystal arrays the distance is computed from (n rows)."""

    fractions: np.ndarray  # (n, k) atomic fractions over ``elements``
    space_group: np.ndarray  # (n,) int
    system: np.ndarray  # (n,) int, crystal-lattice system index 0..6
    lattice: np.ndarray  # (n, 6): log a, log b, log c, α/90, β/90, γ/90
    elements: tuple[str, ...]


def featurize(crystals: Sequence[Crystal]) -> Features:
    elements = tuple(sorted({el for c in crystals for el in c.counts}))
    col = {el: j for j, el in enumerate(elements)}
    frac = np.zeros((len(crystals), len(elements)))
    for i, c in enumerate(crystals):
        total = float(sum(c.counts.values())) or 1.0
        for el, n in c.counts.items():
            frac[i, col[el]] = n / total
    sg = np.array([int(c.space_group) for c in crystals], dtype=int)
    lat = np.array([c.lattice for c in crystals], dtype=float).reshape(-1, 6)
    lat = np.concatenate([np.log(np.maximum(lat[:, :3], 1e-6)), lat[:, 3:] / 90.0], axis=1)
    return Features(frac, sg, np.searchsorted(_SYSTEM_BOUNDS, sg), lat, elements)


def distances_to(features: Features, i: int, *, weights: DistanceWeights = DistanceWeights()) -> np.ndarray:
    """Distances in [0, 1] from crystal ``i`` to every crystal, shape (n,)."""
    w = weights
    comp = 0.5 * np.abs(features.fractions - features.fractions[i]).sum(axis=1)
    sg = np.where(
        features.space_group == features.space_group[i],
        0.0,
        np.where(features.system == features.system[i], w.same_system, 1.0),
    )
    x = np.abs(features.lattice - features.lattice[i]).mean(axis=1)
    lat = x / (1.0 + x)
    total = w.composition + w.space_group + w.lattice
    return np.asarray((w.composition * comp + w.space_group * sg + w.lattice * lat) / total)


def pairwise_distances(crystals: Sequence[Crystal], *, weights: DistanceWeights = DistanceWeights()) -> np.ndarray:
    """(n, n) distance matrix; O(n²) memory, meant for tests and small sets."""
    f = featurize(crystals)
    return np.stack([distances_to(f, i, weights=weights) for i in range(len(crystals))]) if crystals else np.zeros((0, 0))


def select_batch(
    crystals: Sequence[Crystal],
    scores: Sequence[float] | np.ndarray,
    *,
    batch_size: int,
    method: SelectionMethod = "mmr",
    diversity: float = 0.5,
    seed: int = 0,
    weights: DistanceWeights = DistanceWeights(),
    pool_factor: int = 5,
    context: Sequence[Crystal] = (),
    groups: Sequence[str] | None = None,
    quota: Mapping[str, int] | None = None,
    score_scale: ScoreScale = "per_group",
) -> list[int]:
    """Indices of ``batch_size`` candidates (higher score is better), in selection order.

    Candidates with a non-finite score are chosen only when nothing else is left. Fewer than
    ``batch_size`` indices are returned only when there are fewer candidates.

    ``context``: crystals already chosen earlier (e.g. earlier rounds' batches); diversity (``mmr``,
    ``k_center``) is then measured against them too. ``groups`` (one label per candidate, e.g. its source) with
    ``quota`` (label → most picks): a group that has its quota takes no more picks while others still have room
    and candidates; when every group with room is exhausted, the rest of the batch is filled from any group.
    ``score_scale``: with ``groups``, ``"per_group"`` rescales scores to [0, 1] within each group (the quota, not
    the scores, splits the batch between groups); ``"pooled"`` uses one scale for all candidates (the behaviour
    before 2026-12-05), where a group whose scores span 80 eV/atom (the proxy's σ on strained generator cells)
    squeezes another group's 0.3 eV/atom spread into 0.4 % of the scale and MMR picks that group by distance alone.
    """
    s = np.asarray(scores, dtype=float).reshape(-1)
    n = len(crystals)
    if s.shape[0] != n:
        raise ValueError(f"{n} crystals but {s.shape[0]} scores")
    if batch_size < 0 or not 0 <= diversity <= 1:
        raise ValueError(f"need batch_size >= 0 and diversity in [0, 1], got {batch_size}, {diversity}")
    if method not in ("mmr", "k_center", "greedy"):
        raise ValueError(f"unknown selection method {method!r}; use 'mmr', 'k_center' or 'greedy'")
    b = min(batch_size, n)
    if b == 0:
        return []
    if groups is not None and len(groups) != n:
        raise ValueError(f"{n} crystals but {len(groups)} group labels")
    tiebreak = np.random.default_rng(seed).permutation(n)  # lower wins among equal objectives
    label = np.array(list(groups) if groups is not None else [""] * n, dtype=object)
    if score_scale not in ("per_group", "pooled"):
        raise ValueError(f"unknown score_scale {score_scale!r}; use 'per_group' or 'pooled'")
    score01 = _normalise_within(s, label) if score_scale == "per_group" else _normalise(s)
    room = dict(quota or {})

    def open_mask(taken: np.ndarray) -> np.ndarray:
        """Candidates whose group still has room (all, once no group with room has candidates left)."""
        if not room:
            return np.ones(n, dtype=bool)
        ok = np.array([room.get(g, 0) > 0 if g in room else True for g in label], dtype=bool)
        return ok if (ok & ~taken).any() else np.ones(n, dtype=bool)

    def take(i: int) -> None:
        if label[i] in room:
            room[label[i]] -= 1

    if method == "greedy":
        out: list[int] = []
        order = np.lexsort((tiebreak, -score01))
        taken_g = np.zeros(n, dtype=bool)
        for _ in range(b):
            mask = open_mask(taken_g)
            i = int(next(j for j in order if mask[j] and not taken_g[j]))
            out.append(i)
            taken_g[i] = True
            take(i)
        return out
    allowed = np.ones(n, dtype=bool)
    if method == "k_center":
        pool = np.lexsort((tiebreak, -score01))[: max(b, pool_factor * b)]
        allowed[:] = False
        allowed[pool] = True
    feats = featurize([*crystals, *context])
    chosen: list[int] = []
    min_dist = np.full(n + len(context), 1.0)
    for j in range(n, n + len(context)):
        min_dist = np.minimum(min_dist, distances_to(feats, j, weights=weights))
    min_dist = min_dist[:n]
    taken = np.zeros(n, dtype=bool)
    for _ in range(b):
        if method == "mmr":
            objective = (1.0 - diversity) * score01 + diversity * min_dist
        else:  # k_center: first the best score, then farthest-first
            objective = score01 if not chosen and not context else min_dist
        objective = np.where(taken | ~allowed | ~open_mask(taken), -np.inf, objective)
        best = np.max(objective)
        ties = np.flatnonzero(objective >= best - 1e-12) if np.isfinite(best) else np.flatnonzero(~taken & allowed)
        i = int(ties[np.argmin(tiebreak[ties])])
        chosen.append(i)
        taken[i] = True
        take(i)
        min_dist = np.minimum(min_dist, distances_to(feats, i, weights=weights)[:n])
    return chosen


def _normalise(scores: np.ndarray) -> np.ndarray:
    """Scores rescaled to [0, 1] (min → 0, max → 1); non-finite → -1 so they rank last."""
    out = np.full(scores.shape, -1.0)
    ok = np.isfinite(scores)
    if ok.any():
        lo, hi = scores[ok].min(), scores[ok].max()
        out[ok] = (scores[ok] - lo) / (hi - lo) if hi > lo else 1.0
    return out


def _normalise_within(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """:func:`_normalise` applied to each label's scores separately."""
    out = np.empty(scores.shape)
    for g in dict.fromkeys(labels.tolist()):
        mask = labels == g
        out[mask] = _normalise(scores[mask])
    return out


def diversity_summary(crystals: Sequence[Crystal]) -> dict[str, int]:
    """Counts for tracking: distinct space groups, elements and reduced compositions."""
    return {
        "distinct_space_groups": len({c.space_group for c in crystals}),
        "distinct_elements": len({el for c in crystals for el in c.counts}),
        "distinct_compositions": len({c.reduced_formula() for c in crystals}),
    }


def unique_structures(structures: Sequence[Structure], *, known: Sequence[Structure] = (), ltol: float = 0.2,
                      stol: float = 0.3, angle_tol: float = 5.0) -> list[int]:
    """Indices of relaxed structures that match neither a ``known`` structure nor an earlier one in
    the list (pymatgen ``StructureMatcher``; only structures with the same reduced formula are compared)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol)
    seen: dict[str, list[Structure]] = {}
    for s in known:
        seen.setdefault(s.composition.reduced_formula, []).append(s)
    kept: list[int] = []
    for i, s in enumerate(structures):
        group = seen.setdefault(s.composition.reduced_formula, [])
        if not any(matcher.fit(s, other) for other in group):
            kept.append(i)
        group.append(s)
    return kept
