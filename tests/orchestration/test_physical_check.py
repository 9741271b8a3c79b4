"""`matloop gfn check`: volume metrics on known cells, and a real CHGNet relaxation of a small sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from discovery.crystal import Crystal
from orchestration.cli import app
from orchestration.physical_check import mp20_volume_range, relaxation_check, volume_metrics

runner = CliRunner()


def test_mp20_range_is_the_documented_one() -> None:
    lo, hi = mp20_volume_range()
    assert lo == pytest.approx(9.07, abs=0.01) and hi == pytest.approx(52.48, abs=0.01)


def test_volume_metrics_on_known_cells() -> None:
    nacl = Crystal(225, {"Na": 4, "Cl": 4}, 5.64, 5.64, 5.64, 90, 90, 90)  # 44.9 Å³/atom
    blown = Crystal(225, {"Na": 4, "Cl": 4}, 30.0, 30.0, 30.0, 90, 90, 90)  # 3,375 Å³/atom
    needle = Crystal(47, {"Li": 4, "F": 4}, 2.0, 1.23, 47.0, 90, 90, 90)  # 14.5 Å³/atom, but c = 47 Å
    m = volume_metrics([nacl, blown, needle, nacl], vrange=(9.07, 52.48))
    assert m["share_inside_mp20_range"] == pytest.approx(0.75)
    assert m["share_above_mp20_max"] == pytest.approx(0.25)
    assert m["share_length_above_30A"] == pytest.approx(0.25)


def test_relaxation_check_relaxes_and_compares(tmp_path: Path) -> None:
    """Rock-salt LiF near equilibrium converges ok; the same cell at 30 Å is refused as unphysical."""
    lif = Crystal(225, {"Li": 4, "F": 4}, 4.0, 4.0, 4.0, 90, 90, 90, id="lif")
    blown = Crystal(225, {"Li": 4, "F": 4}, 30.0, 30.0, 30.0, 90, 90, 90, id="blown")
    summary, rows = relaxation_check([lif, blown], np.array([-3.0, -3.0]), workers=1)
    assert [r["status"] for r in rows] == ["ok", "invalid"]
    assert summary["share_ok"] == 0.5 and summary["n_relaxed"] == 2
    # every row carries its S.U.N. labels (LiF's formula is known; its rock-salt structure is not among the
    # shipped MP-20 structures, which hold wurtzite LiF only, so whether it is S.U.N. depends on that data)
    assert rows[0]["converged"] and not rows[0]["novel_formula"] and rows[0]["relaxed_space_group"] == 225
    assert not rows[1]["converged"] and not rows[1]["sun"]
    assert summary["sun_counts"]["converged"] == 1 and summary["sun_counts"]["results"] == 2
    assert abs(rows[0]["chgnet_fe"] - (-3.0)) < 0.5  # MP: LiF −3.08 eV/atom
    assert summary["median_abs_proxy_minus_chgnet_fe"] == pytest.approx(abs(rows[0]["chgnet_fe"] + 3.0))
    assert summary["reference"] == "mp20+matbench"


def test_gfn_check_cli_without_relaxation(tmp_path: Path) -> None:
    ckpt = tmp_path / "gfn"
    res = runner.invoke(app, ["gfn", "train", "--reward", "density", "--iterations", "2", "--out", str(ckpt),
                              "--elements", "Li Mn O", "--max-elements", "3", "--max-atoms-per-element", "4",
                              "--max-atoms", "12"])
    assert res.exit_code == 0, res.output
    proxy = Path(__file__).resolve().parents[2] / "discovery" / "data" / "checkpoints" / "proxy-fe"
    res = runner.invoke(app, ["gfn", "check", "--checkpoint", str(ckpt), "--proxy", str(proxy), "-n", "50",
                              "--relax", "0", "--volume-profile", "5", "--out", str(tmp_path / "check"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["volume"]["n"] == 50 and out["validity"]["valid_smact"] == 1.0
    assert "density" in out["volume_fit"]["skipped"]
    div = out["diversity"]
    assert 1 <= div["distinct_reduced_formulas"] <= 50 and 0 < div["top_formula_share"] <= 1 and div["median_atoms"] <= 12  # a density-trained model: no proxy reward to profile
    assert (tmp_path / "check" / "volume_per_atom.npy").exists()
    assert json.loads((tmp_path / "check" / "check.json").read_text())["paper_predicted_fe_median"] == -3.2
    assert out["proxy_target"] == "formation_energy_per_atom" and out["predicted_median"] == out["predicted_fe_median"]


def test_gfn_check_volume_profile_rebuilds_the_training_reward(tmp_path: Path) -> None:
    ckpt = tmp_path / "gfn"
    proxy = Path(__file__).resolve().parents[2] / "discovery" / "data" / "checkpoints" / "proxy-fe"
    res = runner.invoke(app, ["gfn", "train", "--reward", "proxy", "--proxy", str(proxy), "--iterations", "2",
                              "--out", str(ckpt), "--elements", "Li Mg O F", "--max-elements", "3",
                              "--max-atoms-per-element", "4", "--max-atoms", "12", "--lengths", "2.4 30"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["gfn", "check", "--checkpoint", str(ckpt), "--proxy", str(proxy), "-n", "20",
                              "--relax", "0", "--volume-profile", "8", "--json"])
    assert res.exit_code == 0, res.output
    fit = json.loads(res.stdout.strip().splitlines()[-1])["volume_fit"]
    assert fit["n"] == 8 and fit["volume_prior"] == 1.0 and fit["transform"] == "boltzmann"
    # an untrained sampler's volumes spread over the whole length range; its reward's do not
    assert fit["implied_share_in_range"] > 0.9 > fit["sampled_share_in_range"]
    assert abs(fit["implied_mean_z"]) < 1.5 < abs(fit["sampled_mean_z"])


def test_sun_labels_of_relaxed_samples() -> None:
    """A shipped MP-20 structure is not novel; two copies of one new structure are one unique S.U.N. hit; an
    unconverged result is never S.U.N."""
    from pymatgen.core import Lattice, Structure

    from discovery.datasets.reference_structures import load_reference_structures
    from oracles.base import OracleResult, structure_to_cif
    from orchestration.physical_check import sun_labels_of

    formula, known = next((f, items[0][1]) for f in sorted(load_reference_structures().formulas())
                          if (items := load_reference_structures().get(f)))
    new = Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.2), ["K", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    results = [OracleResult(candidate_id="known", status="ok", structure_cif=structure_to_cif(known),
                            targets={"e_above_hull": 0.0}),
               OracleResult(candidate_id="new", status="ok", structure_cif=structure_to_cif(new),
                            targets={"e_above_hull": 0.05}),
               OracleResult(candidate_id="again", status="ok", structure_cif=structure_to_cif(new.copy()),
                            targets={"e_above_hull": 0.05}),
               OracleResult(candidate_id="stuck", status="unconverged", structure_cif=structure_to_cif(new),
                            targets={"e_above_hull": 0.05})]
    crystals = [Crystal(225, {"K": 4, "Li": 4}, 6.2, 6.2, 6.2, 90, 90, 90)] * 4
    labels = sun_labels_of(results, crystals)
    assert not labels[0].novel_structure and not labels[0].sun, formula
    assert labels[1].sun and labels[1].unique and labels[1].novel_formula
    assert not labels[2].unique and not labels[2].sun
    assert not labels[3].converged and not labels[3].sun
