"""Pre-training the composition encoder on the composition-only MatBench sets.

The shipped encoder (``discovery/data/composition_only/encoder.pt``, < 1 MB) was trained on
formation energies (eV/atom) and band gaps (eV) by formula, with every MP-20 train and validation
formula removed first: MP-20 validation errors of proxies that use it are then honest (the sets
contain almost every MP-20 formula), and the encoder is out-of-sample on the proxy's training rows
as on new ones, so the proxy learns how far to trust it. Rebuild it with ``matloop proxy pretrain``
(≈ 5 min on one core).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from discovery.datasets.base import DATA_DIR
from discovery.datasets.sources import load_composition_only
from discovery.proxy.features import composition_arrays, composition_stats, dense_fractions
from discovery.proxy.nn import CompositionEncoder

DEFAULT_ENCODER_PATH = DATA_DIR / "composition_only" / "encoder.pt"
ENCODER_TARGETS: tuple[str, str] = ("formation_energy_per_atom", "band_gap")


@dataclass
class PretrainReport:
    """What pre-training used and how well the encoder predicts held-out formulas (MAE in target units)."""

    n_rows: dict[str, int]
    n_excluded: dict[str, int]
    holdout_mae: dict[str, float]
    epochs: int
    seconds: float
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)


def _arrays(counts: list[dict[str, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    zs, amounts = composition_arrays(counts)
    return torch.from_numpy(dense_fractions(zs, amounts)), torch.from_numpy(composition_stats(zs, amounts))


def pretrain_encoder(*, exclude_formulas: Iterable[str] = (), epochs: int = 30, batch_size: int = 1024,
                     lr: float = 2e-3, seed: int = 0, holdout_fraction: float = 0.03, variance: bool = False,
                     progress: Callable[[int, int, float], None] | None = None) -> tuple[CompositionEncoder, PretrainReport]:
    """Train a :class:`CompositionEncoder` on both composition-only sets (multi-task, masked L1).

    ``exclude_formulas`` are removed (by reduced formula) before training. ``variance`` adds a
    log-variance head (trained on the detached embedding; off for the shipped encoder).
    ``progress(epoch, epochs, loss)`` is called after each epoch. Returns the encoder (eval mode) and a report.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    exclude = list(exclude_formulas)
    sets = [load_composition_only("e_form", exclude_formulas=exclude), load_composition_only("gap", exclude_formulas=exclude)]
    counts = sets[0].data.counts + sets[1].data.counts
    y = np.full((len(counts), 2), np.nan, dtype=np.float32)
    n0 = len(sets[0].data)
    y[:n0, 0] = sets[0].data.targets[:, 0]
    y[n0:, 1] = sets[1].data.targets[:, 0]
    fractions, stats = _arrays(counts)
    targets = torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    n_hold = int(holdout_fraction * len(counts))
    hold, train = torch.from_numpy(order[:n_hold]), torch.from_numpy(order[n_hold:])

    enc = CompositionEncoder(n_stats=stats.shape[1], variance=variance)
    enc.stats_mean.copy_(stats[train].mean(0))
    enc.stats_std.copy_(stats[train].std(0).clamp_min(1e-3))
    enc.target_mean.copy_(torch.nanmean(targets[train], 0))
    enc.target_std.copy_(torch.from_numpy(np.nanstd(y[train.numpy()], axis=0)))
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=1e-5)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    ystd = (targets - enc.target_mean) / enc.target_std
    enc.train()
    for epoch in range(epochs):
        perm = train[torch.randperm(len(train))]
        total, count = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            h = enc.embed(fractions[idx], stats[idx])
            pred = enc.head(h)
            tgt = ystd[idx]
            mask = torch.isfinite(tgt)
            loss = torch.nn.functional.l1_loss(pred[mask], tgt[mask])
            if enc.var_head is not None:  # Gaussian NLL on the detached embedding and mean
                logvar = enc.var_head(h.detach()).clamp(-10, 6)[mask]
                resid = (tgt[mask] - pred[mask].detach()) ** 2
                loss = loss + 0.5 * (0.5 * (logvar + resid * torch.exp(-logvar))).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        if progress:
            progress(epoch + 1, epochs, total / max(count, 1))
    enc.eval()
    d_out = int(enc.config["d_out"])
    pred = enc.features(fractions[hold], stats[hold])[:, d_out:d_out + 2]
    mae = {}
    for j, name in enumerate(ENCODER_TARGETS):
        m = torch.isfinite(targets[hold, j])
        mae[name] = float((pred[m, j] - targets[hold, j][m]).abs().mean())
    report = PretrainReport(
        n_rows={"e_form": n0, "gap": len(sets[1].data)},
        n_excluded={s.report.source: s.report.counts().get("reserved for evaluation", 0) for s in sets},
        holdout_mae=mae, epochs=epochs, seconds=time.perf_counter() - t0,
        skipped={s.report.source: s.report.counts() for s in sets},
    )
    return enc, report


def save_encoder(encoder: CompositionEncoder, path: str | Path, *, info: dict[str, object] | None = None) -> Path:
    """Save weights (float32), configuration and provenance ``info`` in one small file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": encoder.config, "state_dict": encoder.state_dict(), "info": info or {}}, path)
    return path


def load_encoder(path: str | Path = DEFAULT_ENCODER_PATH) -> CompositionEncoder:
    """Load an encoder saved by :func:`save_encoder` (eval mode)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no composition encoder; build it with `matloop proxy pretrain --out {path}`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    enc = CompositionEncoder(**blob["config"])
    enc.load_state_dict(blob["state_dict"])
    enc.eval()
    return enc


def encoder_from_state(blob: dict[str, Any]) -> CompositionEncoder:
    enc = CompositionEncoder(**blob["config"])
    enc.load_state_dict(blob["state_dict"])
    enc.eval()
    return enc
