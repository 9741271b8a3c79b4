"""Exact look-ahead masks: every valid composition is reachable and no state is a dead end."""

from __future__ import annotations

import itertools
from fractions import Fraction
from functools import cache

import pytest

from discovery.chemistry import is_smact_valid
from discovery.gfn.constraints import CompositionConstraints, CompositionRules
from discovery.symmetry import is_wyckoff_compatible
from discovery.symmetry_decode import CROWDED, LINE_CAP, MIN_OUTCOME, MIN_SUCCESS, is_decodable


@cache
def _pyxtal_positions(sg: int) -> tuple[tuple[tuple[str, int, int], ...], ...]:
    """pyxtal's own Wyckoff list, grouped as choose_wyckoff sees it: (letter, multiplicity, dof)."""
    from pyxtal.symmetry import Group

    return tuple(tuple((w.letter, w.multiplicity, w.get_dof()) for w in grp) for grp in Group(sg).wyckoffs_organized)


@cache
def _reference_outcomes(sg: int, used: frozenset[str], lines: int, n: int) -> dict[tuple[frozenset[str], int], Fraction]:
    """(occupied zero-dof letters, line orbits placed) after pyxtal places ``n`` atoms of one species
    → probability. In crowded groups a one-dof letter is refused once ``LINE_CAP`` line orbits exist."""
    groups = _pyxtal_positions(sg)
    if n == 0:
        return {(used, lines): Fraction(1)}
    crowded = groups[0][0][1] > CROWDED
    fit = [w for g in groups for w in g if w[1] <= n]
    largest = next((g for g in groups if g[0][1] <= n), ())
    draw = {w: Fraction(1, 2 * len(fit)) + (Fraction(1, 2 * len(largest)) if w in largest else 0) for w in fit}
    ok = {w: p for w, p in draw.items()
          if not (w[2] == 0 and w[0] in used) and not (crowded and w[2] == 1 and lines >= LINE_CAP)}
    z = sum(ok.values(), Fraction(0))
    out: dict[tuple[frozenset[str], int], Fraction] = {}
    for (letter, m, dof), p in ok.items():
        nxt = (used | {letter} if dof == 0 else used, lines + (crowded and dof == 1))
        for o, po in _reference_outcomes(sg, *nxt, n - m).items():
            out[o] = out.get(o, Fraction(0)) + p / z * po
    return out


def _reference_decodable(sg: int, counts: tuple[int, ...]) -> bool:
    """Brute-force reference of the decodability rule, at the level of single Wyckoff letters, with
    pyxtal's positions: enumerate choose_wyckoff's draws (½ largest group, ½ all), rejecting
    occupied zero-dof letters and, in crowded groups, one-dof letters beyond the line cap."""
    flat = [w for g in _pyxtal_positions(sg) for w in g]
    fixed_by_mult: dict[int, list[str]] = {}
    for letter, m, dof in flat:
        if dof == 0:
            fixed_by_mult.setdefault(m, []).append(letter)
    used: frozenset[str] = frozenset()
    lines = 0
    for n in counts:
        out = _reference_outcomes(sg, used, lines, n)
        success = sum(out.values(), Fraction(0))
        if success < MIN_SUCCESS:
            return False
        # outcomes by how many zero-dof positions of each multiplicity they occupy (letters of equal
        # multiplicity are interchangeable for the draw)
        by_use: dict[tuple[int, ...], Fraction] = {}
        for (o, o_lines), p in out.items():
            use = (*(sum(x in o for x in fixed_by_mult[m]) for m in sorted(fixed_by_mult)), o_lines)
            by_use[use] = by_use.get(use, Fraction(0)) + p
        likely = [u for u, p in by_use.items() if p >= MIN_OUTCOME * success] or list(by_use)
        # pessimistic: per multiplicity, the most positions any likely outcome occupies
        most = [max(col) for col in zip(*likely, strict=True)]
        lines = most[-1]
        used = frozenset(x for m, k in zip(sorted(fixed_by_mult), most, strict=False) for x in fixed_by_mult[m][:k])
    return True


def _reachable(cc: CompositionConstraints, sg: int) -> tuple[set[tuple[tuple[int, int], ...]], int]:
    out, stuck, stack = set(), 0, [cc.initial(sg)]
    while stack:
        state = stack.pop()
        mask, can_end = cc.action_mask(sg, state)
        if can_end:
            out.add(state.counts)
        stuck += not (mask.any() or can_end)
        for e, n in zip(*mask.nonzero(), strict=True):
            stack.append(cc.step(sg, state, int(e), int(n) + 1))
    return out, stuck


