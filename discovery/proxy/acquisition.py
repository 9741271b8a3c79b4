"""Acquisition functions on a :class:`Posterior`: (n,) scores, higher is better.

Direction: ``maximize=False`` for targets to minimise (formation energy, energy above hull); the
score is then the negated objective so that "higher is better" always holds.

GFlowNet rewards: ``log_reward_from_acquisition(scores, temperature=T)`` = scores / T, so that
R = exp(score / T). The paper's rewards are special cases with T = 1/8:
formation energy R = exp(−8·E) is ``greedy(post, maximize=False)``; band gap
R = exp(−8·(E_g − 1.34)²) is ``target_value(post, value=1.34)``.

Lattice prior: a posterior may carry the strain energy ΔE (eV/atom) of each crystal's cell
(:attr:`Posterior.penalty`). Energy means already include it; every other score here loses ΔE, so
with T = 1/8 a band-gap reward becomes exp(−8·(E_g − 1.34)² − 8·ΔE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from discovery.proxy.base import Posterior

Acquisition = Callable[[Posterior], Tensor]
AcquisitionName = Literal["greedy", "mean", "ucb", "lcb", "expected_improvement", "target_value"]


def _col(post: Posterior, target: int | str, max_sd: float | None = None) -> tuple[Tensor, Tensor]:
    """(μ, σ) of ``target``, σ capped at ``max_sd`` (the target's units) when given."""
    mu, sd = post.column(target)
    return (mu, sd) if max_sd is None else (mu, sd.clamp_max(max_sd))


def greedy(post: Posterior, *, target: int | str = 0, maximize: bool = True) -> Tensor:
    """The predicted mean (negated when minimising)."""
    mu, _ = _col(post, target)
    return (mu if maximize else -mu) - post.score_penalty(target)


mean = greedy


def ucb(post: Posterior, *, kappa: float = 2.0, target: int | str = 0, maximize: bool = True,
        max_sd: float | None = None) -> Tensor:
    """Optimistic bound: μ + κσ when maximising; −(μ − κσ) when minimising; σ capped at ``max_sd`` (the
    exploration bonus of a crystal far from the proxy's data is at most κ·max_sd)."""
    mu, sd = _col(post, target, max_sd)
    return (mu + kappa * sd if maximize else -(mu - kappa * sd)) - post.score_penalty(target)


def lcb(post: Posterior, *, kappa: float = 2.0, target: int | str = 0, max_sd: float | None = None) -> Tensor:
    """Lower confidence bound for a target to *minimise*, as a score: −(μ − κσ) (higher is better)."""
    return ucb(post, kappa=kappa, target=target, maximize=False, max_sd=max_sd)


def expected_improvement(post: Posterior, *, best: float, target: int | str = 0, maximize: bool = True,
                         xi: float = 0.0, max_sd: float | None = None) -> Tensor:
    """E[max(0, y − best − ξ)] (or E[max(0, best − ξ − y)] when minimising) under N(μ, σ²), σ capped at
    ``max_sd``; ≥ 0."""
    mu, sd = _col(post, target, max_sd)
    sd = sd.clamp_min(1e-9)
    gain = (mu - best - xi) if maximize else (best - xi - mu)
    z = gain / sd
    normal = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    return (gain * normal.cdf(z) + sd * normal.log_prob(z).exp()).clamp_min(0.0) - post.score_penalty(target)


def target_value(post: Posterior, *, value: float, target: int | str = 0, kappa: float = 0.0,
                 max_sd: float | None = None) -> Tensor:
    """−(μ − value)² + κσ: closeness to a target value (e.g. band gap 1.34 eV), optionally optimistic (σ capped
    at ``max_sd``)."""
    mu, sd = _col(post, target, max_sd)
    return -((mu - value) ** 2) + kappa * sd - post.score_penalty(target)


def log_reward_from_acquisition(scores: Tensor, *, temperature: float = 1.0, min_log_reward: float = -100.0) -> Tensor:
    """GFlowNet log-rewards log R = score / T, floored at ``min_log_reward`` (keeps R > 0). Shape (n,)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return (scores / temperature).clamp_min(min_log_reward)


def make_acquisition(name: AcquisitionName, *, target: int | str = 0, maximize: bool = True, kappa: float = 2.0,
                     best: float | None = None, value: float | None = None, xi: float = 0.0,
                     max_sd: float | None = None) -> Acquisition:
    """An acquisition function by name, with its options bound (for configs); ``max_sd`` caps σ."""
    if name in ("greedy", "mean"):
        return lambda p: greedy(p, target=target, maximize=maximize)
    if name == "ucb":
        return lambda p: ucb(p, kappa=kappa, target=target, maximize=maximize, max_sd=max_sd)
    if name == "lcb":
        return lambda p: lcb(p, kappa=kappa, target=target, max_sd=max_sd)
    if name == "expected_improvement":
        if best is None:
            raise ValueError("expected_improvement needs `best` (the best label so far)")
        b = best
        return lambda p: expected_improvement(p, best=b, target=target, maximize=maximize, xi=xi, max_sd=max_sd)
    if name == "target_value":
        if value is None:
            raise ValueError("target_value needs `value` (e.g. 1.34 for a band gap in eV)")
        v = value
        return lambda p: target_value(p, value=v, target=target, kappa=kappa, max_sd=max_sd)
    raise ValueError(f"unknown acquisition {name!r}")
