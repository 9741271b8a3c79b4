"""Speed and accuracy benchmark of the default proxy on MP-20 (one torch thread)."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch

from discovery.datasets import MP20Target, load_mp20
from discovery.proxy.ensemble import EnsembleConfig, EnsembleProxy


def benchmark_proxy(*, target: MP20Target = "formation_energy_per_atom", n_predict: int = 10_000, threads: int = 1,
                    config: EnsembleConfig | None = None) -> dict[str, Any]:
    """Fit the default ensemble on MP-20 train (pre-trained encoder loaded, not trained: excluded from
    the time), recalibrate on MP-20 val, time a warm-started refit and the prediction of ``n_predict``
    crystals (MP-20 crystals repeated; features are recomputed for every row). Times in seconds."""
    torch.set_num_threads(threads)
    config = config or EnsembleConfig()
    train, val = load_mp20("train", target).data, load_mp20("val", target).data
    proxy = EnsembleProxy(target_names=(target,), config=config)
    t0 = time.perf_counter()
    report = proxy.fit(train, validation=val)
    fit_s = time.perf_counter() - t0
    warm = EnsembleProxy(target_names=(target,), config=config)
    t0 = time.perf_counter()
    warm_report = warm.fit(train, warm_start=proxy, validation=val)
    warm_s = time.perf_counter() - t0
    pool = train.crystals + val.crystals
    crystals = [pool[i % len(pool)] for i in range(n_predict)]
    proxy.posterior(crystals[:100])  # warm-up
    t0 = time.perf_counter()
    post = proxy.posterior(crystals)
    predict_s = time.perf_counter() - t0
    v = report.validation[target]
    return {
        "target": target, "n_members": config.n_members, "epochs": config.epochs, "n_train": report.n_train,
        "fit_seconds": round(fit_s, 2), "warm_refit_seconds": round(warm_s, 2), "warm_epochs": warm_report.epochs,
        "predict_n": n_predict, "predict_seconds": round(predict_s, 3), "posterior_shape": list(post.mean.shape),
        "val_mae": round(v["mae"], 4), "val_mae_warm_refit": round(warm_report.validation[target]["mae"], 4),
        "val_coverage_90_crossfit": round(v["coverage_90_crossfit"], 3),
        "val_spearman_std_abs_error": round(v["spearman_std_abs_error"], 3),
        "torch_threads": threads, "torch": torch.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
