"""Decodability rule: compositions that pyxtal's random Wyckoff placement finds reliably.

Exact Wyckoff compatibility (:mod:`discovery.symmetry`) says that *some* assignment of Wyckoff
positions exists. ``pyxtal().from_random(3, sg, species, counts)`` does not search for it: for
each species in turn (the order given, here the canonical electronegativity order of the
generator) :func:`pyxtal.symmetry.choose_wyckoff` draws a position with multiplicity ≤ the atoms
still to place — with probability ½ uniformly among the positions of the *largest* such
multiplicity, with probability ½ uniformly among *all* such positions — and never backtracks. A
zero-dof position already occupied is rejected (the atoms would coincide) and drawn again; a
species that is left with a remainder no free position fits is stuck, and the whole attempt is
thrown away. On compositions where most draws lead into such dead ends (e.g. I2₁3 with three
elements of 16 atoms: 16 = 8 + 8 only, but 12 is drawn first half of the time) or where an early
species takes the zero-dof positions a later one needs (P23 H11 C7 O8 F2: F needs 1a + 1b, H
takes one of them most of the time), the success probability of one attempt falls below 10⁻³
and ``from_random`` gives up ("long time to generate structure").

The rule (a deliberate deviation from "every Wyckoff-compatible composition", on top of the exact
check). Model pyxtal's draw for one species as a Markov chain over the availability ``v`` (free
zero-dof positions per multiplicity and, in *crowded* groups — general position with more than
``CROWDED`` sites, so every atom sits on a special position — the line orbits left: at most
``LINE_CAP`` orbits on one-dof positions in the whole cell, beyond which a line draw counts as
rejected, since many orbits on the same symmetry axis fail pyxtal's distance checks);
``success(v, n)`` is the probability that a species of ``n`` atoms completes, ``outcomes(v, n)``
the availabilities it can end in, with their probabilities. A composition (counts in canonical
order) is *decodable* when, starting from everything free, every element has
``success(v, n) ≥ MIN_SUCCESS`` at a pessimistic availability ``v``: after each element, ``v``
becomes the componentwise minimum over its outcomes of probability ≥ ``MIN_OUTCOME`` × success
(all outcomes if none is that likely). Every decodable composition is exactly Wyckoff-compatible
(the pessimistic ``v`` is below every retained outcome). Geometry beyond the line cap (distance
checks, merging of near-special points) is left to the acceptance measurement.

Cost, measured on MP-20 (conventional-cell counts, canonical order): the rule keeps 90.3 % of the
train (space group, composition) pairs within the paper's limits (≤ 5 elements, ≤ 16 atoms per
element; 1,511 / 1,673) and 86.5 % of all train pairs (1,773 / 2,051); validation 89.5 % / 86.5 %.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from fractions import Fraction
from functools import cache

from discovery.symmetry import WyckoffAlgebra, space_group, wyckoff_algebra

MIN_SUCCESS = Fraction(1, 2)  # per-element success probability of one pyxtal placement attempt
MIN_OUTCOME = Fraction(1, 5)  # outcomes at least this likely (relative) count for the pessimistic state
LINE_CAP = 2  # orbits on one-dof positions (all multiplicities together) in crowded groups:
CROWDED = 16  # groups whose general position has more than this many sites (every atom sits on a special one)

Avail = tuple[int, ...]


class _Placement:
    """pyxtal's per-species Wyckoff draw for one space group, over count-level availabilities."""

    def __init__(self, sg: int, max_count: int) -> None:
        info = space_group(sg)
        self.mults = sorted({w.multiplicity for w in info.wyckoff if w.multiplicity <= max_count}, reverse=True)
        self.n_fixed = Counter(w.multiplicity for w in info.wyckoff if w.dof == 0)
        self.n_free = Counter(w.multiplicity for w in info.wyckoff if w.dof > 0)
        self.fixed = tuple(sorted(m for m in self.n_fixed if m <= max_count))  # as WyckoffAlgebra.fixed_mults
        # one-dof positions (lines) are capped where every atom must sit on a special position
        crowded = max(w.multiplicity for w in info.wyckoff) > CROWDED
        n_line = Counter(w.multiplicity for w in info.wyckoff if w.dof == 1 and w.multiplicity <= max_count)
        self.lines = tuple(sorted(n_line)) if crowded and n_line else ()
        self.n_line = n_line
        # state: free zero-dof positions per multiplicity, then line orbits left (when capped)
        self.start: Avail = tuple(self.n_fixed[m] for m in self.fixed) + ((LINE_CAP,) if self.lines else ())
        self.radices = self.start
        self._cache: dict[tuple[Avail, int], dict[Avail, Fraction]] = {}

    def outcomes(self, v: Avail, n: int) -> dict[Avail, Fraction]:
        """Availability after placing ``n`` atoms from ``v`` → probability (success only; sums to success)."""
        key = (v, n)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        out: dict[Avail, Fraction] = {}
        if n == 0:
            out[v] = Fraction(1)
        else:
            ms = [m for m in self.mults if m <= n]
            total = sum(self.n_fixed[m] + self.n_free[m] for m in ms)
            avail = {m: (v[self.fixed.index(m)] if m in self.fixed else 0) for m in ms}
            nf = len(self.fixed)
            # free positions that accept an orbit: all, except lines whose cap is used up
            free_ok = {m: self.n_free[m] - (self.n_line[m] if m in self.lines and not v[nf] else 0) for m in ms}
            # draw weight of one position of multiplicity m: ½ · uniform in the largest group + ½ · uniform in all
            weight = {m: (Fraction(1, 2 * (self.n_fixed[m] + self.n_free[m])) if m == ms[0] else Fraction(0))
                      + Fraction(1, 2 * total) for m in ms} if ms else {}
            accepted = sum((weight[m] * (free_ok[m] + avail[m]) for m in ms), Fraction(0))
            for m in ms if accepted else ():
                moves: list[tuple[int, Avail]] = []
                if m in self.lines and v[nf]:
                    moves.append((self.n_line[m], (*v[:nf], v[nf] - 1, *v[nf + 1:])))
                    if self.n_free[m] > self.n_line[m]:
                        moves.append((self.n_free[m] - self.n_line[m], v))
                elif free_ok[m]:
                    moves.append((free_ok[m], v))
                if avail[m]:
                    j = self.fixed.index(m)
                    moves.append((avail[m], (*v[:j], v[j] - 1, *v[j + 1:])))
                for k, v2 in moves:
                    p = weight[m] * k / accepted
                    for o, po in self.outcomes(v2, n - m).items():
                        out[o] = out.get(o, Fraction(0)) + p * po
        self._cache[key] = out
        return out

    def next_state(self, v: Avail, n: int) -> Avail | None:
        """Pessimistic availability after an element of ``n`` atoms, or None if it is not decodable."""
        out = self.outcomes(v, n)
        success = sum(out.values(), Fraction(0))
        if success < MIN_SUCCESS:
            return None
        likely = [o for o, p in out.items() if p >= MIN_OUTCOME * success] or list(out)
        return tuple(min(o[j] for o in likely) for j in range(len(v)))


