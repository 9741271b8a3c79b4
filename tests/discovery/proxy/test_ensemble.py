"""The deep-ensemble proxy on real MP-20 slices: shapes, save/load, warm start, baseline, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from discovery.crystal import Crystal
from discovery.datasets import load_mp20, load_obelix
from discovery.proxy import EnsembleConfig, EnsembleProxy, Proxy, composition_mean_baseline, load_encoder
from discovery.proxy.features import featurize

torch.set_num_threads(1)
TARGETS = ("formation_energy_per_atom", "band_gap")
SMALL = EnsembleConfig(n_members=5, hidden=64, n_layers=2, epochs=40, warm_epochs=4, batch_size=64,
                       use_encoder=False, calibration_fraction=0.0)


@pytest.fixture(scope="module")
def mp20():
    train = load_mp20("train", TARGETS).data
    rng = np.random.default_rng(1)
    idx = rng.permutation(len(train))
    return train.subset(idx[:600]), train.subset(idx[600:800])


@pytest.fixture(scope="module")
def fitted(mp20):
    train, _ = mp20
    proxy = EnsembleProxy(target_names=TARGETS, config=SMALL)
    report = proxy.fit(train)
    return proxy, report


def test_posterior_shapes_and_protocol(fitted, mp20):
    proxy, report = fitted
    assert isinstance(proxy, Proxy)
    assert report.n_train == 600 and report.epochs == 40 and not report.warm_started
    post = proxy.posterior(mp20[1].crystals[:17])
    assert post.mean.shape == post.variance.shape == (17, 2)
    assert post.mean.dtype == torch.float32 and (post.variance > 0).all()
    assert post.target_names == TARGETS
    assert proxy.posterior([]).mean.shape == (0, 2)
    mu, var = proxy.member_predictions(mp20[1].crystals[:3])
    assert mu.shape == var.shape == (5, 3, 2)
    assert mu.std(0).min() > 0  # members disagree


def test_fit_beats_composition_mean_baseline(fitted, mp20):
    proxy, _ = fitted
    train, test = mp20
    post = proxy.posterior(test.crystals)
    mae = np.abs(post.mean.numpy() - test.targets).mean(axis=0)
    baseline = np.abs(composition_mean_baseline(train, test) - test.targets).mean(axis=0)
    assert (mae < 0.8 * baseline).all(), (mae, baseline)


def test_save_load_round_trip(fitted, mp20, tmp_path):
    proxy, _ = fitted
    crystals = mp20[1].crystals[:50]
    proxy.save(tmp_path / "m")
    loaded = EnsembleProxy.load(tmp_path / "m")
    a, b = proxy.posterior(crystals), loaded.posterior(crystals)
    assert torch.allclose(a.mean, b.mean) and torch.allclose(a.variance, b.variance)
    assert loaded.config == proxy.config and loaded.target_names == TARGETS
    with pytest.raises(FileNotFoundError):
        EnsembleProxy.load(tmp_path / "nothing")


def test_warm_start_reuses_weights(fitted, mp20):
    proxy, _ = fitted
    train, test = mp20
    more = train.concat(test.subset(range(100)))
    held = test.subset(range(100, 200))
    warm = EnsembleProxy(target_names=TARGETS, config=SMALL)
    report = warm.fit(more, warm_start=proxy)
    cold = EnsembleProxy(target_names=TARGETS, config=SMALL.model_copy(update={"epochs": SMALL.warm_epochs}))
    cold.fit(more)
    assert report.warm_started and report.epochs == SMALL.warm_epochs

    def mae(p: EnsembleProxy) -> float:
        return float(np.abs(p.posterior(held.crystals).mean.numpy() - held.targets).mean())

    assert mae(warm) < 0.8 * mae(cold)


def test_recalibration_on_held_out_rows(fitted, mp20):
    proxy, _ = fitted
    _, test = mp20
    metrics = proxy.recalibrate(test)
    for name in TARGETS:
        assert metrics[name]["coverage_90"] == pytest.approx(0.9, abs=0.02)
        assert 0.75 <= metrics[name]["coverage_90_crossfit"] <= 1.0
        assert metrics[name]["calibration_scale"] > 0
    proxy.calibration = torch.ones(len(TARGETS))


def test_unknown_elements_and_space_groups_are_rejected(fitted):
    proxy, _ = fitted
    with pytest.raises(ValueError, match="vocabulary"):
        proxy.posterior([Crystal(space_group=1, counts={"Am": 1}, a=3, b=3, c=3, alpha=90, beta=90, gamma=90)])
    with pytest.raises(ValueError, match="1–230"):
        featurize([Crystal(space_group=231, counts={"Na": 1}, a=3, b=3, c=3, alpha=90, beta=90, gamma=90)])


def test_generator_space_crystals_are_predicted(fitted):
    """Crystals like the Crystal-GFN samples: 22 elements, up to 80 atoms, extreme lattice values."""
    proxy, _ = fitted
    crystals = [
        Crystal(space_group=230, counts={"Li": 48, "Mn": 16, "Se": 16}, a=100.0, b=100.0, c=100.0,
                alpha=90, beta=90, gamma=90),
        Crystal(space_group=1, counts={"H": 1}, a=0.9, b=0.9, c=0.9, alpha=50, beta=50, gamma=50),
        Crystal(space_group=166, counts={"Fe": 6, "O": 9, "F": 3}, a=5.0, b=5.0, c=14.0, alpha=90, beta=90, gamma=120),
    ]
    post = proxy.posterior(crystals)
    assert torch.isfinite(post.mean).all() and torch.isfinite(post.variance).all()


def test_shipped_encoder_and_partial_occupancies():
    encoder = load_encoder()
    data = load_obelix().data.subset(range(0, 478, 40))
    feats = featurize(data.crystals)
    out = encoder.features(feats.fractions, feats.stats)
    assert out.shape == (len(data), encoder.n_features)
    assert torch.isfinite(out).all()
    # exact fractions are used: rows sum to 1 and match the fractional formula
    assert torch.allclose(feats.fractions.sum(1), torch.ones(len(data)))


def test_weighted_rows_pull_the_fit_towards_them(mp20):
    """Rows of weight w count ~w times: 30 relabelled rows (+1 eV/atom, +1 eV) among 600 are fitted far
    closer when weighted 25 than when weighted 1."""
    train, test = mp20
    new = test.subset(range(30))
    shifted = type(new)(new.crystals, new.targets + 1.0, new.target_names)
    data = train.concat(shifted)

    def error_on_new(weight: float) -> float:
        p = EnsembleProxy(target_names=TARGETS, config=SMALL)
        w = np.r_[np.ones(len(train)), np.full(len(shifted), weight)]
        p.fit(data, weights=w)
        return float(np.abs(p.posterior(shifted.crystals).mean.numpy() - shifted.targets).mean())

    assert error_on_new(25.0) < 0.7 * error_on_new(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        EnsembleProxy(target_names=TARGETS, config=SMALL).fit(data, weights=np.r_[np.ones(len(data) - 1), -1.0])
    with pytest.raises(ValueError, match="non-negative"):
        EnsembleProxy(target_names=TARGETS, config=SMALL).fit(data, weights=np.ones(3))


def test_equal_weights_fit_exactly_like_no_weights(mp20):
    """A campaign's round 0 has only seed rows: weights all 1 must not change the fit (or its random draws)."""
    train, test = mp20
    plain, weighted = EnsembleProxy(target_names=TARGETS, config=SMALL), EnsembleProxy(target_names=TARGETS, config=SMALL)
    plain.fit(train)
    weighted.fit(train, weights=np.ones(len(train)))
    assert torch.equal(plain.posterior(test.crystals).mean, weighted.posterior(test.crystals).mean)
