"""Reproduction metrics on known inputs, and the proxy rewards of `matloop gfn train --reward proxy`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from discovery.crystal import Crystal
from discovery.testing import FixedProxy
from orchestration.cli_gfn import ProxyReward
from orchestration.reproduce import below_hull_flags, bg_metrics, composition_metrics, fe_metrics, markdown


def _c(sg: int, counts: dict[str, int], a: float = 5.0) -> Crystal:
    return Crystal(sg, counts, a, a, a, 90.0, 90.0, 90.0)


class _ShiftReference:
    """A fake hull: e_above_hull = E_form + 1 eV/atom (so "below the hull" means E_form < −1)."""

    def e_above_hull(self, composition: object, e_form: float) -> float:
        return e_form + 1.0


def test_fe_metrics_on_known_values() -> None:
    crystals = [_c(225, {"Li": 4, "F": 4}), _c(221, {"Na": 1, "Cl": 1}), _c(1, {"Mg": 1, "O": 1}),
                _c(2, {"Mg": 1, "O": 1}), _c(2, {"Mg": 1, "O": 1}, a=6.0)]
    e = np.array([-3.0, -2.5, -1.5, -0.5, 0.5])
    m = fe_metrics(crystals, e, _ShiftReference(), top=2)
    assert m["fe_median"] == -1.5
    assert m["fe_p95"] == pytest.approx(0.3)  # numpy linear interpolation between −0.5 and 0.5
    assert m["share_fe_below_m2"] == 0.4
    assert m["share_below_hull"] == 0.6  # −3, −2.5, −1.5 are below −1
    assert "share_below_hull_mp20" not in m
    assert fe_metrics(crystals, e, _ShiftReference(), sparse_reference=_ShiftReference())["share_below_hull_mp20"] == 0.6
    assert m["unique"] == 1.0 and m["distinct_formula_space_group"] == 4
    assert m["elements_present"] == 6 and m["elements_top2"] == 4  # LiF and NaCl are the best two
    assert m["space_groups_present"] == 4 and m["space_groups_top2"] == 2
    assert m["crystal_lattice_systems_top2"] == {"cubic": 2}
    assert m["point_symmetries_top2"] == {"centrosymmetric": 2}
    assert fe_metrics(crystals[:2] + crystals[:2], e[:4], None)["unique"] == 0.5


def test_composition_metrics_follow_the_order() -> None:
    crystals = [_c(1, {"H": 1, "Li": 1}), _c(225, {"Na": 4, "Cl": 4})]
    m = composition_metrics(crystals, np.array([1, 0]), top=1)
    assert m["top1_examples"] == ["NaCl (SG 225)"] and m["crystal_lattice_systems_top1"] == {"cubic": 1}


@pytest.mark.slow
def test_below_hull_against_the_shipped_reference() -> None:
    from oracles.reference import load_reference

    lif, mgf2 = _c(225, {"Li": 4, "F": 4}), _c(136, {"Mg": 2, "F": 4})
    for name in ("mp20+li-fe-o", "mp20+matbench"):
        ref = load_reference(name)  # type: ignore[arg-type]
        # MP: LiF ≈ −3.2 eV/atom, so −5 is far below the hull and −1 far above it
        assert below_hull_flags([lif, lif], np.array([-5.0, -1.0]), ref).tolist() == [True, False]
    # MgF2 (MP ≈ −3.8 eV/atom) is missing from MP-20: only the dense reference knows −3.5 is above its hull
    assert below_hull_flags([mgf2], np.array([-3.5]), load_reference("mp20+li-fe-o")).tolist() == [True]
    assert below_hull_flags([mgf2], np.array([-3.5]), load_reference("mp20+matbench")).tolist() == [False]


def test_bg_metrics_on_known_values() -> None:
    m = bg_metrics(np.array([0.0, 1.2, 1.34, 1.7, 3.0]), target=1.34)
    assert m["bg_median"] == 1.34
    assert m["share_within_0p2"] == 0.4 and m["share_within_0p5"] == 0.6 and m["share_metallic_below_0p1"] == 0.2
    assert m["bg_mean_abs_dev_from_target"] == pytest.approx((1.34 + 0.14 + 0 + 0.36 + 1.66) / 5, abs=1e-3)


def test_proxy_rewards_are_the_papers() -> None:
    crystals = [_c(225, {"Li": 4, "F": 4})] * 3
    fe = ProxyReward(FixedProxy([-3.0, 0.0, 1.0]), transform="boltzmann", temperature=0.125)
    assert fe(crystals) == pytest.approx([24.0, 0.0, -8.0])  # log exp(−8 E)
    bg = ProxyReward(FixedProxy([1.34, 2.34, 0.34]), transform="target", target_value=1.34, temperature=0.125)
    assert bg(crystals) == pytest.approx([0.0, -8.0, -8.0])  # log exp(−8 (E_g − 1.34)²)
    up = ProxyReward(FixedProxy([2.0, 0.0, 0.0]), transform="boltzmann", temperature=0.5, maximize=True)
    assert up(crystals) == pytest.approx([4.0, 0.0, 0.0])


def test_markdown_puts_ours_beside_the_paper(tmp_path: Path) -> None:
    crystals = [_c(225, {"Li": 4, "F": 4}), _c(221, {"Na": 1, "Cl": 1})]
    m = fe_metrics(crystals, np.array([-3.0, -2.0]), _ShiftReference())
    m.update({"valid_smact": 1.0, "valid_pyxtal": 1.0, "valid_pyxtal_checked": 2.0, "valid_lattice": 1.0, "valid_wyckoff": 1.0})
    from orchestration.reproduce import PAPER

    text = markdown({"n": 2, "paper": PAPER, "feasible_space_groups": 200, "validation": {"fe_median": -2.0},
                     "models": {"FE-trained": m, "untrained": m}, "restricted": {}})
    assert "| predicted E_form median (eV/atom) | -2.5 | -2.5 | -3.2 |" in text
    assert "65.6 %" in text and "84.0 %" in text
