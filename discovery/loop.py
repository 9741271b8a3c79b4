"""Decisions of a round that are not a model: novelty penalties, the batch-size cap, the split of the batch
between candidate sources, the bonus of substitutions into hosts that worked, and which candidates the campaign
has already tried.

Pure functions over plain data (no store, no Prefect, no MLflow): the campaign (``orchestration``) feeds them
what it has stored; the benchmark's baselines call the same functions without a campaign store.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from discovery.crystal import Crystal

if TYPE_CHECKING:
    from discovery.substitution_rates import SubstitutionRates

Source = Literal["generator", "substitution"]
SOURCES: tuple[Source, ...] = ("generator", "substitution")
SplitRule = Literal["proportional", "thompson"]
"""How an adaptive split follows the sources' S.U.N. rates (see :func:`source_split`)."""
SPLIT_RULES: tuple[SplitRule, ...] = get_args(SplitRule)


def novelty_penalty(formulas: Sequence[str], *, known: Collection[str], tried: Collection[str] = (),
                    known_penalty: float = 1.0, tried_penalty: float = 1.0) -> np.ndarray:
    """(n,) penalties in eV/atom to subtract from acquisition scores (higher score = better).

    ``formulas``: reduced formulas of the candidates; ``known``: reduced formulas that are not new (the hull
    reference's and the seed data's); ``tried``: reduced formulas the campaign already sent to the oracle. A
    formula both known and tried gets both penalties."""
    known_set, tried_set = set(known), set(tried)
    return np.array([known_penalty * (f in known_set) + tried_penalty * (f in tried_set) for f in formulas], dtype=float)


def batch_cap(batch_size: int, *, max_calls: int | None, calls_so_far: int) -> int:
    """The round's batch size B: ``batch_size`` capped so that the campaign never exceeds ``max_calls`` oracle
    calls (``calls_so_far``: results or batch slots of earlier rounds, whichever is larger)."""
    if max_calls is None:
        return batch_size
    return max(0, min(batch_size, max_calls - calls_so_far))


@dataclass(frozen=True, slots=True)
class SourceOutcome:
    """What one source's oracle calls gave so far: ``calls`` (every result) and ``successes`` (S.U.N.)."""

    calls: int = 0
    successes: int = 0

    def posterior_mean(self, *, a: float = 1.0, b: float = 1.0) -> float:
        """Mean of the Beta(a + successes, b + failures) posterior of the success rate."""
        return (a + self.successes) / (a + b + self.calls)


def prob_better(better: SourceOutcome, worse: SourceOutcome, *, a: float = 1.0, b: float = 1.0,
                grid: int = 4001) -> float:
    """P(p₁ > p₂) for independent success rates p₁ ~ Beta(a + s₁, b + f₁) (``better``) and p₂ likewise
    (``worse``): ∫ f₁(x) F₂(x) dx on a ``grid``-point midpoint rule over [0, 1] (deterministic; error < 1e-4 for
    the counts of a campaign)."""
    from scipy.stats import beta

    x = (np.arange(grid) + 0.5) / grid
    f1 = beta.pdf(x, a + better.successes, b + better.calls - better.successes)
    cdf2 = beta.cdf(x, a + worse.successes, b + worse.calls - worse.successes)
    return float(np.clip(np.sum(f1 * cdf2) / grid, 0.0, 1.0))


def source_split(batch_size: int, *, share: float, adaptive: bool = True, min_share: float = 0.1,
                 outcomes: Mapping[str, SourceOutcome] | None = None,
                 rule: SplitRule = "proportional") -> dict[Source, int]:
    """How many of the round's ``batch_size`` oracle calls each source gets.

    Without outcomes (the first round) or when not ``adaptive``: ``share`` of the batch to substitutions. Adaptive,
    once both sources have outcomes, with p the Beta(1, 1) posterior of each source's S.U.N. rate:

    * ``rule="proportional"``: share_substitution = E[p_sub] / (E[p_sub] + E[p_gen]) (a source half as good keeps
      a third of the batch);
    * ``rule="thompson"``: share_substitution = P(p_sub > p_gen), the share of slots Thompson sampling would give
      substitutions (probability matching on which source is better: the clearly worse source is cut to the floor).

    The share is clipped to [``min_share``, 1 − ``min_share``] so neither source is starved (it keeps being
    measured). Counts are rounded half-up towards substitutions and sum to batch_size."""
    if not 0 <= share <= 1 or not 0 <= min_share <= 0.5:
        raise ValueError(f"need share in [0, 1] and min_share in [0, 0.5], got {share}, {min_share}")
    if rule not in SPLIT_RULES:
        raise ValueError(f"rule: {rule!r} is not one of {', '.join(SPLIT_RULES)}")
    s = share
    if adaptive and outcomes and all(outcomes.get(k, SourceOutcome()).calls > 0 for k in SOURCES):
        if rule == "thompson":
            s = prob_better(outcomes["substitution"], outcomes["generator"])
        else:
            p_sub = outcomes["substitution"].posterior_mean()
            p_gen = outcomes["generator"].posterior_mean()
            s = p_sub / (p_sub + p_gen)
        s = min(max(s, min_share), 1.0 - min_share)
    n_sub = min(batch_size, math.floor(s * batch_size + 0.5))
    return {"generator": batch_size - n_sub, "substitution": n_sub}


