"""Accuracy and uncertainty metrics, and variance recalibration.

Recalibration multiplies the predicted standard deviation of each target by one scale ``s`` chosen
on a calibration set so that the central ``level`` Gaussian interval mean ± z·s·σ covers that share
of the calibration errors (``s`` = quantile_level(|error| / σ) / z).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def z_value(level: float) -> float:
    """Half-width, in standard deviations, of the central ``level`` interval of a Gaussian (0.9 → 1.645)."""
    return float(stats.norm.ppf(0.5 + level / 2))


def calibration_scale(error: np.ndarray, std: np.ndarray, *, level: float = 0.9) -> float:
    """Scale for σ so that ``level`` of |error| ≤ z·s·σ on this set (1-D arrays, same units)."""
    ratio = np.abs(error) / np.maximum(std, 1e-12)
    return float(np.quantile(ratio, level) / z_value(level)) if ratio.size else 1.0


def coverage(error: np.ndarray, std: np.ndarray, *, level: float = 0.9) -> float:
    """Share of points with |error| ≤ z·σ (central ``level`` interval)."""
    return float(np.mean(np.abs(error) <= z_value(level) * std)) if error.size else float("nan")


def crossfit_coverage(error: np.ndarray, std: np.ndarray, *, level: float = 0.9, seed: int = 0) -> float:
    """Honest coverage after recalibration: scale fitted on one random half, measured on the other (both ways)."""
    n = error.size
    if n < 4:
        return float("nan")
    idx = np.random.default_rng(seed).permutation(n)
    halves = (idx[: n // 2], idx[n // 2:])
    hits = 0.0
    for fit_on, test_on in (halves, halves[::-1]):
        s = calibration_scale(error[fit_on], std[fit_on], level=level)
        hits += coverage(error[test_on], s * std[test_on], level=level) * test_on.size
    return hits / n


def regression_metrics(y: np.ndarray, mean: np.ndarray, std: np.ndarray, *, level: float = 0.9) -> dict[str, float]:
    """MAE, RMSE, R², coverage of the ``level`` interval, Spearman(σ, |error|) and Gaussian NLL (1-D arrays)."""
    err = mean - y
    var = np.maximum(std, 1e-12) ** 2
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    rho = stats.spearmanr(std, np.abs(err)).statistic if y.size > 2 and np.ptp(std) > 0 else float("nan")
    return {
        "n": float(y.size),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
        f"coverage_{round(level * 100)}": coverage(err, std, level=level),
        "spearman_std_abs_error": float(rho),
        "nll": float(np.mean(0.5 * np.log(2 * np.pi * var) + 0.5 * err**2 / var)),
    }
