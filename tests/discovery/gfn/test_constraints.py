"""Exact look-ahead masks: every valid composition is reachable and no state is a dead end."""

from __future__ import annotations

import itertools

import pytest

from discovery.chemistry import is_smact_valid
from discovery.gfn.constraints import CompositionConstraints, CompositionRules
from discovery.symmetry import is_wyckoff_compatible


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
                if sum(counts) <= rules.max_atoms and is_smact_valid(comp) and is_wyckoff_compatible(sg, counts):
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
@pytest.mark.parametrize("sg", [1, 2, 12, 62, 166, 191, 221, 225, 229])
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
