"""Acquisition functions on known posteriors."""

from __future__ import annotations

import math

import pytest
import torch

from discovery.proxy import (
    Posterior,
    expected_improvement,
    greedy,
    lcb,
    log_reward_from_acquisition,
    make_acquisition,
    target_value,
    ucb,
)


@pytest.fixture
def post() -> Posterior:
    mean = torch.tensor([[0.0, 1.0], [1.0, 1.34], [2.0, 3.0]])
    variance = torch.tensor([[4.0, 0.25], [1.0, 0.0], [0.0, 1.0]])
    return Posterior(mean, variance, ("e_form", "band_gap"))


def test_max_sd_caps_the_exploration_bonus(post):
    # σ of the first column: 2, 1, 0; capped at 0.5 the bonus of the far-away first crystal shrinks to κ·0.5
    assert ucb(post, kappa=1.0, max_sd=0.5).tolist() == [0.5, 1.5, 2.0]
    assert lcb(post, kappa=1.0, max_sd=0.5).tolist() == [0.5, -0.5, -2.0]
    assert ucb(post, kappa=1.0, max_sd=10.0).tolist() == ucb(post, kappa=1.0).tolist()
    assert make_acquisition("ucb", kappa=1.0, max_sd=0.5)(post).tolist() == [0.5, 1.5, 2.0]
    capped = expected_improvement(post, best=0.0, max_sd=0.5)
    assert torch.all(capped <= expected_improvement(post, best=0.0) + 1e-6)
    assert target_value(post, value=1.34, target=1, kappa=1.0, max_sd=0.1).tolist() == pytest.approx(
        [-(1.0 - 1.34) ** 2 + 0.1, 0.0, -(3.0 - 1.34) ** 2 + 0.1], abs=1e-6)


def test_posterior_validates_shapes():
    with pytest.raises(ValueError):
        Posterior(torch.zeros(3, 1), torch.zeros(3, 2))
    with pytest.raises(ValueError):
        Posterior(torch.zeros(3), torch.zeros(3))


def test_greedy_and_bounds(post):
    assert greedy(post).tolist() == [0.0, 1.0, 2.0]
    assert greedy(post, maximize=False).tolist() == [-0.0, -1.0, -2.0]
    assert ucb(post, kappa=1.0).tolist() == [2.0, 2.0, 2.0]
    # lower confidence bound for minimisation, as a score: −(μ − κσ)
    assert lcb(post, kappa=2.0).tolist() == [4.0, 1.0, -2.0]
    assert ucb(post, kappa=0.5, target="band_gap").tolist() == pytest.approx([1.25, 1.34, 3.5])


def test_expected_improvement_known_values(post):
    ei = expected_improvement(post, best=0.0)
    # μ=0, σ=2: EI = σ·φ(0) = 2/√(2π); μ=1, σ=1: 1·Φ(1) + φ(1); σ=0: max(μ − best, 0) = 2
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    assert ei[0].item() == pytest.approx(2 * phi(0), rel=1e-5)
    assert ei[1].item() == pytest.approx(0.8413447 + phi(1), rel=1e-5)
    assert ei[2].item() == pytest.approx(2.0, rel=1e-5)
    ei_min = expected_improvement(post, best=0.0, maximize=False)
    assert ei_min[0].item() == pytest.approx(2 * phi(0), rel=1e-5)
    assert ei_min[2].item() == pytest.approx(0.0, abs=1e-6)
    assert (expected_improvement(post, best=10.0) >= 0).all()


def test_target_value_peaks_at_the_target(post):
    scores = target_value(post, value=1.34, target="band_gap")
    assert scores.argmax().item() == 1 and scores[1].item() == pytest.approx(0.0)
    assert scores[0].item() == pytest.approx(-(0.34**2))
    assert target_value(post, value=1.34, target=1, kappa=1.0)[2].item() == pytest.approx(-(1.66**2) + 1.0)


def test_log_reward_matches_paper_rewards(post):
    # paper: R = exp(-8 E) for formation energy, exp(-8 (Eg - 1.34)^2) for band gap
    fe = log_reward_from_acquisition(greedy(post, maximize=False), temperature=1 / 8)
    assert fe.tolist() == pytest.approx([0.0, -8.0, -16.0])
    bg = log_reward_from_acquisition(target_value(post, value=1.34, target="band_gap"), temperature=0.125)
    assert bg.exp()[0].item() == pytest.approx(math.exp(-8 * 0.34**2), rel=1e-5)
    assert log_reward_from_acquisition(torch.tensor([-1e6]), temperature=1.0).item() == -100.0
    with pytest.raises(ValueError):
        log_reward_from_acquisition(torch.zeros(2), temperature=0.0)


def test_make_acquisition_by_name(post):
    assert torch.equal(make_acquisition("lcb", kappa=2.0)(post), lcb(post, kappa=2.0))
    assert torch.equal(make_acquisition("expected_improvement", best=0.5)(post), expected_improvement(post, best=0.5))
    with pytest.raises(ValueError, match="best"):
        make_acquisition("expected_improvement")
    with pytest.raises(ValueError, match="value"):
        make_acquisition("target_value")
