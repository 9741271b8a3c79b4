"""Residual proxy: a deep ensemble (the *base*) corrected by a Gaussian process fitted on oracle labels only.

The base is fitted on thousands of seed rows and a campaign's few oracle labels hardly move it; the
labels of the picked candidates are nevertheless off by several base σ (see :mod:`discovery.proxy.residual_check`).
The residual model learns that offset from the labels alone:

    y(x) = m(x) + r(x),   r ~ GP(0, k),
    k(x, x') = s²·σ(x)·σ(x')·exp(−|f(x) − f(x')|² / 2ℓ²)      chemistry-local part, in units of the base σ
             + b²                                            one offset shared by every crystal
             + p²·Δ(x)·Δ(x')                                  a slope on the lattice-prior strain energy
             + c²·[g(x) = g(x')]                              a shared offset per structure family (optional)
    label i observed with noise variance (σₙ² + η²Δᵢ²) / wᵢ        (η optional, ``strain_noise_prior``)

``m`` and ``σ`` are the base's posterior mean and std of the target (the lattice prior's strain energy
``Δ`` already added to the mean of energy targets), ``f`` a composition feature vector (:data:`FeatureKind`).
The prior of the residual is thus the base's own error model (std ``s·σ``, ``s`` fitted) plus the two
parametric terms: far from every label the predictive std returns to ≈ ``s·σ`` and the mean to the base
mean plus the learned offset terms; near labels the std shrinks towards σₙ. ``s``, ``ℓ`` and ``σₙ`` are
maximum a-posteriori estimates, as is η (marginal likelihood × weak log-normal priors, robust with 5–30 labels);
``b`` and ``p`` are fixed prior scales (Bayesian linear regression on those two basis functions).
``g`` is an optional *family* label per crystal (the seed structure a substitution descends from, see
:func:`discovery.loop.family_of`; ``None``: a family of its own): crystals of one family share a random offset of
std ``c`` (MAP estimate, off when ``family_prior_std`` is 0). Its purpose: the composition features cannot see the
host structure, yet the base's error on a substitution is mostly the host's; once a sibling is labelled, the
offset carries its error to the rest of the family.
The predictive variance is finally multiplied by a scale² set on the labels' leave-one-out residuals.
(Not ``base σ² + GP σ²``: that sum never falls below the base's σ at a label, and its GP term, with its own
amplitude, would not return to the base's σ far from the labels; here the base's σ *is* the GP prior.)
Features: 'magpie' by default (pooled replay MAE 0.49 vs 0.50 'dense', 0.50 'fractions'; ablation in the check).

A saved model directory is an :class:`~discovery.proxy.ensemble.EnsembleProxy` directory (the base,
loadable on its own) plus ``residual.json`` (configuration, hyper-parameters and the labels' features).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.linalg import cho_solve, cholesky, solve_triangular
from threadpoolctl import threadpool_limits

from discovery.crystal import Crystal
from discovery.datasets.base import LabeledSet
from discovery.proxy.base import Posterior
from discovery.proxy.ensemble import EnsembleProxy
from discovery.proxy.features import featurize
from discovery.proxy.metrics import calibration_scale

RESIDUAL_FILE = "residual.json"
RESIDUAL_FORMAT_VERSION = 1
FeatureKind = Literal["magpie", "dense", "fractions"]


class ResidualConfig(BaseModel):
    """Options of :class:`ResidualProxy` (saved with it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: FeatureKind = Field(default="magpie", description=(
        "chemistry vector f(x) of the GP kernel: 'magpie' = fraction-weighted mean and mean absolute deviation of "
        "20 standardised element properties (40 numbers, Magpie-like); 'dense' = the base's own standardised dense "
        "inputs (composition statistics + pretrained encoder features); 'fractions' = atom fractions by Z. "
        "Scaled by 1/√dim so that distances are O(1)"))
    bias_prior_std: float = Field(default=0.5, ge=0, description=(
        "prior std b of one offset shared by all crystals, in target units (eV/atom for energies); 0 = none"))
    penalty_slope_prior_std: float = Field(default=1.0, ge=0, description=(
        "prior std p of the slope on the lattice-prior strain energy Δ (dimensionless: the label may carry "
        "(1 + slope)·Δ; energies only, the oracle relaxes the cell); 0 = none"))
    amplitude_prior: float = Field(default=1.0, gt=0, description=(
        "prior median of s, the std of the chemistry-local residual in units of the base σ"))
    strain_noise_prior: float = Field(default=0.5, ge=0, description=(
        "prior median of η, an extra label noise η·Δ growing with the lattice-prior strain energy Δ (dimensionless; "
        "a strained cell relaxes to a good or a bad structure, the oracle decides: such labels are bimodal). "
        "0 = no such term. On the discovery benchmark: pooled replay MAE 0.491 → 0.434 eV/atom, loop 0.635 → 0.606"))
    amplitude_min: float = Field(default=1.0, gt=0, description=(
        "lower bound of s: 1 = far from the labels the std never falls below the base's own (labels in one "
        "chemistry that the base got right say nothing about another; without it exact labels drive s → 0)"))
    max_length_scale: float = Field(default=2.0, gt=0, description=(
        "upper bound of ℓ in units of the median distance between labels: the GP corrects locally, at the "
        "labels' own spread; a trend shared by all crystals belongs to the offset and slope terms (an unbounded ℓ "
        "would carry it, and its confidence, to chemistries far from every label)"))
    noise_prior: float = Field(default=0.3, gt=0, description=(
        "prior median of the label noise σₙ, in target units (eV/atom for energies). 0.3: on the discovery "
        "benchmark's 344 CHGNet labels the MAP σₙ is 0.55–0.65 eV/atom once there are > 30 labels; with 5–15 labels "
        "a small prior (0.05) let the GP interpolate them exactly, loop-replay MAE 0.680 vs 0.635 eV/atom"))
    log_prior_width: float = Field(default=1.0, gt=0, description=(
        "std of the log-normal priors on s, ℓ / (median label distance) and σₙ (natural-log units)"))
    family_prior_std: float = Field(default=0.0, ge=0, description=(
        "prior median of c, the std of an offset shared by the crystals of one structure family (eV/atom for "
        "energies; fitted, MAP with the other hyper-parameters); 0 = no family term"))
    calibrate: bool = Field(default=True, description="rescale σ so that the labels' LOO residuals cover `level`")
    calibration_level: float = Field(default=0.9, gt=0, lt=1)
    min_calibration_labels: int = Field(default=8, ge=2, description="fewer labels: σ scale 1")
    calibration_bounds: tuple[float, float] = Field(default=(1.0, 3.0), description=(
        "clip of the σ scale; ≥ 1 by default, since LOO residuals sit near other labels and the scale applies "
        "everywhere: labels may widen σ globally, and narrow it only locally (through the GP)"))


def chemistry_features(base: EnsembleProxy, crystals: Sequence[Crystal], kind: FeatureKind) -> np.ndarray:
    """(n, d) float64 feature vectors f(x) of ``kind`` (see :class:`ResidualConfig`), scaled by 1/√d."""
    if kind == "dense":
        x = base.dense_features(crystals).double().numpy()
    else:
        feats = featurize(crystals)
        if kind == "fractions":
            x = feats.fractions.double().numpy()
        else:
            n_props = (feats.stats.shape[1] - 3) // 4
            x = feats.stats[:, : 2 * n_props].double().numpy()  # weighted mean, mean absolute deviation
    return x / math.sqrt(max(1, x.shape[1]))


Groups = Sequence[str | None]
"""One family label per crystal (``None``: none; it shares an offset with no other crystal)."""


def _same_family(a: Groups, b: Groups) -> np.ndarray:
    """(len(a), len(b)) 1.0 where both crystals have the same family, else 0.0."""
    codes: dict[str, int] = {}
    ca = np.array([-1 if g is None else codes.setdefault(g, len(codes)) for g in a], dtype=np.int64)
    cb = np.array([-2 if g is None else codes.setdefault(g, len(codes)) for g in b], dtype=np.int64)
    return (ca[:, None] == cb[None, :]).astype(float)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


class _GP:
    """The exact GP of the module docstring on stored label data (all arrays float64, n labels)."""

    def __init__(self, *, x: np.ndarray, mean: np.ndarray, std: np.ndarray, penalty: np.ndarray, y: np.ndarray,
                 weight: np.ndarray, config: ResidualConfig, groups: Groups | None = None) -> None:
        self.x, self.mean, self.std, self.penalty, self.y, self.weight = x, mean, std, penalty, y, weight
        self.config = config
        self.groups: list[str | None] = [None] * len(y) if groups is None else list(groups)
        if len(self.groups) != len(y):
            raise ValueError(f"groups: {len(self.groups)} family labels for {len(y)} labels")
        self.same = _same_family(self.groups, self.groups)
        np.fill_diagonal(self.same, 1.0)  # a crystal without a family label is a family of its own
        self.r = y - mean  # (n,) residuals of the base
        d2 = _sqdist(x, x)
        off = d2[np.triu_indices(len(y), 1)]
        self.length_unit = float(np.sqrt(np.median(off))) if off.size and np.median(off) > 0 else 1.0
        self.d2 = d2
        self.params = {"amplitude": config.amplitude_prior, "length_scale": self.length_unit,
                       "noise": config.noise_prior, "strain_noise": config.strain_noise_prior,
                       "family": config.family_prior_std}

    def _parametric(self, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
        c = self.config
        return c.bias_prior_std**2 + (c.penalty_slope_prior_std**2) * np.outer(pa, pb)

    def _noise(self, noise: float, strain_noise: float, penalty: np.ndarray) -> np.ndarray:
        """(n,) label noise variance: σₙ² + (η·Δ)² (a strained cell may relax anywhere)."""
        return noise**2 + (strain_noise * penalty) ** 2

    def _k_train(self, amplitude: float, length: float, noise: float, strain_noise: float,
                 family: float = 0.0) -> np.ndarray:
        k = amplitude**2 * np.outer(self.std, self.std) * np.exp(-0.5 * self.d2 / length**2)
        k = k + self._parametric(self.penalty, self.penalty) + family**2 * self.same
        return k + np.diag(self._noise(noise, strain_noise, self.penalty) / self.weight)

    def _centre(self) -> np.ndarray:
        c = self.config
        centre = [math.log(c.amplitude_prior), 0.0, math.log(c.noise_prior)]
        centre += [math.log(c.strain_noise_prior)] if c.strain_noise_prior > 0 else []
        return np.array(centre + ([math.log(c.family_prior_std)] if c.family_prior_std > 0 else []))

    def _unpack(self, theta: np.ndarray) -> tuple[float, float, float, float, float]:
        """(s, ℓ, σₙ, η, c) from the logs being fitted (η and c are 0 where their prior is off)."""
        v = [float(t) for t in np.exp(theta)]
        rest = v[3:]
        eta = rest.pop(0) if self.config.strain_noise_prior > 0 else 0.0
        family = rest.pop(0) if self.config.family_prior_std > 0 else 0.0
        return v[0], v[1] * self.length_unit, v[2], eta, family

    def _neg_log_posterior(self, theta: np.ndarray) -> float:
        k = self._k_train(*self._unpack(theta))
        try:
            chol = cholesky(k + 1e-10 * np.eye(len(k)), lower=True)
        except np.linalg.LinAlgError:
            return 1e10
        alpha = cho_solve((chol, True), self.r)
        nll = 0.5 * float(self.r @ alpha) + float(np.log(np.diag(chol)).sum())
        return nll + 0.5 * float(((theta - self._centre()) ** 2).sum()) / self.config.log_prior_width**2

    def optimise(self) -> None:
        """MAP estimate of (s, ℓ, σₙ[, η]) from a few starts (L-BFGS-B on the logs, within ±4 prior widths and
        the configured bounds on s and ℓ)."""
        from scipy.optimize import minimize

        c = self.config
        centre = self._centre()
        w = 4.0 * c.log_prior_width
        bounds = [(float(v - w), float(v + w)) for v in centre]
        bounds[0] = (max(bounds[0][0], math.log(c.amplitude_min)), max(bounds[0][1], math.log(c.amplitude_min)))
        bounds[1] = (min(bounds[1][0], math.log(c.max_length_scale)), math.log(c.max_length_scale))
        lo, hi = np.array(bounds).T
        centre = np.clip(centre, lo, hi)
        best: tuple[float, np.ndarray] = (self._neg_log_posterior(centre), centre)
        for shift in ([0.0] * 5, [1.0, -0.5, 0.0, 1.0, 1.0], [-1.0, 0.5, 1.0, -1.0, -1.0]):
            start = np.clip(centre + np.array(shift[: len(centre)]), lo, hi)
            res = minimize(self._neg_log_posterior, start, method="L-BFGS-B", bounds=bounds)
            if np.isfinite(res.fun) and res.fun < best[0]:
                best = (float(res.fun), np.asarray(res.x))
        a, ell, nz, eta, family = self._unpack(best[1])
        self.params = {"amplitude": a, "length_scale": ell, "noise": nz, "strain_noise": eta, "family": family}

    def factorise(self) -> None:
        p = self.params
        k = self._k_train(p["amplitude"], p["length_scale"], p["noise"], p.get("strain_noise", 0.0),
                          p.get("family", 0.0))
        self.chol = cholesky(k + 1e-10 * np.eye(len(k)), lower=True)
        self.alpha = cho_solve((self.chol, True), self.r)

    def loo(self) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out (error of the predicted residual, predictive std) of every label, each (n,)."""
        inv = cho_solve((self.chol, True), np.eye(len(self.r)))
        diag = np.diag(inv)
        return self.alpha / diag, 1.0 / np.sqrt(diag)  # rᵢ − μ₋ᵢ = αᵢ / [K⁻¹]ᵢᵢ, var₋ᵢ = 1 / [K⁻¹]ᵢᵢ

    def predict(self, x: np.ndarray, std: np.ndarray, penalty: np.ndarray, groups: Groups | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Residual mean (n,) and predictive variance of a new label (n,), before the σ scale. ``groups``: the
        crystals' families (None: none has one)."""
        p = self.params
        family = p.get("family", 0.0)
        ks = (p["amplitude"] ** 2 * np.outer(std, self.std) * np.exp(-0.5 * _sqdist(x, self.x) / p["length_scale"] ** 2)
              + self._parametric(penalty, self.penalty))
        if family > 0 and groups is not None:
            ks = ks + family**2 * _same_family(groups, self.groups)
        mu = ks @ self.alpha
        v = solve_triangular(self.chol, ks.T, lower=True)
        prior = p["amplitude"] ** 2 * std**2 + self.config.bias_prior_std**2 + self.config.penalty_slope_prior_std**2 * penalty**2
        prior = prior + family**2  # every crystal has a family offset; unlabelled families keep its prior
        var = np.maximum(prior - (v * v).sum(0), 0.0) + self._noise(p["noise"], p.get("strain_noise", 0.0), penalty)
        return mu, var


class ResidualProxy:
    """:class:`EnsembleProxy` + a GP on its residuals at the campaign's oracle labels (module docstring).

    >>> proxy = ResidualProxy.fit(base, labels, target="formation_energy_per_atom")
    >>> post = proxy.posterior(crystals)      # post.mean, post.variance: (n, m) like base.posterior
    >>> proxy.save(directory); load_proxy(directory)
    """

    def __init__(self, base: EnsembleProxy, *, target: str, config: ResidualConfig, gp: _GP | None,
                 scale: float = 1.0, info: dict[str, Any] | None = None) -> None:
        if target not in base.target_names:
            raise ValueError(f"target {target!r} is not one of the base proxy's {base.target_names}")
        self.base = base
        self.target = target
        self.config = config
        self.gp = gp
        self.scale = scale
        self.info: dict[str, Any] = info or {}

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.base.target_names

    @property
    def n_labels(self) -> int:
        return 0 if self.gp is None else len(self.gp.y)

    # ---------------------------------------------------------------------- fit
    @classmethod
    def fit(cls, base: EnsembleProxy, data: LabeledSet, *, target: str, weights: np.ndarray | None = None,
            config: ResidualConfig | None = None, groups: Groups | None = None) -> ResidualProxy:
        """Fit the residual GP of ``target`` on ``data``: the campaign's oracle labels only (not the seed rows
        the base was fitted on). ``weights``: (n,) relative label weights ≥ 0 (noise variance σₙ²/w; 0 drops a
        label). ``groups``: (n,) family labels of the rows (used when ``config.family_prior_std`` > 0; None: none).
        Rows with a non-finite label are dropped. No usable label: the proxy predicts as the base."""
        config = config or ResidualConfig()
        if target not in base.target_names:
            raise ValueError(f"target {target!r} is not one of the base proxy's {base.target_names}")
        if len(data) and target not in data.target_names:
            raise ValueError(f"the labels have no column {target!r} (they have {data.target_names})")
        y = data.select(target).targets[:, 0] if len(data) else np.zeros(0)
        w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
        if w.shape != y.shape or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be {len(y)} finite non-negative numbers")
        if groups is not None and len(groups) != len(y):
            raise ValueError(f"groups: {len(groups)} family labels for {len(y)} rows")
        keep = np.flatnonzero(np.isfinite(y) & (w > 0))
        if keep.size == 0:
            return cls(base, target=target, config=config, gp=None, info={"n_labels": 0})
        crystals = [data.crystals[i] for i in keep]
        mean, std, penalty = _base_column(base, crystals, target)
        gp = _GP(x=chemistry_features(base, crystals, config.features), mean=mean, std=std, penalty=penalty,
                 y=y[keep].astype(float), weight=w[keep] / w[keep].mean(), config=config,
                 groups=None if groups is None else [groups[int(i)] for i in keep])
        proxy = cls(base, target=target, config=config, gp=gp)
        with threadpool_limits(limits=1, user_api="blas"):  # n ≤ a few hundred: threads only contend
            gp.optimise()
            gp.factorise()
            proxy._calibrate()
        return proxy

    def _calibrate(self) -> None:
        gp = self.gp
        assert gp is not None
        err, sd = gp.loo()
        c = self.config
        scale = 1.0
        if c.calibrate and len(err) >= c.min_calibration_labels:
            lo, hi = c.calibration_bounds
            scale = float(np.clip(calibration_scale(err, sd, level=c.calibration_level), lo, hi))
        self.scale = scale
        self.info = {"n_labels": len(err), **{k: round(v, 6) for k, v in gp.params.items()},
                     "sigma_scale": round(scale, 6), "loo_mae": float(np.abs(err).mean()),
                     "base_mae": float(np.abs(gp.r).mean()), "base_bias": float(np.mean(-gp.r))}

    # ---------------------------------------------------------------- posterior
    def posterior(self, crystals: Sequence[Crystal], *, groups: Groups | None = None) -> Posterior:
        """The base posterior with the target column corrected: mean + GP residual mean, variance from the GP
        (prior = base variance · s² + parametric terms, shrinking near labels) · σ scale². (n, m) float32.
        ``groups``: the crystals' family labels (see :class:`ResidualConfig`'s ``family_prior_std``)."""
        post = self.base.posterior(crystals)
        if self.gp is None or len(crystals) == 0:
            return post
        j = self.target_names.index(self.target)
        m = post.mean[:, j].double().numpy()
        sd = post.std[:, j].double().numpy()
        pen = _penalty(post, j, len(crystals))
        x = chemistry_features(self.base, crystals, self.config.features)
        with threadpool_limits(limits=1, user_api="blas"):
            mu, var = self.gp.predict(x, sd, pen, groups)
            if pen.any():
                var = _strain_capped_variance(self.gp, x, sd, pen, mu, var, groups)
        mean, variance = post.mean.clone(), post.variance.clone()
        mean[:, j] = torch.from_numpy(m + mu).float()
        variance[:, j] = torch.from_numpy(var * self.scale**2).float()
        return Posterior(mean, variance, post.target_names, penalty=post.penalty, penalized=post.penalized)

    # ---------------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> Path:
        """Write the base (``config.json``, ``weights.pt``) and ``residual.json`` into ``directory``."""
        directory = self.base.save(directory)
        gp = self.gp
        blob: dict[str, Any] = {
            "format_version": RESIDUAL_FORMAT_VERSION, "kind": "residual", "target": self.target,
            "config": self.config.model_dump(mode="json"), "scale": self.scale, "info": self.info,
            "labels": None if gp is None else {
                "x": gp.x.tolist(), "mean": gp.mean.tolist(), "std": gp.std.tolist(), "penalty": gp.penalty.tolist(),
                "y": gp.y.tolist(), "weight": gp.weight.tolist(), "params": gp.params, "groups": gp.groups},
        }
        (directory / RESIDUAL_FILE).write_text(json.dumps(blob))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ResidualProxy | EnsembleProxy:
        """Load what :meth:`save` wrote; a plain :class:`EnsembleProxy` directory loads as that."""
        return load_proxy(directory)


def load_proxy(directory: str | Path) -> ResidualProxy | EnsembleProxy:
    """The proxy saved in ``directory``: a :class:`ResidualProxy` when it has ``residual.json``, else the ensemble."""
    directory = Path(directory)
    base = EnsembleProxy.load(directory)
    path = directory / RESIDUAL_FILE
    if not path.exists():
        return base
    try:
        blob = json.loads(path.read_text())
        if blob.get("format_version") != RESIDUAL_FORMAT_VERSION:
            raise ValueError(f"format {blob.get('format_version')} is not {RESIDUAL_FORMAT_VERSION}")
        config = ResidualConfig(**blob["config"])
        labels = blob["labels"]
        gp = None
        if labels is not None:
            arr = {k: np.asarray(labels[k], dtype=float) for k in ("mean", "std", "penalty", "y", "weight")}
            x = np.asarray(labels["x"], dtype=float).reshape(len(arr["y"]), -1)
            gp = _GP(x=x, config=config, groups=labels.get("groups"), **arr)
            gp.params = {k: float(v) for k, v in labels["params"].items()}
            with threadpool_limits(limits=1, user_api="blas"):
                gp.factorise()
        return ResidualProxy(base, target=blob["target"], config=config, gp=gp, scale=float(blob["scale"]),
                             info=blob.get("info", {}))
    except Exception as exc:
        raise ValueError(f"{path}: damaged residual model ({type(exc).__name__}: {exc}); fit it again") from None


def _strain_capped_variance(gp: _GP, x: np.ndarray, std: np.ndarray, penalty: np.ndarray, mu: np.ndarray,
                            var: np.ndarray, groups: Groups | None = None) -> np.ndarray:
    """(n,) predictive variance whose strain part is at most the strain energy the mean carries.

    The Δ terms (slope prior p²Δ², label noise η²Δ²) give a strained cell a std of ≈ √(p² + η²)·Δ ≥ Δ while its
    mean carries (1 + slope)·Δ: an optimistic score (UCB, κ = 1) then *rises* with the strain, and the loop's
    generator, retrained on it, learned to propose cells 20–80 eV/atom above their relaxed energy (σ 20–75
    eV/atom, every one failed or invalid at the oracle; S.U.N. benchmark rounds 1–2). Relaxation can remove the
    strain, not go below the unstrained energy: with ``v0`` and ``m0`` the variance and residual mean of the same
    crystal without strain (Δ = 0) and ``s = max(Δ + μ − m0, 0)`` the strain carried by the mean, the variance
    is ``v0 + min(v − v0, s²)``, so ``mean − σ`` never falls below the unstrained ``mean − σ``."""
    mu0, var0 = gp.predict(x, std, np.zeros_like(penalty), groups)
    carried = np.maximum(penalty + mu - mu0, 0.0)
    return var0 + np.minimum(np.maximum(var - var0, 0.0), carried**2)


def _penalty(post: Posterior, j: int, n: int) -> np.ndarray:
    """(n,) lattice-prior strain energy carried by column ``j``'s mean (zeros when it carries none)."""
    carried = post.penalized[j] if j < len(post.penalized) else False
    if post.penalty is None or not carried:
        return np.zeros(n)
    return post.penalty.double().numpy()


def _base_column(base: EnsembleProxy, crystals: Sequence[Crystal], target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    post = base.posterior(crystals)
    j = base.target_names.index(target)
    return post.mean[:, j].double().numpy(), post.std[:, j].double().numpy(), _penalty(post, j, len(crystals))
