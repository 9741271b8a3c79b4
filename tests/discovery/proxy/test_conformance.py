"""Every proxy in the package, and the shipped test doubles, pass the shipped checks of :mod:`discovery.testing`."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from discovery.crystal import Crystal
from discovery.datasets.base import LabeledSet
from discovery.proxy import EnsembleConfig, EnsembleProxy
from discovery.proxy.base import FitReport, Posterior
from discovery.testing import FixedProxy, MeanProxy, check_proxy_conformance, mp20_slice

torch.set_num_threads(1)
TARGETS = ("formation_energy_per_atom", "band_gap")


@pytest.fixture(scope="module")
def data() -> tuple[LabeledSet, LabeledSet]:
    return mp20_slice(TARGETS, n_train=200, n_test=12)


def test_ensemble_proxy_conforms(data: tuple[LabeledSet, LabeledSet]) -> None:
    train, test = data
    small = EnsembleConfig(n_members=2, hidden=32, n_layers=2, epochs=5, batch_size=64, use_encoder=False,
                           calibration_fraction=0.0)
    report = check_proxy_conformance(EnsembleProxy(target_names=TARGETS, config=small), train, test.crystals)
    assert report.epochs == 5


def test_the_doubles_conform(data: tuple[LabeledSet, LabeledSet]) -> None:
    train, test = data
    check_proxy_conformance(MeanProxy(target_names=TARGETS), train, test.crystals)
    check_proxy_conformance(FixedProxy(-1.5, std=0.2, target_name="band_gap"), train, test.crystals)


def test_the_doubles_predict_what_they_say(data: tuple[LabeledSet, LabeledSet]) -> None:
    train, test = data
    mean = MeanProxy(target_names=("band_gap",))
    mean.fit(train.select("band_gap"))
    post = mean.posterior(test.crystals[:3])
    assert post.mean[:, 0].tolist() == pytest.approx([float(train.select("band_gap").targets.mean())] * 3, rel=1e-5)
    fixed = FixedProxy([1.0, 2.0, 3.0], std=0.5).posterior(test.crystals[:2])
    assert fixed.mean[:, 0].tolist() == [1.0, 2.0] and fixed.std[:, 0].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="holds 3 means"):
        FixedProxy([1.0, 2.0, 3.0]).posterior(test.crystals[:4])


class _OrderDependent(MeanProxy):
    """Breaks the contract: a crystal's prediction depends on its position in the batch."""

    def posterior(self, crystals: Sequence[Crystal]) -> Posterior:
        post = super().posterior(crystals)
        shift = torch.arange(len(crystals), dtype=torch.float32)[:, None]
        return Posterior(post.mean + shift, post.variance, post.target_names)


class _MiscountingFit(MeanProxy):
    def fit(self, data: LabeledSet, *, warm_start: object = None, validation: LabeledSet | None = None) -> FitReport:
        report = super().fit(data)
        report.n_train -= 1
        return report


def test_the_checks_can_fail(data: tuple[LabeledSet, LabeledSet]) -> None:
    train, test = data
    with pytest.raises(AssertionError, match="batch order"):
        check_proxy_conformance(_OrderDependent(target_names=TARGETS), train, test.crystals)
    with pytest.raises(AssertionError, match="n_train"):
        check_proxy_conformance(_MiscountingFit(target_names=TARGETS), train, test.crystals)