@cache
def _placement(sg: int, max_count: int) -> _Placement:
    return _Placement(sg, max_count)


@cache
def decodable_algebra(sg: int, max_count: int = 16) -> WyckoffAlgebra:
    """The resource algebra of ``sg`` restricted to the decodability rule: one (pessimistic)
    successor per (state, count), none where the element is not decodable. States are the
    availabilities (free zero-dof positions per multiplicity, then line orbits left per capped
    multiplicity) reachable from "all free", numbered with the start last."""
    exact = wyckoff_algebra(sg, max_count)
    pl = _placement(sg, max_count)
    assert pl.fixed == exact.fixed_mults and pl.start[: len(exact.radices)] == exact.radices
    # only the states reachable from "all free" are kept, renumbered in discovery order with the
    # start last (WyckoffAlgebra.start is n_states − 1)
    order: list[Avail] = [pl.start]
    index = {pl.start: 0}
    succ: dict[tuple[int, int], int] = {}
    for v in order:  # grows while iterating: breadth-first closure
        for n in range(1, max_count + 1):
            nxt = pl.next_state(v, n)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = len(order)
                    order.append(nxt)
                succ[index[v], n] = index[nxt]
    R = len(order)

    def renum(i: int) -> int:  # start (0) → R − 1, others shift down
        return R - 1 if i == 0 else i - 1

    trans: list[tuple[tuple[int, ...], ...]] = [()]
    for n in range(1, max_count + 1):
        row: list[tuple[int, ...]] = [()] * R
        for i in range(R):
            if (i, n) in succ:
                row[renum(i)] = (renum(succ[i, n]),)
        trans.append(tuple(row))
    radices = pl.radices
    # radices: zero-dof positions per multiplicity (as the exact algebra), then line orbits (pseudo-multiplicity 0)
    fixed_like = exact.fixed_mults + ((0,) if pl.lines else ())
    return WyckoffAlgebra(fixed_like, radices, exact.free_mults, max_count, tuple(trans),
                          ("decodable", hashlib.sha256(repr(trans).encode()).hexdigest()[:24]))


def is_decodable(sg: int, counts: Iterable[int]) -> bool:
    """The decodability rule for element counts given in canonical (generation) order."""
    counts = [int(c) for c in counts]
    if not counts or min(counts) < 1:
        return False
    pl = _placement(sg, max(16, max(counts)))
    v = pl.start
    for n in counts:
        nxt = pl.next_state(v, n)
        if nxt is None:
            return False
        v = nxt
    return True