def _valid(rules: CompositionRules, sg: int) -> set[tuple[tuple[int, int], ...]]:
    out = set()
    for k in range(rules.min_elements, rules.max_elements + 1):
        for combo in itertools.combinations(range(len(rules.elements)), k):
            for counts in itertools.product(range(1, rules.max_per_element + 1), repeat=k):
                comp = {rules.elements[i]: n for i, n in zip(combo, counts, strict=True)}
                if sum(counts) <= rules.max_atoms and is_smact_valid(comp) and is_wyckoff_compatible(sg, counts) \
                        and _reference_decodable(sg, counts):
                    out.add(tuple(zip(combo, counts, strict=True)))
    return out


RULES = [
    # unary compositions allowed, total-atom cap binding
    CompositionRules(("Li", "Fe", "O", "Cl", "N", "C"), max_elements=3, min_elements=1, max_per_element=6, max_atoms=12),
    # electronegativity ties (C/Se 2.55, Si/Cu 1.90) exercise the strict Pauling test
    CompositionRules(("Na", "Cl", "Se", "C", "Si", "Cu"), max_elements=3, min_elements=2, max_per_element=8, max_atoms=20),
    # budget-free (max_atoms ≥ max_elements · max_per_element, like the paper): bit-packed rows
    CompositionRules(("Li", "Fe", "O", "Cl", "N", "C", "Se", "Si", "Cu"), max_elements=3, max_per_element=5, max_atoms=15),
    CompositionRules(("Li", "Fe", "O", "Cl"), max_elements=4, min_elements=1, max_per_element=4, max_atoms=16),
]


@pytest.mark.parametrize("rules", RULES, ids=["unary-capped", "en-ties", "budget-free", "budget-free-4"])
@pytest.mark.parametrize("sg", [1, 2, 12, 62, 166, 191, 195, 197, 199, 221, 225, 229])
def test_masks_reach_exactly_the_valid_compositions(rules: CompositionRules, sg: int) -> None:
    cc = CompositionConstraints(rules)
    reached, stuck = _reachable(cc, sg)
    valid = _valid(rules, sg)
    assert reached == valid
    # a group with no valid composition is masked in the space-group subspace; its root is the only
    # state without actions
    assert cc.space_group_feasible(sg) == bool(valid)
    assert stuck == (0 if valid else 1)


def test_infeasible_group_is_detected() -> None:
    cc = CompositionConstraints(CompositionRules(("Na", "Cl"), max_per_element=8))
    assert not cc.space_group_feasible(230)  # Ia-3d needs 16 atoms per element
    assert cc.space_group_feasible(225)


def test_invalid_actions_raise() -> None:
    cc = CompositionConstraints(CompositionRules(("Na", "Cl"), max_per_element=8))
    state = cc.initial(225)
    with pytest.raises(ValueError, match="dead end"):
        cc.step(225, state, 0, 3)  # Na3 cannot sit on Fm-3m positions


@pytest.mark.parametrize("sg", [2, 47, 123, 191, 195, 197, 199, 221, 225, 229])
def test_decodability_rule_matches_reference(sg: int) -> None:
    """The count-level rule equals the letter-level brute force on random compositions, and implies
    exact Wyckoff compatibility."""
    import random

    rng = random.Random(sg)
    for _ in range(150):
        counts = tuple(rng.randint(1, 16) for _ in range(rng.randint(1, 5)))
        assert is_decodable(sg, counts) == _reference_decodable(sg, counts), counts
        if is_decodable(sg, counts):
            assert is_wyckoff_compatible(sg, counts)


def test_decodability_rule_examples() -> None:
    assert not is_decodable(195, (11, 7, 8, 2))  # P23 H11 C7 O8 F2: H takes 1a/1b that F needs
    assert not is_decodable(199, (16, 16, 16))  # I2_13: 16 = 8 + 8, but 12 is drawn half of the time
    assert is_decodable(221, (1, 1, 3))  # perovskite
    assert is_decodable(225, (4, 4))  # rock salt
    assert not is_decodable(206, (16, 16, 16, 16, 16))  # Ia-3: five orbits on the 16c line
