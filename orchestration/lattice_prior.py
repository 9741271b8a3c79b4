"""Build the lattice prior (:mod:`discovery.proxy.lattice`) from MP-20 train and CHGNet single points.

The volume model is fitted on MP-20 train's conventional cells. The strain model is fitted on CHGNet
energies of MP-20 train structures whose volume is scaled isotropically by each factor of ``scales``
(fractional coordinates kept): single points, no relaxation, about 30 ms per structure on one core.
Structures in which an atom has no neighbour within CHGNet's 6 Å cutoff at some scale get NaN there
(CHGNet refuses them) and are left out of the fit at that scale only.

    matloop proxy fit-lattice-prior --out discovery/data/lattice_prior.json
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SCALES: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)


def scaled_energies(structures: Sequence[Any], scales: Sequence[float], *, batch_size: int = 16,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, s) CHGNet energies per atom (eV/atom) of each structure scaled to each volume factor; NaN where
    CHGNet cannot evaluate it (isolated atoms)."""
    import torch
    from chgnet.model import CHGNet

    torch.set_num_threads(1)
    model = CHGNet.load(verbose=False)
    out = np.full((len(structures), len(scales)), np.nan)
    for i, s in enumerate(structures):
        cells = []
        for f in scales:
            t = s.copy()
            t.scale_lattice(s.volume * f)
            cells.append(t)
        try:
            preds: Any = model.predict_structure(cells, task="e", batch_size=batch_size)
            out[i] = [float(p["e"]) for p in preds]
        except ValueError:  # an isolated atom at some scale: evaluate one by one
            for j, t in enumerate(cells):
                try:
                    one: Any = model.predict_structure(t, task="e")
                    out[i, j] = float(one["e"])
                except ValueError:
                    continue
        if progress is not None:
            progress(i + 1, len(structures))
    return out


def build_lattice_prior(*, n_structures: int | None = None, scales: Sequence[float] = DEFAULT_SCALES,
                        tolerance: float = 1.5, seed: int = 0,
                        progress: Callable[[int, int], None] | None = None) -> Any:
    """Fit a :class:`~discovery.proxy.lattice.LatticePrior` (volume model on all of MP-20 train; strain
    model on ``n_structures`` of its structures, all when None, drawn with ``seed``)."""
    import warnings

    import pandas as pd

    from discovery.crystal import Crystal
    from discovery.datasets import load_mp20
    from discovery.datasets.mp20 import raw_path
    from discovery.datasets.structures import structure_from_cif
    from discovery.proxy.lattice import (
        LatticePrior,
        StrainModel,
        VolumeModel,
        fit_image_ratio,
        volumes_per_atom,
    )

    t0 = time.perf_counter()
    train = load_mp20("train").data
    val = load_mp20("val").data
    volume = VolumeModel.fit(train.crystals)
    raw = pd.read_csv(raw_path("train"))
    rng = np.random.default_rng(seed)
    rows = np.arange(len(raw)) if n_structures is None else np.sort(rng.choice(len(raw), min(n_structures, len(raw)),
                                                                                replace=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [structure_from_cif(raw["cif"].iloc[i]) for i in rows]
    energies = scaled_energies(structures, scales, progress=progress)
    comps = [Crystal(1, {str(el): round(q) for el, q in s.composition.get_el_amt_dict().items()},
                     *s.lattice.parameters) for s in structures]
    strain = StrainModel.fit(comps, np.asarray(scales), energies)
    mean, sd = volume.predict(val.crystals)
    resid = np.log(volumes_per_atom(val.crystals)) - mean
    info = {
        "volume_fit": "MP-20 train conventional cells (2,051), Bayesian ridge on ln(V/atom)",
        "volume_val_mae_ln": float(np.nanmean(np.abs(resid))),
        "volume_val_share_inside_band": float(np.nanmean(np.abs(resid) <= tolerance * sd)),
        "strain_fit": f"CHGNet 0.3.0 single points of {len(structures)} MP-20 train structures at volume scales "
                      f"{list(scales)}",
        "strain_lambda": strain.lam, "strain_ec_median": strain.ec_default, "strain_ec_resid_std": strain.ec_std,
        "n_nan_points": int(np.isnan(energies).sum()), "seconds": round(time.perf_counter() - t0, 1),
    }
    return LatticePrior(volume=volume, strain_model=strain, tolerance=tolerance,
                        image_ratio=fit_image_ratio(train.crystals), info=info)


def write_lattice_prior(out: Path, **kwargs: Any) -> dict[str, Any]:
    """Build and save the prior to ``out``; returns its ``info``."""
    prior = build_lattice_prior(**kwargs)
    prior.save(out)
    return dict(prior.info)


def scale_check(proxy_dir: Path, *, factors: Sequence[float] = (0.5, 0.8, 1.0, 1.5, 2.0, 3.0)) -> dict[str, Any]:
    """MP-20 validation crystals with their volume scaled by each factor: the proxy's mean prediction and σ
    (averaged), with and without the lattice prior."""
    import dataclasses

    from discovery.datasets import load_mp20
    from discovery.proxy import EnsembleProxy

    val = load_mp20("val").data.crystals
    proxy = EnsembleProxy.load(proxy_dir)
    raw = EnsembleProxy.load(proxy_dir)
    raw.config = raw.config.model_copy(update={"lattice_prior": False})
    out: dict[str, Any] = {"proxy": str(proxy_dir), "n": len(val), "target": proxy.target_names[0], "factors": {}}
    for f in factors:
        s = f ** (1 / 3)
        scaled = [dataclasses.replace(c, a=c.a * s, b=c.b * s, c=c.c * s) for c in val]
        mu, sd = proxy.posterior(scaled).column(0)
        mu0, sd0 = raw.posterior(scaled).column(0)
        out["factors"][str(f)] = {"mean": float(mu.mean()), "std": float(sd.mean()),
                                  "mean_without_prior": float(mu0.mean()), "std_without_prior": float(sd0.mean())}
    return out


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import json

    parser = argparse.ArgumentParser(description="What the lattice prior does to a proxy on MP-20 validation "
                                                 "crystals scaled in volume (prints JSON).")
    parser.add_argument("--proxy", type=Path, default=Path("discovery/data/checkpoints/proxy-fe"))
    print(json.dumps(scale_check(parser.parse_args().proxy), indent=1))
