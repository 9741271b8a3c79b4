"""Round decisions of discovery.loop and the cross-round / per-source options of select_batch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.crystal import Crystal
from discovery.loop import (
    SourceOutcome,
    batch_cap,
    earlier_keys,
    family_bonus,
    family_of,
    novelty_penalty,
    prob_better,
    residual_family,
    source_outcomes,
    source_split,
    untried,
)
from discovery.selection import select_batch
from discovery.substitution_rates import SubstitutionRates


def test_novelty_penalty_adds_known_and_tried():
    p = novelty_penalty(["NaCl", "KCl", "LiF", "MgO"], known={"NaCl", "MgO"}, tried={"KCl", "MgO"},
                        known_penalty=1.0, tried_penalty=0.5)
    assert p.tolist() == [1.0, 0.5, 0.0, 1.5]


def test_batch_cap():
    assert batch_cap(8, max_calls=None, calls_so_far=100) == 8
    assert batch_cap(8, max_calls=20, calls_so_far=16) == 4
    assert batch_cap(8, max_calls=20, calls_so_far=25) == 0


def test_first_round_uses_the_configured_share():
    assert source_split(10, share=0.5) == {"generator": 5, "substitution": 5}
    assert source_split(10, share=0.0) == {"generator": 10, "substitution": 0}
    assert source_split(7, share=0.5, outcomes={"generator": SourceOutcome(4, 0)}) == {"generator": 3, "substitution": 4}


def test_adaptive_split_follows_the_sources_success_rates():
    outcomes = {"generator": SourceOutcome(10, 0), "substitution": SourceOutcome(10, 5)}
    split = source_split(10, share=0.5, outcomes=outcomes)
    assert split["substitution"] == 9  # 0.5/(0.5+0.083) = 0.857 → 9 of 10, under the 0.9 cap
    assert source_split(10, share=0.5, outcomes=outcomes, adaptive=False) == {"generator": 5, "substitution": 5}
    worse = {"generator": SourceOutcome(10, 5), "substitution": SourceOutcome(10, 0)}
    assert source_split(10, share=0.5, outcomes=worse, min_share=0.2)["substitution"] == 2


def test_prob_better_matches_sampling_and_symmetry():
    a, b = SourceOutcome(10, 6), SourceOutcome(10, 1)
    p = prob_better(a, b)
    rng = np.random.default_rng(0)
    mc = np.mean(rng.beta(1 + 6, 1 + 4, 200_000) > rng.beta(1 + 1, 1 + 9, 200_000))
    assert abs(p - mc) < 0.005 and p > 0.98
    assert abs(prob_better(b, a) - (1 - p)) < 1e-3  # P(p1 > p2) + P(p2 > p1) = 1 for continuous rates
    assert abs(prob_better(SourceOutcome(4, 2), SourceOutcome(4, 2)) - 0.5) < 1e-3


def test_thompson_split_cuts_the_clearly_worse_source_to_the_floor():
    # the S.U.N. benchmark's first round per seed: substitutions 6 of 10, the generator 1 of 10
    outcomes = {"generator": SourceOutcome(10, 1), "substitution": SourceOutcome(10, 6)}
    assert source_split(20, share=0.5, outcomes=outcomes) == {"generator": 4, "substitution": 16}  # 0.78 of the batch
    assert source_split(20, share=0.5, outcomes=outcomes, rule="thompson") == {"generator": 2, "substitution": 18}
    # evidence too thin to tell the sources apart keeps the split near even
    even = {"generator": SourceOutcome(2, 1), "substitution": SourceOutcome(2, 1)}
    assert source_split(20, share=0.5, outcomes=even, rule="thompson") == {"generator": 10, "substitution": 10}
    with pytest.raises(ValueError, match="rule"):
        source_split(20, share=0.5, outcomes=outcomes, rule="greedy")  # type: ignore[arg-type]


@given(st.integers(0, 50), st.floats(0, 1), st.integers(0, 30), st.integers(0, 30), st.integers(0, 30),
       st.integers(0, 30), st.floats(0, 0.5), st.sampled_from(["proportional", "thompson"]))
def test_split_always_sums_to_the_batch_and_keeps_min_share(b, share, cg, sg, cs, ss, min_share, rule):
    outcomes = {"generator": SourceOutcome(cg, min(sg, cg)), "substitution": SourceOutcome(cs, min(ss, cs))}
    split = source_split(b, share=share, outcomes=outcomes, min_share=min_share, rule=rule)
    assert split["generator"] + split["substitution"] == b and min(split.values()) >= 0
    if cg and cs and b >= 10:
        assert split["substitution"] >= int(np.floor(min_share * b + 0.5)) - 1


def test_source_outcomes_and_untried():
    out = source_outcomes(["generator", "substitution", "substitution"], [False, True, False])
    assert out["generator"] == SourceOutcome(1, 0) and out["substitution"] == SourceOutcome(2, 1)
    assert untried(["NaCl", "KCl", "NaCl"], tried={"NaCl"}) == [1]


def _c(formula_counts: dict[str, int], sg: int = 225, a: float = 5.0) -> Crystal:
    return Crystal(sg, formula_counts, a, a, a, 90, 90, 90)


def test_quota_limits_each_group_then_fills_from_the_rest():
    crystals = [_c({"Na": 1, "Cl": 1}, a=4 + i * 0.1) for i in range(6)]
    scores = [6, 5, 4, 3, 2, 1]
    groups = ["generator"] * 3 + ["substitution"] * 3
    for method in ("greedy", "mmr"):
        chosen = select_batch(crystals, scores, batch_size=4, method=method, diversity=0.0, groups=groups,  # type: ignore[arg-type]
                              quota={"generator": 1, "substitution": 3})
        assert sorted(groups[i] for i in chosen) == ["generator", "substitution", "substitution", "substitution"]
    # the substitution group has only 3 candidates: the fourth pick comes from the generator beyond its quota
    chosen = select_batch(crystals, scores, batch_size=5, method="greedy", groups=groups,
                          quota={"generator": 1, "substitution": 4})
    assert sorted(groups[i] for i in chosen).count("generator") == 2


def test_context_steers_diversity_away_from_earlier_batches():
    nacl = [_c({"Na": 4, "Cl": 4}, a=5.6 + 0.01 * i) for i in range(3)]
    mgo = [_c({"Mg": 4, "O": 4}, a=4.2 + 0.01 * i) for i in range(3)]
    crystals, scores = nacl + mgo, [1.0, 1.0, 1.0, 0.9, 0.9, 0.9]
    first = select_batch(crystals, scores, batch_size=1, method="mmr", diversity=0.9)
    assert first[0] < 3  # best score without context
    again = select_batch(crystals, scores, batch_size=1, method="mmr", diversity=0.9, context=[nacl[0]])
    assert again[0] >= 3  # NaCl was tried in an earlier round: the MgO family is now more diverse


def test_earlier_keys_keep_unselected_substitutions_available():
    def row(counts: dict[str, int], sg: int, rnd: int, source: str, selected: bool) -> Crystal:
        return Crystal(sg, counts, 5, 5, 5, 90, 90, 90, extra={"round": rnd, "source": source, "selected": selected})

    rows = [row({"Na": 1, "Cl": 1}, 225, 0, "generator", False),  # an unselected GFN sample: still blocked
            row({"K": 1, "Cl": 1}, 225, 0, "substitution", True),  # sent to the oracle: blocked
            row({"Li": 1, "F": 1}, 225, 0, "substitution", False),  # proposed, not picked: available again
            row({"Mg": 1, "O": 1}, 225, 1, "generator", True)]  # this round's own: not earlier
    assert earlier_keys(rows, round_index=1) == {("NaCl", 225), ("KCl", 225)}
    assert earlier_keys(rows, round_index=2) == {("NaCl", 225), ("KCl", 225), ("MgO", 225)}
    assert ("LiF", 225) in earlier_keys(rows, round_index=1, reusable=())


def test_family_follows_the_parent_chain_to_the_seed_structure():
    links = {"r002-sub-00001": "r001-sub-00007", "r001-sub-00007": "mp-1205971", "loop-a": "loop-b", "loop-b": "loop-a"}
    assert family_of("r002-sub-00001", links) == "mp-1205971"
    assert family_of("mp-1205971", links) == "mp-1205971" and family_of("r000-00003", links) == "r000-00003"
    assert family_of("loop-a", links) in {"loop-a", "loop-b"}  # a cycle stops


def test_family_bonus_is_the_weighted_shift_of_the_family_rate():
    rates = SubstitutionRates.from_outcomes([((), True, "good"), ((), False, "bad")])
    bonus = family_bonus(["good", "bad", "new", None], rates, weight=3.0)
    np.testing.assert_allclose(bonus, [3.0 / 6, -3.0 / 12, 0.0, 0.0])
    assert not family_bonus(["good"], rates, weight=0.0).any()
    assert family_bonus([], rates, weight=3.0).shape == (0,)


def test_residual_family_of_substitutions_labels_and_candidates():
    """A substitution shares its seed structure's family; a labelled generator result roots its own; an unlabelled
    generator candidate (no id given) has none."""
    assert residual_family(source="substitution", family="mp-1", own_id="r001-sub-3") == "mp-1"
    assert residual_family(source="generator", family=None, own_id="r000-00012") == "r000-00012"
    assert residual_family(source="generator", family="mp-1") is None
    assert residual_family(source="substitution", family=None, own_id="x") == "x"  # a parent-less row: its own
