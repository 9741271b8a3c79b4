"""The proxy interface: ``fit`` on labelled crystals, ``posterior`` on new ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from discovery.crystal import Crystal
from discovery.datasets.base import LabeledSet


@dataclass(frozen=True)
class Posterior:
    """Predictive distribution per crystal and target (Gaussian summary).

    ``mean`` and ``variance``: float32 tensors of shape (n, m), in the targets' units (and units²).
    """

    mean: torch.Tensor
    variance: torch.Tensor
    target_names: tuple[str, ...] = ()
    penalty: torch.Tensor | None = None
    """(n,) strain energy ΔE (eV/atom ≥ 0) of each crystal's cell under the lattice prior
    (:mod:`discovery.proxy.lattice`), or None. Already added to the means of the columns flagged in
    ``penalized`` (energies); the acquisition functions subtract it from the scores of the others, so
    every reward falls as exp(−ΔE/T) when a cell leaves its plausible volume."""
    penalized: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if self.mean.shape != self.variance.shape or self.mean.ndim != 2:
            raise ValueError(f"mean {tuple(self.mean.shape)} and variance {tuple(self.variance.shape)} must both be (n, m)")
        if self.penalty is not None and tuple(self.penalty.shape) != (self.mean.shape[0],):
            raise ValueError(f"penalty {tuple(self.penalty.shape)} must be (n,) = ({self.mean.shape[0]},)")

    def score_penalty(self, target: int | str) -> torch.Tensor | float:
        """What an acquisition score of ``target`` must lose to the lattice prior: ΔE (n,) for a column
        whose mean does not carry it, else 0."""
        if self.penalty is None:
            return 0.0
        j = self.target_names.index(target) if isinstance(target, str) else target
        carried = self.penalized[j] if j < len(self.penalized) else False
        return 0.0 if carried else self.penalty

    @property
    def std(self) -> torch.Tensor:
        return self.variance.clamp_min(0).sqrt()

    def column(self, target: int | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of one target, each of shape (n,)."""
        j = self.target_names.index(target) if isinstance(target, str) else target
        return self.mean[:, j], self.std[:, j]


@dataclass
class FitReport:
    """What a fit did: sizes, time (s), training MAE, calibration scale and validation metrics per target."""

    n_train: int
    epochs: int
    seconds: float
    warm_started: bool
    target_names: tuple[str, ...]
    train_mae: dict[str, float] = field(default_factory=dict)
    calibration_scale: dict[str, float] = field(default_factory=dict)
    calibration_source: str = "none"
    validation: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train, "epochs": self.epochs, "seconds": round(self.seconds, 3),
            "warm_started": self.warm_started, "target_names": list(self.target_names),
            "train_mae": self.train_mae, "calibration_scale": self.calibration_scale,
            "calibration_source": self.calibration_source, "validation": self.validation,
        }


@runtime_checkable
class Proxy(Protocol):
    """A model of target properties with uncertainty, refitted every round on all labels so far."""

    target_names: tuple[str, ...]

    def fit(self, data: LabeledSet, *, warm_start: Any = None, validation: LabeledSet | None = None) -> FitReport:
        """Fit on ``data``; ``warm_start`` is a previous fitted proxy of the same kind (or None)."""
        ...

    def posterior(self, crystals: Sequence[Crystal]) -> Posterior:
        """Predictive mean and variance, each (n, m)."""
        ...
