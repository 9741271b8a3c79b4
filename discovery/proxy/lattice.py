"""A physical prior on the cell: equilibrium volume per atom plus a universal strain-energy curve.

A proxy trained on MP-20 sees crystals only at their equilibrium volume, so its prediction barely
moves when a sampled cell is blown up to 1,000 Å³/atom (isolated atoms). This module supplies what
the data cannot teach it:

* :class:`VolumeModel` — ln V₀ (Å³/atom) of a composition as a Bayesian linear model on atomic
  fractions (one effective ln-volume per element, ridge prior towards the element's covalent-sphere
  volume), fitted on MP-20 train. Its predictive standard deviation grows for elements the data
  rarely holds.
* :class:`StrainModel` — the universal binding-energy relation (Rose, Smith, Guinea & Ferrante,
  Phys. Rev. B 29, 2963 (1984)) per atom, ΔE(V) = E_c·[1 − (1 + a)·e^(−a)] with
  a = ((V/V₀)^(1/3) − 1)/λ. λ is one dimensionless length (fitted: 0.217, spread 0.18–0.25 over
  MP-20 structures) and E_c (eV/atom, the energy released by binding; 2.6–6.8 over MP-20) is an
  additive per-element model. Fitted on CHGNet single points of MP-20 train cells scaled from
  0.7× to 3× their volume (``matloop proxy fit-lattice-prior``).
* :class:`LatticePrior` — both together: ``strain(crystals)`` gives the strain energy ΔE (eV/atom)
  of each crystal's cell relative to its predicted equilibrium volume and its variance. The cell's
  shape counts too: an atom whose own periodic image is closer than ``image_ratio``·V₀^(1/3) (MP-20
  train's 1st percentile) is a compressed bond, priced by the same curve (a needle cell with
  b = 1.2 Å and c = 60 Å can have the right volume and still be no crystal). Volumes
  within ``tolerance`` predictive standard deviations of V₀ cost nothing (the volume model's own
  error must not bias predictions for real crystals); beyond that band ΔE follows the UBER curve
  from the band's edge. The variance grows with the strain (E_c's uncertainty times the curve,
  plus V₀'s uncertainty times the curve's slope), so σ grows away from the data.

Pure numpy; parameters are saved as one JSON file (``discovery/data/lattice_prior.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Element

from discovery.crystal import Crystal, cell_volume

ENERGY_TARGETS = frozenset({"formation_energy_per_atom", "e_above_hull", "energy_per_atom",
                            "corrected_energy_per_atom"})
"""Targets in eV/atom whose value the strain energy adds to directly."""
DEFAULT_LATTICE_PRIOR_PATH = Path(__file__).resolve().parents[1] / "data" / "lattice_prior.json"
FORMAT_VERSION = 1


def _fractions(crystals: Sequence[Crystal], elements: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) atomic fractions over ``elements`` and (n,) share of atoms of elements outside it."""
    idx = {e: i for i, e in enumerate(elements)}
    x = np.zeros((len(crystals), len(elements)))
    unknown = np.zeros(len(crystals))
    for r, c in enumerate(crystals):
        n = float(sum(c.counts.values()))
        for el, q in c.counts.items():
            if el in idx:
                x[r, idx[el]] += q / n
            else:
                unknown[r] += q / n
    return x, unknown


def volumes_per_atom(crystals: Sequence[Crystal]) -> np.ndarray:
    """(n,) cell volume per atom, Å³/atom (NaN for an invalid cell)."""
    if not crystals:
        return np.zeros(0)
    vol = cell_volume(np.array([c.lattice for c in crystals], dtype=float))
    return np.asarray(vol / np.array([sum(c.counts.values()) for c in crystals], dtype=float))


