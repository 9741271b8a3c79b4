"""The lattice prior: volume model, strain curve, and what it does to the shipped proxies' posteriors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from discovery.crystal import Crystal
from discovery.datasets import load_mp20
from discovery.proxy import EnsembleProxy, greedy, target_value
from discovery.proxy.lattice import (
    DEFAULT_LATTICE_PRIOR_PATH,
    LatticePrior,
    StrainModel,
    VolumeModel,
    default_lattice_prior,
    uber,
    volumes_per_atom,
)

CHECKPOINTS = Path(__file__).resolve().parents[3] / "discovery" / "data" / "checkpoints"
torch.set_num_threads(1)


def scaled(c: Crystal, factor: float) -> Crystal:
    """``c`` with its cell volume multiplied by ``factor`` (isotropic)."""
    s = factor ** (1 / 3)
    return dataclasses.replace(c, a=c.a * s, b=c.b * s, c=c.c * s)


@pytest.fixture(scope="module")
def val() -> list[Crystal]:
    return load_mp20("val").data.crystals


def test_uber_curve_shape() -> None:
    a = np.array([-0.5, 0.0, 0.5, 2.0, 50.0])
    f = uber(a)
    assert f[1] == 0 and np.all(f[[0, 2, 3, 4]] > 0) and f[-1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(f[1:]) > 0)


def test_volume_model_predicts_mp20_val(val: list[Crystal]) -> None:
    prior = default_lattice_prior()
    mean, sd = prior.volume.predict(val)
    resid = np.log(volumes_per_atom(val)) - mean
    assert np.mean(np.abs(resid)) < 0.15  # ≈ 10 % in volume
    assert np.all(sd > 0)
    # an element the fit never saw gets its prior with a wider σ
    _, sd_unknown = prior.volume.predict([Crystal(225, {"Xe": 4, "Na": 4}, 6, 6, 6, 90, 90, 90)])
    assert sd_unknown[0] > np.median(sd)


def test_strain_is_zero_for_real_crystals_and_grows_both_ways(val: list[Crystal]) -> None:
    prior = default_lattice_prior()
    de, _ = prior.strain(val)
    assert np.median(de) == 0.0 and np.mean(de == 0) > 0.8
    nacl = Crystal(225, {"Na": 4, "Cl": 4}, 5.64, 5.64, 5.64, 90, 90, 90)
    energies = [float(prior.strain([scaled(nacl, f)])[0][0]) for f in (0.3, 0.5, 1.0, 2.0, 3.0, 10.0, 1000.0)]
    assert energies[2] == 0.0
    assert energies[1] > 0 and energies[0] > energies[1]  # compression costs
    assert 0 < energies[3] < energies[4] < energies[5] < energies[6]  # expansion costs, saturating
    sds = [float(prior.strain([scaled(nacl, f)])[1][0]) for f in (1.0, 3.0, 1000.0)]
    assert sds[0] == 0.0 < sds[1] < sds[2]


def test_fit_recovers_a_known_curve() -> None:
    rng = np.random.default_rng(0)
    crystals = [Crystal(1, {"Na": 1, "Cl": 1}, 4, 4, 4, 90, 90, 90), Crystal(1, {"Mg": 1, "O": 1}, 3, 3, 3, 90, 90, 90),
                Crystal(1, {"Na": 2, "O": 1}, 4, 4, 4, 90, 90, 90)] * 10
    ec_true = np.array([3.0, 5.0, 3.5] * 10)
    scales = np.array([0.7, 0.85, 1.0, 1.3, 2.0, 3.0])
    energies = ec_true[:, None] * uber((np.cbrt(scales) - 1) / 0.2)[None, :] - 2.0 + rng.normal(0, 0.01, (30, 6))
    model = StrainModel.fit(crystals, scales, energies)
    assert model.lam == pytest.approx(0.2, abs=0.01)
    assert model.cohesion(crystals[:3]) == pytest.approx([3.0, 5.0, 3.5], abs=0.2)


def test_save_load_round_trip(tmp_path: Path) -> None:
    prior = default_lattice_prior()
    path = prior.save(tmp_path / "prior.json")
    again = LatticePrior.load(path)
    c = [Crystal(225, {"Na": 4, "Cl": 4}, 9.0, 9.0, 9.0, 90, 90, 90)]
    assert np.allclose(again.strain(c)[0], prior.strain(c)[0])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="fit-lattice-prior"):
        LatticePrior.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="fit-lattice-prior"):
        LatticePrior.load(tmp_path / "missing.json")


def test_shipped_prior_is_the_documented_fit() -> None:
    info = LatticePrior.load(DEFAULT_LATTICE_PRIOR_PATH).info
    assert 0.15 < info["strain_lambda"] < 0.3
    assert info["volume_val_share_inside_band"] > 0.8
    assert isinstance(VolumeModel, type)


def test_shipped_fe_proxy_sees_the_lattice(val: list[Crystal]) -> None:
    """Issue acceptance: MP-20 validation crystals at 3× their volume are predicted ≥ 0.5 eV/atom higher on
    average, with a larger σ; the reward falls."""
    proxy = EnsembleProxy.load(CHECKPOINTS / "proxy-fe")
    base = proxy.posterior(val)
    big = proxy.posterior([scaled(c, 3.0) for c in val])
    mu0, sd0 = base.column(0)
    mu3, sd3 = big.column(0)
    assert float((mu3 - mu0).mean()) >= 0.5
    assert float((sd3 - sd0).mean()) > 0 and float((sd3 > sd0).float().mean()) > 0.9
    assert float((greedy(big, maximize=False) < greedy(base, maximize=False)).float().mean()) > 0.9
    # without the prior the network alone hardly moves (the defect this fixes)
    proxy.config = proxy.config.model_copy(update={"lattice_prior": False})
    raw0, raw3 = proxy.posterior(val).column(0)[0], proxy.posterior([scaled(c, 3.0) for c in val]).column(0)[0]
    assert abs(float((raw3 - raw0).mean())) < 0.5


def test_shipped_bg_reward_falls_with_the_cell(val: list[Crystal]) -> None:
    proxy = EnsembleProxy.load(CHECKPOINTS / "proxy-bg")
    base = proxy.posterior(val)
    big = proxy.posterior([scaled(c, 3.0) for c in val])
    assert big.penalty is not None and not any(big.penalized)
    assert float((target_value(big, value=1.34) < target_value(base, value=1.34)).float().mean()) > 0.9
    assert float((big.std > base.std).float().mean()) > 0.9


def test_a_needle_cell_of_the_right_volume_is_strained() -> None:
    """Issue 13's example: 47 atoms with b = 1.23 Å. Scale a·c so that the volume per atom is the predicted
    one; the shortest translation still compresses every atom onto its own image."""
    prior = default_lattice_prior()
    counts = {"Mg": 16, "F": 31}
    mean, _ = prior.volume.predict([Crystal(47, counts, 1, 1, 1, 90, 90, 90)])
    cell = float(np.exp(mean[0])) * 47
    needle = Crystal(47, counts, 12.0, 1.23, cell / (12.0 * 1.23), 90, 90, 90)
    block = Crystal(47, counts, cell ** (1 / 3), cell ** (1 / 3), cell ** (1 / 3), 90, 90, 90)
    assert float(volumes_per_atom([needle])[0]) == pytest.approx(float(volumes_per_atom([block])[0]))
    de, _ = prior.strain([needle, block])
    assert de[1] == 0.0 and de[0] > 10.0
    assert prior.plausibility([needle])[0] == 1.0
    assert 1.0 < prior.image_ratio < 1.2