def source_outcomes(sources: Sequence[str], successes: Sequence[bool]) -> dict[str, SourceOutcome]:
    """Per source, the calls and successes of parallel lists (one entry per oracle result)."""
    out: dict[str, SourceOutcome] = {k: SourceOutcome() for k in SOURCES}
    for src, ok in zip(sources, successes, strict=True):
        cur = out.setdefault(src, SourceOutcome())
        out[src] = SourceOutcome(cur.calls + 1, cur.successes + int(bool(ok)))
    return out


def earlier_keys(candidates: Iterable[Crystal], *, round_index: int,
                 reusable: Collection[str] = ("substitution",)) -> set[tuple[str, int]]:
    """(reduced formula, space group) keys that round ``round_index``'s new candidates must not repeat: those of
    every candidate of an earlier round (``extra["round"]``), except the candidates of a ``reusable`` source
    (``extra["source"]``) that were not sent to the oracle (``extra["selected"]`` false).

    An unselected substitution proposal stays available: the next round proposes it again if its updated pair
    rates still rank it, and scores it with the refitted proxy. Blocking it left each round only what every
    earlier round had ranked lower (the S.U.N. benchmark's substitution pool shrank 297 → 165 → 129 while the
    best-scored leftovers of round 0 could never be picked)."""
    from discovery.selection import dedupe_key

    reuse = set(reusable)
    return {
        dedupe_key(c) for c in candidates
        if int(c.extra.get("round", 0)) < round_index  # type: ignore[call-overload]
        and not (str(c.extra.get("source", "generator")) in reuse and not c.extra.get("selected"))
    }


def untried(formulas: Sequence[str], *, tried: Collection[str]) -> list[int]:
    """Indices of candidates whose reduced formula the campaign has not sent to the oracle yet."""
    tried_set = set(tried)
    return [i for i, f in enumerate(formulas) if f not in tried_set]


def family_of(parent: str, parent_of: Mapping[str, str]) -> str:
    """The seed structure ``parent`` descends from: follow ``parent_of`` (candidate id → the parent it was
    substituted into) until an id with no parent (a seed structure, or a generator result); stops on a cycle."""
    seen = {parent}
    while parent in parent_of and parent_of[parent] not in seen:
        parent = parent_of[parent]
        seen.add(parent)
    return parent


def residual_family(*, source: str | None, family: str | None, own_id: str | None = None) -> str | None:
    """The residual proxy's family label of a crystal (``proxy.residual_family_std``): a substitution's family (the
    seed structure it descends from, :func:`family_of`); any other crystal's ``own_id`` — for a labelled result the
    root of the family its own substitutions will carry — or None for an unlabelled candidate (a family of its own)."""
    return family if source == "substitution" and family is not None else own_id


def family_bonus(families: Sequence[str | None], rates: SubstitutionRates, *, weight: float) -> np.ndarray:
    """(n,) bonuses in eV/atom to add to acquisition scores: ``weight · (m_f − m₀)`` for a candidate substituted
    into family ``f`` (:meth:`SubstitutionRates.family_mean` ``m_f``, the prior mean ``m₀``), 0 for ``None`` (not a
    substitution). A family with no outcomes gets 0; one success under the default Beta(1, 2) prior
    ``+weight/6``, one failure ``−weight/12``. ``weight`` is in eV/atom per unit of success probability."""
    m0 = rates.prior_mean
    return np.array([0.0 if f is None else weight * (rates.family_mean(f) - m0) for f in families], dtype=float)