def shortest_translation(crystals: Sequence[Crystal]) -> np.ndarray:
    """(n,) shortest of the cell's translations a, b, c, |a ± b|, |a ± c|, |b ± c| (Å): the distance from
    every atom to its own nearest periodic image (an upper bound on it for very oblique cells)."""
    lat = np.array([c.lattice for c in crystals], dtype=float).reshape(-1, 6)
    a, b, c = lat[:, 0], lat[:, 1], lat[:, 2]
    ca, cb, cg = (np.cos(np.radians(lat[:, i])) for i in (3, 4, 5))
    pairs = [(a, b, cg), (a, c, cb), (b, c, ca)]
    cands = [a, b, c] + [np.sqrt(np.maximum(x**2 + y**2 - 2 * s * x * y * cos, 0.0)) for x, y, cos in pairs
                         for s in (1.0, -1.0)]
    return np.asarray(np.min(np.stack(cands, axis=1), axis=1))


def fit_image_ratio(crystals: Sequence[Crystal], *, quantile: float = 0.01) -> float:
    """The ``quantile`` of shortest translation / (volume per atom)^(1/3) over equilibrium crystals (MP-20 train:
    1.07 at the 1st percentile, 2.0 at the median)."""
    ratio = shortest_translation(crystals) / np.cbrt(volumes_per_atom(crystals))
    return float(np.nanquantile(ratio, quantile))


def sphere_ln_volume(element: str) -> float:
    """ln of the sphere volume (Å³) of an element's atomic radius (the ridge prior's centre)."""
    r = Element(element).atomic_radius
    return math.log(4.0 / 3.0 * math.pi * float(r if r is not None else 1.5) ** 3)


@dataclass
class VolumeModel:
    """ln V₀ = Σᵢ xᵢ·wᵢ (xᵢ atomic fractions), Gaussian posterior over w; units Å³/atom.

    ``cov`` is the posterior covariance of w (without the noise), ``noise_std`` the residual standard
    deviation of ln V on the training data. Elements outside ``elements`` fall back to their prior
    centre with the prior's standard deviation."""

    elements: list[str]
    weights: list[float]
    cov: list[list[float]]
    noise_std: float
    prior_std: float

    @classmethod
    def fit(cls, crystals: Sequence[Crystal], *, prior_std: float = 1.0, min_noise_std: float = 0.05) -> VolumeModel:
        """Bayesian ridge on ln(volume per atom) of ``crystals`` (equilibrium cells, e.g. MP-20 train)."""
        y = np.log(volumes_per_atom(crystals))
        ok = np.isfinite(y)
        crystals = [c for c, k in zip(crystals, ok, strict=True) if k]
        y = y[ok]
        elements = sorted({e for c in crystals for e in c.counts})
        x, _ = _fractions(crystals, elements)
        w0 = np.array([sphere_ln_volume(e) for e in elements])
        noise = max(min_noise_std, 0.15)
        for _ in range(3):  # empirical Bayes on the noise level: refit with the residual's scale
            precision = x.T @ x / noise**2 + np.eye(len(elements)) / prior_std**2
            cov = np.linalg.inv(precision)
            w = cov @ (x.T @ y / noise**2 + w0 / prior_std**2)
            noise = max(min_noise_std, float(np.std(y - x @ w)))
        return cls(elements=elements, weights=w.tolist(), cov=cov.tolist(), noise_std=noise, prior_std=prior_std)

    def predict(self, crystals: Sequence[Crystal]) -> tuple[np.ndarray, np.ndarray]:
        """(n,) mean and (n,) predictive standard deviation of ln V₀ (V₀ in Å³/atom)."""
        x, unknown = _fractions(crystals, self.elements)
        w, cov = np.asarray(self.weights), np.asarray(self.cov)
        mean = x @ w
        var = np.einsum("ni,ij,nj->n", x, cov, x) + self.noise_std**2
        if unknown.any():
            for r, c in enumerate(crystals):
                n = float(sum(c.counts.values()))
                for el, q in c.counts.items():
                    if el not in self.elements:
                        mean[r] += q / n * sphere_ln_volume(el)
                        var[r] += (q / n * self.prior_std) ** 2
        return mean, np.sqrt(var)


