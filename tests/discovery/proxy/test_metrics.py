"""Recalibration and uncertainty metrics on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from discovery.proxy.metrics import (
    calibration_scale,
    coverage,
    crossfit_coverage,
    regression_metrics,
    z_value,
)


def test_z_value():
    assert z_value(0.9) == pytest.approx(1.6449, abs=1e-4)


def test_calibration_recovers_a_misstated_sigma():
    rng = np.random.default_rng(0)
    true_sd = rng.uniform(0.1, 1.0, 20000)
    err = rng.normal(0, true_sd)
    claimed = true_sd / 3  # overconfident by 3x
    assert coverage(err, claimed) < 0.5
    s = calibration_scale(err, claimed)
    assert s == pytest.approx(3.0, rel=0.05)
    assert coverage(err, s * claimed) == pytest.approx(0.9, abs=0.01)
    assert crossfit_coverage(err, claimed) == pytest.approx(0.9, abs=0.02)


def test_regression_metrics_values():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    mean = np.array([0.5, 1.0, 2.0, 5.0])
    std = np.array([0.5, 0.1, 0.2, 3.0])
    m = regression_metrics(y, mean, std)
    assert m["mae"] == pytest.approx(0.625)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 4) / 4))
    assert m["spearman_std_abs_error"] == pytest.approx(0.9486833, abs=1e-6)
    assert m["coverage_90"] == 1.0
