"""Conformance checks and test doubles for proxies, shipped so that a plugin's own tests can import them.

A proxy (:class:`discovery.proxy.base.Proxy`) is anything with ``target_names``, ``fit(data, *,
warm_start, validation) -> FitReport`` and ``posterior(crystals) -> Posterior``. :func:`check_proxy_conformance`
asserts that contract on real data::

    from discovery.testing import check_proxy_conformance, mp20_slice

    def test_my_proxy():
        train, test = mp20_slice(("formation_energy_per_atom",), n_train=200, n_test=20)
        check_proxy_conformance(MyProxy(target_names=train.target_names), train, test.crystals)

Test doubles (real, tiny models, not mocks: they satisfy the same protocol and pass the same checks):

* :class:`FixedProxy`: predicts given means (one value for every crystal, or one per position) with a
  fixed σ, for testing acquisition functions, rewards and campaign steps against known numbers;
* :class:`MeanProxy`: fits the per-target mean and standard deviation of its training labels, the
  simplest proxy that learns anything (a baseline, and a stand-in where a fit must happen but its
  quality does not matter).

Nothing here needs pytest; failures are ``AssertionError`` with what was expected.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from discovery.crystal import Crystal
from discovery.datasets.base import LabeledSet
from discovery.datasets.mp20 import MP20Target
from discovery.proxy.base import FitReport, Posterior, Proxy


class FixedProxy:
    """Predicts ``means`` with standard deviation ``std`` for target ``target_name``.

    ``means``: one float (every crystal gets it) or a sequence (crystal ``i`` of a call gets ``means[i]``; a
    call with more crystals than means is an error). ``fit`` learns nothing (the means are the model)."""

    def __init__(self, means: float | Sequence[float], *, std: float = 0.1, target_name: str = "x") -> None:
        self.means = means if isinstance(means, float | int) else [float(m) for m in means]
        self.std = float(std)
        self.target_names: tuple[str, ...] = (target_name,)

    def fit(self, data: LabeledSet, *, warm_start: Any = None, validation: LabeledSet | None = None) -> FitReport:
        return FitReport(n_train=len(data), epochs=0, seconds=0.0, warm_started=warm_start is not None,
                         target_names=self.target_names)

    def posterior(self, crystals: Sequence[Crystal]) -> Posterior:
        n = len(crystals)
        if isinstance(self.means, list):
            if n > len(self.means):
                raise ValueError(f"FixedProxy holds {len(self.means)} means, asked for {n} crystals")
            mean = torch.tensor(self.means[:n], dtype=torch.float32)[:, None]
        else:
            mean = torch.full((n, 1), float(self.means), dtype=torch.float32)
        return Posterior(mean, torch.full_like(mean, self.std**2), self.target_names)


class MeanProxy:
    """Predicts every target's training mean, with the training standard deviation as σ (per target)."""

    def __init__(self, *, target_names: Sequence[str]) -> None:
        self.target_names = tuple(target_names)
        self.mean = np.zeros(len(self.target_names))
        self.std = np.ones(len(self.target_names))

    def fit(self, data: LabeledSet, *, warm_start: Any = None, validation: LabeledSet | None = None) -> FitReport:
        t0 = time.perf_counter()
        y = data.select(list(self.target_names)).targets
        if len(y) == 0:
            raise ValueError("MeanProxy.fit: no labelled rows")
        self.mean = np.nanmean(y, axis=0)
        self.std = np.maximum(np.nanstd(y, axis=0), 1e-6)
        mae = np.nanmean(np.abs(y - self.mean), axis=0)
        return FitReport(n_train=len(data), epochs=1, seconds=time.perf_counter() - t0,
                         warm_started=warm_start is not None, target_names=self.target_names,
                         train_mae={n: float(m) for n, m in zip(self.target_names, mae, strict=True)})

    def posterior(self, crystals: Sequence[Crystal]) -> Posterior:
        n = len(crystals)
        mean = torch.tensor(np.tile(self.mean, (n, 1)), dtype=torch.float32).reshape(n, len(self.target_names))
        var = torch.tensor(np.tile(self.std**2, (n, 1)), dtype=torch.float32).reshape(n, len(self.target_names))
        return Posterior(mean, var, self.target_names)


def mp20_slice(target_names: Sequence[MP20Target], *, n_train: int = 200, n_test: int = 20,
               seed: int = 0) -> tuple[LabeledSet, LabeledSet]:
    """Disjoint random train and test rows of the shipped MP-20 train table (labels: ``target_names``)."""
    from discovery.datasets import load_mp20

    data = load_mp20("train", tuple(target_names)).data
    idx = np.random.default_rng(seed).permutation(len(data))
    return data.subset(idx[:n_train]), data.subset(idx[n_train:n_train + n_test])


def check_posterior(post: Posterior, *, n: int, target_names: Sequence[str]) -> None:
    """A posterior for ``n`` crystals: (n, m) float32 means and variances, finite, variance > 0, names."""
    m = len(target_names)
    assert isinstance(post, Posterior), f"posterior() returned {type(post).__name__}, not a Posterior"
    assert tuple(post.mean.shape) == tuple(post.variance.shape) == (n, m), \
        f"mean {tuple(post.mean.shape)} and variance {tuple(post.variance.shape)} must be ({n}, {m})"
    assert post.mean.dtype == post.variance.dtype == torch.float32, (post.mean.dtype, post.variance.dtype)
    assert tuple(post.target_names) == tuple(target_names), (post.target_names, tuple(target_names))
    if n:
        assert torch.isfinite(post.mean).all() and torch.isfinite(post.variance).all(), "non-finite prediction"
        assert (post.variance > 0).all(), "every variance must be > 0 (acquisition divides by σ)"


def check_proxy_conformance(proxy: Proxy, train: LabeledSet, crystals: Sequence[Crystal]) -> FitReport:
    """Assert the :class:`~discovery.proxy.base.Proxy` contract: fit on ``train`` reports its size and target
    names; the posterior of ``crystals`` (at least 2) has the right shapes, dtype, names, finite values and
    positive variances, an empty list gives (0, m), a repeated call gives the same numbers, and reordering the
    crystals reorders the rows. Returns the fit report for proxy-specific checks."""
    assert isinstance(proxy, Proxy), f"{proxy!r} does not implement discovery.proxy.base.Proxy"
    assert len(crystals) >= 2, "give at least two crystals to predict"
    names = tuple(proxy.target_names)
    assert names and set(names) <= set(train.target_names), (names, train.target_names)
    report = proxy.fit(train.select(list(names)))
    assert isinstance(report, FitReport), f"fit() returned {type(report).__name__}, not a FitReport"
    assert report.n_train == len(train), f"FitReport.n_train {report.n_train} != {len(train)} rows"
    assert tuple(report.target_names) == names and not report.warm_started, report
    post = proxy.posterior(list(crystals))
    check_posterior(post, n=len(crystals), target_names=names)
    check_posterior(proxy.posterior([]), n=0, target_names=names)
    again = proxy.posterior(list(crystals))
    assert torch.allclose(post.mean, again.mean) and torch.allclose(post.variance, again.variance), \
        "the same crystals gave different predictions"
    order = list(range(len(crystals)))[::-1]
    flipped = proxy.posterior([crystals[i] for i in order])
    assert torch.allclose(flipped.mean, post.mean[order], atol=1e-5), "predictions depend on the batch order"
    return report