def uber(a: np.ndarray) -> np.ndarray:
    """Universal binding curve f(a) = 1 − (1 + a)·e^(−a): 0 at a = 0, → 1 at separation, steep for a < 0
    (a is clipped at −3, f = 41: any harder compression is equally impossible)."""
    a = np.clip(a, -3.0, 60.0)
    return np.asarray(1.0 - (1.0 + a) * np.exp(-a))


def uber_slope(a: np.ndarray) -> np.ndarray:
    """df/da = a·e^(−a)."""
    a = np.clip(a, -3.0, 60.0)
    return np.asarray(a * np.exp(-a))


@dataclass
class StrainModel:
    """ΔE(V) = E_c·f(a), a = ((V/V₀)^(1/3) − 1)/λ; E_c (eV/atom) = Σᵢ xᵢ·cᵢ, clipped at ``min_ec``."""

    elements: list[str]
    ec_weights: list[float]
    ec_default: float
    ec_std: float
    lam: float
    min_ec: float = 0.5

    def cohesion(self, crystals: Sequence[Crystal]) -> np.ndarray:
        """(n,) E_c in eV/atom (elements outside the fit take ``ec_default``)."""
        x, unknown = _fractions(crystals, self.elements)
        return np.maximum(self.min_ec, x @ np.asarray(self.ec_weights) + unknown * self.ec_default)

    @staticmethod
    def fit(crystals: Sequence[Crystal], scales: np.ndarray, energies: np.ndarray, *, ridge: float = 0.05,
            ) -> StrainModel:
        """Fit λ and the E_c model to single-point energies.

        ``crystals`` (n) are equilibrium cells; ``scales`` (s,) volume factors (1.0 must be among
        them); ``energies`` (n, s) energies per atom (eV/atom, NaN where the model could not be
        evaluated) of each crystal's structure with its volume scaled by each factor."""
        from scipy.optimize import least_squares

        scales = np.asarray(scales, dtype=float)
        e = np.asarray(energies, dtype=float)
        i1 = int(np.argmin(np.abs(scales - 1.0)))
        d = e - e[:, [i1]]
        strain = np.broadcast_to(np.cbrt(scales) - 1.0, d.shape)
        ok = np.isfinite(d) & (np.abs(strain) > 1e-9)

        def per_structure_ec(lam: float) -> np.ndarray:
            f = uber(strain / lam)
            num = np.where(ok, f * d, 0.0).sum(1)
            den = np.where(ok, f * f, 0.0).sum(1)
            return num / np.maximum(den, 1e-12)

        def residual(p: np.ndarray) -> np.ndarray:
            ec = per_structure_ec(float(p[0]))
            return np.asarray((ec[:, None] * uber(strain / p[0]) - d)[ok])

        lam = float(least_squares(residual, x0=[0.22], bounds=([0.05], [1.0])).x[0])
        ec = per_structure_ec(lam)
        elements = sorted({el for c in crystals for el in c.counts})
        x, _ = _fractions(crystals, elements)
        k = len(elements)
        w = np.linalg.solve(x.T @ x + ridge * np.eye(k), x.T @ ec + ridge * float(np.median(ec)) * np.ones(k))
        resid = ec - x @ w
        return StrainModel(elements=elements, ec_weights=w.tolist(), ec_default=float(np.median(ec)),
                           ec_std=float(np.std(resid)), lam=lam)


