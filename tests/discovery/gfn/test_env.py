"""Invariants of the environment on real rollouts: masks, forward/backward consistency, finite log-probs."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from discovery.gfn import CrystalGFN
from discovery.gfn.env import OFF_COMP
from discovery.gfn.replay import forced_rollout
from discovery.gfn.sampler import rollout
from discovery.gfn.states import State, backward, backward_action, backward_mask, forward, forward_mask
from discovery.gfn.validity import lattice_ok, smact_ok
from discovery.symmetry import is_wyckoff_compatible


def _replay_states(gfn: CrystalGFN, n: int) -> tuple[list[list[State]], object]:
    env = gfn.env
    ro = rollout(env, gfn.forward_policy, n, epsilon=0.3)
    paths: list[list[State]] = [[State()] for _ in range(n)]
    for row in range(len(ro.action)):
        t, a = int(ro.traj[row]), int(ro.action[row])
        state = paths[t][-1]
        if a >= 0:
            assert np.array_equal(forward_mask(env, state), ro.mask[row].numpy()), "batched and scalar masks differ"
            paths[t].append(forward(env, state, a))
        else:
            paths[t].append(forward(env, state, 0, u=ro.u[row].numpy()))
    return paths, ro


def test_masks_never_empty_before_the_end(small_gfn: CrystalGFN) -> None:
    ro = rollout(small_gfn.env, small_gfn.forward_policy, 200, epsilon=0.5)
    disc = ro.action >= 0
    assert bool(ro.mask[disc].any(dim=1).all())
    assert bool(ro.mask[disc].gather(1, ro.action[disc][:, None]).all())  # taken actions were allowed


def test_forward_then_backward_returns_the_parent(small_gfn: CrystalGFN) -> None:
    env = small_gfn.env
    paths, _ = _replay_states(small_gfn, 100)
    for path in paths:
        assert path[-1].stage == "done"
        for parent, child in itertools.pairwise(path):
            b = backward_action(parent, child)
            if b is not None:
                assert backward_mask(env, child)[b]
            assert backward(env, child, b) == parent
        # composition added in canonical order, so every prefix had a single parent
        els = [e for e, _ in path[-1].counts]
        assert els == sorted(els, key=lambda e: list(env.elem_map).index(e))


def test_terminal_crystals_satisfy_hard_constraints(small_gfn: CrystalGFN) -> None:
    crystals = small_gfn.sample(300, seed=3)
    assert all(smact_ok(c) for c in crystals)
    assert all(is_wyckoff_compatible(c.space_group, c.counts.values()) for c in crystals)
    assert all(lattice_ok(c) for c in crystals)
    lo, hi = small_gfn.space.length_range
    assert all(lo <= x <= hi for c in crystals for x in (c.a, c.b, c.c))


def test_log_probabilities_are_finite(small_gfn: CrystalGFN) -> None:
    ro = rollout(small_gfn.env, small_gfn.forward_policy, 64, epsilon=0.2)
    losses = small_gfn.tb_loss(ro, torch.zeros(64))
    assert torch.isfinite(losses.delta).all()
    assert torch.isfinite(losses.loss)


def test_forced_rollout_replays_crystals(small_gfn: CrystalGFN) -> None:
    crystals = small_gfn.sample(50, seed=4)
    ro = forced_rollout(small_gfn.env, crystals)
    for a, b in zip(crystals, ro.crystals, strict=True):
        assert a.space_group == b.space_group and a.counts == b.counts
        assert np.allclose(a.lattice, b.lattice, rtol=1e-5)
    assert bool((ro.action[ro.action >= OFF_COMP] >= OFF_COMP).all())
