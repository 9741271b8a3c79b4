"""Which element substitutions are allowed, and how often they succeed (for :mod:`discovery.substitution`).

Allowed: :func:`isovalent_pairs` — two elements sharing an oxidation state (:func:`oxidation_states`) at
which the ions are known to replace each other (:func:`substitution_lambda`, Hautier et al.'s data-mined
substitution probabilities in pymatgen); in a given parent, :func:`charge_assignments` says which states
its elements take.

Learned rates: each ordered pair ``(old, new)`` has an independent Beta–Bernoulli success rate: with prior
``Beta(a0, b0)`` and ``s`` successes, ``f`` failures observed, the posterior is
``Beta(a0 + s, b0 + f)``. A proposal with several substitutions credits its outcome to every pair
it used (full credit, no splitting): a multi-substitution success is evidence for each of its pairs.
Full and partial substitutions of the same pair share one rate.

Family rates: the same Beta–Bernoulli count per *parent family*, the seed structure a proposal descends from
(a campaign result substituted again keeps its parent's family: one structure prototype, one rate). Pair rates
say which ions replace each other; family rates say which host structures take substitutions well. In three
loops of the S.U.N. benchmark the hosts were nearly all-or-nothing: substitutions into K₂SnF₆ (mp-1205971) gave
7 S.U.N. results of 7, into BaMnO₃ (mp-1205336) 0 of 5, into Ca₃CdO₄ (mp-1227631) 0 of 4.

What counts as a success is the caller's choice (the campaign uses "the oracle confirmed it
stable, unique and new"); the rates only count.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability
from pymatgen.core import Element, Species

from discovery.chemistry import element_chem, is_smact_valid

Pair = tuple[str, str]
MIN_LAMBDA = 0.0  # isovalent pairs need a positive data-mined substitution log-likelihood (substitution_lambda)


@dataclass
class SubstitutionRates:
    """Beta-Bernoulli success rates per (old, new) pair, learned from outcomes; prior Beta(a0, b0).

    The default prior ``Beta(1, 2)`` has mean 1/3: an untried substitution is assumed to succeed
    less often than not, and one observation moves the mean noticeably (to 1/2 or 1/4).
    """

    a0: float = 1.0
    b0: float = 2.0
    successes: dict[Pair, float] = field(default_factory=dict)
    failures: dict[Pair, float] = field(default_factory=dict)
    family_successes: dict[str, float] = field(default_factory=dict)
    family_failures: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.a0 > 0 and self.b0 > 0):
            raise ValueError(f"the Beta prior needs a0 > 0 and b0 > 0, got a0={self.a0}, b0={self.b0}")

    def update(self, substitutions: Sequence[Pair], success: bool, *, family: str | None = None) -> None:
        """Record one outcome for every distinct pair of ``substitutions`` and, when given, for ``family``."""
        target = self.successes if success else self.failures
        for pair in dict.fromkeys(_pair(p) for p in substitutions):
            target[pair] = target.get(pair, 0.0) + 1.0
        if family is not None:
            fam = self.family_successes if success else self.family_failures
            fam[str(family)] = fam.get(str(family), 0.0) + 1.0

    def posterior(self, pair: Pair) -> tuple[float, float]:
        """Beta parameters ``(a, b)`` of ``pair``'s success rate."""
        p = _pair(pair)
        return self.a0 + self.successes.get(p, 0.0), self.b0 + self.failures.get(p, 0.0)

    def mean(self, pair: Pair) -> float:
        return _beta_mean(self.posterior(pair))

    def sample(self, pair: Pair, rng: np.random.Generator) -> float:
        """One Thompson draw from ``pair``'s posterior."""
        return float(rng.beta(*self.posterior(pair)))

    def family_posterior(self, family: str) -> tuple[float, float]:
        """Beta parameters ``(a, b)`` of ``family``'s success rate (the prior for a family with no outcomes)."""
        return self.a0 + self.family_successes.get(family, 0.0), self.b0 + self.family_failures.get(family, 0.0)

    def family_mean(self, family: str) -> float:
        return _beta_mean(self.family_posterior(family))

    def family_sample(self, family: str, rng: np.random.Generator) -> float:
        """One Thompson draw from ``family``'s posterior."""
        return float(rng.beta(*self.family_posterior(family)))

    @property
    def prior_mean(self) -> float:
        """``a0 / (a0 + b0)``: the rate of a pair or family with no outcomes."""
        return _beta_mean((self.a0, self.b0))

    @property
    def families(self) -> tuple[str, ...]:
        """Families with at least one recorded outcome, sorted."""
        return tuple(sorted(set(self.family_successes) | set(self.family_failures)))

    @property
    def pairs(self) -> tuple[Pair, ...]:
        """Pairs with at least one recorded outcome, sorted."""
        return tuple(sorted(set(self.successes) | set(self.failures)))

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form: ``{"a0", "b0", "pairs": [{"old", "new", "successes", "failures"}, ...],
        "families": [{"family", "successes", "failures"}, ...]}``."""
        return {
            "a0": self.a0,
            "b0": self.b0,
            "pairs": [
                {"old": o, "new": n, "successes": self.successes.get((o, n), 0.0), "failures": self.failures.get((o, n), 0.0)}
                for o, n in self.pairs
            ],
            "families": [
                {"family": f, "successes": self.family_successes.get(f, 0.0),
                 "failures": self.family_failures.get(f, 0.0)}
                for f in self.families
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> SubstitutionRates:
        out = cls(a0=float(d.get("a0", 1.0)), b0=float(d.get("b0", 2.0)))  # type: ignore[arg-type]
        for row in d.get("pairs", ()) or ():  # type: ignore[attr-defined]
            pair = (str(row["old"]), str(row["new"]))
            if float(row.get("successes", 0.0)):
                out.successes[pair] = float(row["successes"])
            if float(row.get("failures", 0.0)):
                out.failures[pair] = float(row["failures"])
        for row in d.get("families", ()) or ():  # type: ignore[attr-defined]
            fam = str(row["family"])
            if float(row.get("successes", 0.0)):
                out.family_successes[fam] = float(row["successes"])
            if float(row.get("failures", 0.0)):
                out.family_failures[fam] = float(row["failures"])
        return out

    @classmethod
    def from_outcomes(cls, outcomes: Iterable[tuple[Sequence[Pair], bool] | tuple[Sequence[Pair], bool, str | None]],
                      **prior: float) -> SubstitutionRates:
        """Rates after the given ``(substitutions, success)`` or ``(substitutions, success, family)`` outcomes;
        ``prior`` is ``a0=``/``b0=``."""
        unknown = set(prior) - {"a0", "b0"}
        if unknown:
            raise TypeError(f"unknown prior parameter(s) {sorted(unknown)}; the prior is a0=, b0=")
        out = cls(a0=float(prior.get("a0", 1.0)), b0=float(prior.get("b0", 2.0)))
        for outcome in outcomes:
            subs, success = outcome[0], outcome[1]
            out.update(subs, bool(success), family=outcome[2] if len(outcome) > 2 else None)  # type: ignore[misc]
        return out


def _beta_mean(ab: tuple[float, float]) -> float:
    a, b = ab
    return a / (a + b)


def _pair(p: Sequence[str]) -> Pair:
    old, new = p
    return (str(old), str(new))


# ----------------------------------------------------------------------------------------------------------
# which substitutions are allowed


@cache
def oxidation_states(symbol: str) -> tuple[int, ...]:
    """Oxidation states used for isovalence: those pymatgen lists as seen in the ICSD
    (``Element.icsd_oxidation_states``) that SMACT's validity rule also allows (ICSD24 set of
    :func:`discovery.chemistry.element_chem`). SMACT's ICSD24 set alone is very wide (C: −4…+4,
    N: −5…+5) and would pair almost every element with every other."""
    smact = set(element_chem(symbol).oxidation_states)
    return tuple(sorted(s for s in Element(symbol).icsd_oxidation_states if s in smact))


def _states_or_none(symbol: str) -> set[int]:
    try:
        return set(oxidation_states(symbol))
    except ValueError:  # no SMACT data: it cannot be part of a valid composition
        return set()


@cache
def _lambda_table() -> SubstitutionProbability:
    return SubstitutionProbability()


@cache
def substitution_lambda(old: str, new: str, state: int) -> float:
    """Hautier et al.'s data-mined substitution log-likelihood λ of ``old``ⁿ⁺ ↔ ``new``ⁿ⁺ at oxidation state
    ``state`` (pymatgen ``SubstitutionProbability``, from ICSD prototypes; symmetric; −5 where the pair
    was never seen). λ > 0: the two ions replace each other in known structures more often than chance."""
    try:
        return float(_lambda_table().get_lambda(Species(old, state), Species(new, state)))
    except Exception:
        return float(_lambda_table().alpha)


def substitutable(old: str, new: str, state: int, min_lambda: float | None) -> bool:
    """Whether ``new`` can replace ``old`` at oxidation ``state`` (``new`` takes it; λ > ``min_lambda`` unless None)."""
    return state in _states_or_none(new) and (min_lambda is None or substitution_lambda(old, new, state) > min_lambda)


@cache
def _pairs(elements: tuple[str, ...], min_lambda: float | None) -> dict[str, tuple[str, ...]]:
    states = {e: _states_or_none(e) for e in elements}
    return {
        e: tuple(o for o in elements if o != e and any(substitutable(e, o, q, min_lambda) for q in states[e]))
        for e in elements
    }


def isovalent_pairs(elements: Sequence[str], *, min_lambda: float | None = MIN_LAMBDA) -> dict[str, tuple[str, ...]]:
    """For each element, the other allowed elements it may replace it with: sharing a common oxidation state of
    the same sign (a shared state is trivially of the same sign; states from :func:`oxidation_states`) at which
    the two ions are known to substitute for each other, :func:`substitution_lambda` > ``min_lambda`` (None: no
    such test; sharing a state alone pairs P³⁺ with Tm³⁺ and N³⁺ with Rh³⁺). Partners keep the order of
    ``elements``."""
    return dict(_pairs(tuple(dict.fromkeys(str(e) for e in elements)), min_lambda))


@cache
def charge_assignments(counts_items: tuple[tuple[str, int], ...], limit: int = 64) -> tuple[dict[str, int], ...]:
    """Oxidation-state assignments (states of :func:`oxidation_states`) of a composition, given as sorted
    ``(element, count)`` items, that are charge neutral and put every cation below every anion in Pauling
    electronegativity (SMACT's rule); lowest total ``|state|`` first, at most ``limit``. Empty for
    compositions SMACT's rule cannot balance with these states (e.g. intermetallics)."""
    symbols = [el for el, _ in counts_items]
    try:
        states = [oxidation_states(el) for el in symbols]
        en = [element_chem(el).electronegativity for el in symbols]
    except ValueError:
        return ()
    ns = [n for _, n in counts_items]
    found = []
    for combo in itertools.product(*states):
        if sum(q * n for q, n in zip(combo, ns, strict=True)) != 0:
            continue
        cat = [x for x, q in zip(en, combo, strict=True) if q > 0]
        an = [x for x, q in zip(en, combo, strict=True) if q < 0]
        if cat and an and max(cat) < min(an):
            found.append(combo)
    found.sort(key=lambda c: (sum(abs(q) for q in c), c))
    return tuple(dict(zip(symbols, c, strict=True)) for c in found[:limit])


@cache
def atomic_radius(symbol: str) -> float:
    """pymatgen's (empirical) atomic radius in Å; 1 Å where it has none."""
    r = Element(symbol).atomic_radius
    return float(r) if r is not None else 1.0


@cache
def ionic_radius(symbol: str, oxi: int) -> float | None:
    """pymatgen's (Shannon) ionic radius in Å of ``symbol`` at oxidation state ``oxi``; None where it has none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no default radius, using low-spin data" and "no radius" notes
            r = Species(symbol, oxi).ionic_radius
    except Exception:
        return None
    return float(r) if r is not None and math.isfinite(float(r)) else None


@cache
def _smact_valid_reduced(items: tuple[tuple[str, int], ...]) -> bool:
    return is_smact_valid(dict(items))


def smact_valid(counts: dict[str, int]) -> bool:
    """``is_smact_valid``, cached per reduced composition."""
    g = math.gcd(*counts.values())
    return _smact_valid_reduced(tuple(sorted((k, v // g) for k, v in counts.items())))


def pauling_ok(assignment: dict[str, int], subs: Sequence[Sequence[str]], counts: dict[str, int]) -> bool:
    """Fast path of SMACT's test: the parent's assignment, each new element at the old one's state, is charge
    neutral by construction; it passes when every cation is less electronegative than every anion."""
    source = {new: old for old, new in subs}
    states = {el: assignment[source.get(el, el)] for el in counts}
    cat = [element_chem(el).electronegativity for el, q in states.items() if q > 0]
    an = [element_chem(el).electronegativity for el, q in states.items() if q < 0]
    return bool(cat) and bool(an) and max(cat) < min(an)