@dataclass
class LatticePrior:
    """Equilibrium volume + strain energy: ``strain(crystals)`` → (ΔE, var ΔE), each (n,), eV/atom (eV²/atom²)."""

    volume: VolumeModel
    strain_model: StrainModel
    tolerance: float = 1.5
    """Half-width, in predictive standard deviations of ln V₀, of the volume band that costs nothing."""
    image_ratio: float = 1.07
    """An atom's nearest periodic image closer than ``image_ratio``·V₀^(1/3) is a compressed bond (MP-20 train's
    1st percentile, :func:`fit_image_ratio`): a 47-atom cell with b = 1.2 Å has the right volume but is no crystal."""
    info: dict[str, Any] = field(default_factory=dict)

    def image_strain(self, crystals: Sequence[Crystal], *, ln_v0: np.ndarray | None = None) -> np.ndarray:
        """(n,) UBER argument a ≤ 0 of the shortest translation against ``image_ratio``·V₀^(1/3) (0 when longer);
        ``ln_v0``: the volume model's mean ln V₀ when the caller has it already."""
        mean = self.volume.predict(crystals)[0] if ln_v0 is None else ln_v0
        d0 = self.image_ratio * np.exp(mean / 3.0)
        a = (shortest_translation(crystals) / d0 - 1.0) / self.strain_model.lam
        return np.nan_to_num(np.minimum(a, 0.0), nan=-5.0)

    def effective_strain(self, crystals: Sequence[Crystal]) -> tuple[np.ndarray, np.ndarray]:
        """(n,) signed ln(V/V₀) beyond the tolerance band (0 inside it) and (n,) σ of ln V₀."""
        excess, sd, _ = self._strains(crystals)
        return excess, sd

    def _strains(self, crystals: Sequence[Crystal]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Volume excess and σ (as :meth:`effective_strain`) and the image strain, from one volume prediction."""
        lnv = np.log(volumes_per_atom(crystals))
        mean, sd = self.volume.predict(crystals)
        dev = lnv - mean
        band = self.tolerance * sd
        excess = np.nan_to_num(np.sign(dev) * np.maximum(np.abs(dev) - band, 0.0), nan=10.0)
        return excess, sd, self.image_strain(crystals, ln_v0=mean)

    def strain(self, crystals: Sequence[Crystal]) -> tuple[np.ndarray, np.ndarray]:
        """ΔE (n,) eV/atom ≥ 0 and its variance (n,): 0 and 0 for a cell inside the plausible band."""
        if not crystals:
            return np.zeros(0), np.zeros(0)
        excess, sd, a_image = self._strains(crystals)
        lam = self.strain_model.lam
        a = (np.exp(excess / 3.0) - 1.0) / lam
        f = uber(a)
        f_image = uber(a_image)
        ec = self.strain_model.cohesion(crystals)
        de = ec * np.maximum(f, f_image)
        # d a / d ln V₀ = −e^(excess/3) / (3λ) (only outside the band)
        slope = np.where(excess != 0, ec * uber_slope(a) * np.exp(excess / 3.0) / (3.0 * lam), 0.0)
        var = (self.strain_model.ec_std * np.maximum(f, f_image)) ** 2 + (slope * sd) ** 2
        return de, var

    def plausibility(self, crystals: Sequence[Crystal]) -> np.ndarray:
        """(n,) share of the binding lost, f(a) ∈ [0, 1) (0: a plausible cell, → 1: separated atoms)."""
        excess, _, a_image = self._strains(crystals)
        f = uber((np.exp(excess / 3.0) - 1.0) / self.strain_model.lam)
        return np.minimum(np.maximum(f, uber(a_image)), 1.0)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "volume": asdict(self.volume), "strain": asdict(self.strain_model),
                "tolerance": self.tolerance, "image_ratio": self.image_ratio, "info": self.info}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path = DEFAULT_LATTICE_PRIOR_PATH) -> LatticePrior:
        path = Path(path)
        try:
            meta = json.loads(path.read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format_version')} is not {FORMAT_VERSION}")
            return cls(volume=VolumeModel(**meta["volume"]), strain_model=StrainModel(**meta["strain"]),
                       tolerance=float(meta["tolerance"]), image_ratio=float(meta["image_ratio"]),
                       info=dict(meta.get("info", {})))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no lattice prior there; rebuild it with `matloop proxy fit-lattice-prior "
                                    f"--out {path}`") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a lattice prior file ({exc}); rebuild it with `matloop proxy "
                             f"fit-lattice-prior --out {path}`") from None


_CACHE: dict[str, LatticePrior] = {}


def default_lattice_prior(path: str | Path | None = None) -> LatticePrior:
    """The shipped prior (or the one at ``path``), loaded once per process."""
    key = str(Path(path) if path is not None else DEFAULT_LATTICE_PRIOR_PATH)
    if key not in _CACHE:
        _CACHE[key] = LatticePrior.load(key)
    return _CACHE[key]
