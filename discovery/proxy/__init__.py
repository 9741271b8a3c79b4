"""Proxy models with uncertainty: the ``Proxy`` interface, a deep-ensemble proxy and acquisition functions.

>>> from discovery.datasets import load_mp20
>>> train, _ = load_mp20("train", "formation_energy_per_atom")
>>> proxy = EnsembleProxy(target_names=("formation_energy_per_atom",))
>>> report = proxy.fit(train)
>>> post = proxy.posterior(train.crystals[:10])       # post.mean, post.variance: (10, 1)
>>> log_r = log_reward_from_acquisition(lcb(post, kappa=1.0), temperature=0.125)
"""

from discovery.datasets.base import LabeledSet
from discovery.proxy.acquisition import (
    Acquisition,
    AcquisitionName,
    expected_improvement,
    greedy,
    lcb,
    log_reward_from_acquisition,
    make_acquisition,
    mean,
    target_value,
    ucb,
)
from discovery.proxy.base import FitReport, Posterior, Proxy
from discovery.proxy.encoder import DEFAULT_ENCODER_PATH, load_encoder, pretrain_encoder, save_encoder
from discovery.proxy.ensemble import EnsembleConfig, EnsembleProxy
from discovery.proxy.evaluate import composition_mean_baseline, cross_validate
from discovery.proxy.metrics import regression_metrics
from discovery.proxy.residual import ResidualConfig, ResidualProxy, load_proxy

__all__ = [
    "DEFAULT_ENCODER_PATH", "Acquisition", "AcquisitionName", "EnsembleConfig", "EnsembleProxy", "FitReport",
    "LabeledSet", "Posterior", "Proxy", "ResidualConfig", "ResidualProxy", "composition_mean_baseline",
    "cross_validate", "expected_improvement", "greedy", "lcb", "load_encoder", "load_proxy",
    "log_reward_from_acquisition", "make_acquisition", "mean", "pretrain_encoder", "regression_metrics",
    "save_encoder", "target_value", "ucb",
]
