"""K-fold cross-validation and a composition-mean baseline for proxies."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from discovery.datasets.base import LabeledSet
from discovery.proxy.ensemble import EnsembleConfig, EnsembleProxy
from discovery.proxy.metrics import regression_metrics
from discovery.proxy.nn import CompositionEncoder


def kfold_indices(n: int, *, folds: int, seed: int = 0, groups: Sequence[object] | None = None) -> list[np.ndarray]:
    """``folds`` disjoint random index arrays covering 0 … n−1; with ``groups`` (one label per row),
    all rows of a group fall in the same fold (groups are dealt to folds largest first)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return list(np.array_split(rng.permutation(n), folds))
    labels = np.array([str(g) for g in groups])
    uniq, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(folds)
    fold_of_group = np.zeros(len(uniq), dtype=np.int64)
    for g in order:
        k = int(np.argmin(load))
        fold_of_group[g] = k
        load[k] += sizes[g]
    return [np.flatnonzero(fold_of_group[inverse] == k) for k in range(folds)]


def group_labels(data: LabeledSet, by: str) -> list[object]:
    """Group label per row: ``formula`` (reduced formula), ``chemsys`` (element set) or a key of ``Crystal.extra``."""
    if by == "formula":
        return [c.reduced_formula() for c in data.crystals]
    if by == "chemsys":
        return ["-".join(sorted(c.counts)) for c in data.crystals]
    missing = [c.id for c in data.crystals if by not in c.extra]
    if missing:
        raise ValueError(f"cannot group by {by!r}: {len(missing)} rows lack it (e.g. {missing[0]})")
    return [c.extra[by] for c in data.crystals]


def cross_validate(data: LabeledSet, *, folds: int = 5, config: EnsembleConfig | None = None,
                   encoder: CompositionEncoder | None = None, seed: int = 0, group_by: str | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """Out-of-fold predictions of an :class:`EnsembleProxy` (each fold recalibrated on a held-out
    share of its own training rows); returns per-target metrics over all rows plus the MAE per fold.
    ``group_by`` (see :func:`group_labels`) keeps related rows in one fold, for a stricter estimate.
    """
    config = config or EnsembleConfig()
    m = len(data.target_names)
    mean = np.zeros((len(data), m))
    std = np.zeros((len(data), m))
    fold_mae: list[np.ndarray] = []
    groups = group_labels(data, group_by) if group_by else None
    for k, test in enumerate(kfold_indices(len(data), folds=folds, seed=seed, groups=groups)):
        train = np.setdiff1d(np.arange(len(data)), test)
        proxy = EnsembleProxy(target_names=data.target_names, config=config, encoder=encoder)
        proxy.fit(data.subset(train))
        post = proxy.posterior(data.subset(test).crystals)
        mean[test], std[test] = post.mean.double().numpy(), post.std.double().numpy()
        fold_mae.append(np.abs(mean[test] - data.targets[test]).mean(axis=0))
        if progress:
            progress(k + 1, folds)
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(data.target_names):
        metrics = regression_metrics(data.targets[:, j], mean[:, j], std[:, j], level=config.calibration_level)
        metrics["folds"] = float(folds)
        metrics["mae_fold_std"] = float(np.std([f[j] for f in fold_mae]))
        for k, f in enumerate(fold_mae):
            metrics[f"mae_fold_{k + 1}"] = float(f[j])
        out[name] = metrics
    return out


def composition_mean_baseline(train: LabeledSet, test: LabeledSet) -> np.ndarray:
    """Composition-mean baseline, (n_test, m): each element gets the mean label of the training
    crystals that contain it; a test crystal gets the atom-fraction-weighted mean over its elements
    (the global training mean for elements never seen). The baseline a fitted proxy must beat."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for c, y in zip(train.crystals, train.targets, strict=True):
        for el in c.counts:
            sums[el] = sums.get(el, 0) + y
            counts[el] = counts.get(el, 0) + 1
    overall = train.targets.mean(axis=0)
    out = np.zeros((len(test), train.targets.shape[1]))
    for i, c in enumerate(test.crystals):
        total = sum(c.counts.values())
        out[i] = sum((n / total) * (sums[el] / counts[el] if el in counts else overall) for el, n in c.counts.items())
    return out
