"""The fast paths of training and rollouts compute what the plain formulation computes.

* trajectory balance with per-stage output heads (:meth:`CrystalGFN.tb_loss`), with the trunk
  recomputed or kept from the rollout, against a log-softmax over all ``D`` masked logits of the full
  network output, values and gradients;
* the vectorised transitions of :func:`discovery.gfn.sampler.rollout` against the one-state API's
  backward masks and actions;
* the fused Adam survives a checkpoint saved with other implementation flags.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from discovery.gfn import CrystalGFN, DensityReward, PolicyConfig, SearchSpace
from discovery.gfn.env import Rollout
from discovery.gfn.model import Losses
from discovery.gfn.policy import BetaMixture
from discovery.gfn.replay import forced_rollout
from discovery.gfn.sampler import rollout
from discovery.gfn.states import State, backward_action, backward_mask, forward


@pytest.fixture(scope="module")
def packed_gfn() -> CrystalGFN:
    """A budget-free space (the batched composition path, like the paper's space)."""
    space = SearchSpace(elements=("Li", "Fe", "O", "Cl", "N", "C", "Se", "Si", "Cu"), max_elements=3,
                        max_atoms_per_element=5, max_atoms=15)
    gfn = CrystalGFN(space, seed=0, policy=PolicyConfig(hidden=32, layers=2))
    assert gfn.env.packed is not None
    return gfn


def _reference_tb(gfn: CrystalGFN, ro: Rollout, log_reward: torch.Tensor) -> Losses:
    """The plain formulation: every row's log-softmax over all D masked logits of ``forward``."""
    logits, lat_params = gfn.forward_policy(ro.feat)
    lp = torch.zeros(len(ro.action))
    disc = ro.action >= 0
    lg = torch.log_softmax(logits[disc].masked_fill(~ro.mask[disc], float("-inf")), dim=-1)
    lp[disc] = lg.gather(1, ro.action[disc][:, None])[:, 0]
    lat = ~disc
    lp[lat] = BetaMixture(lat_params[lat], gfn.policy_cfg).log_prob(ro.u[lat], ro.free[lat])
    n = len(ro.crystals)
    bl = gfn.backward_policy(ro.b_feat).masked_fill(~ro.b_mask, float("-inf"))
    blp = torch.log_softmax(bl, dim=-1).gather(1, ro.b_action[:, None])[:, 0]
    delta = (gfn.log_z + torch.zeros(n).index_add(0, ro.traj, lp) - log_reward
             - torch.zeros(n).index_add(0, ro.b_traj, blp))
    return Losses((delta**2).mean(), delta.detach())


def _grads(gfn: CrystalGFN, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [*gfn.forward_policy.parameters(), *gfn.backward_policy.parameters(), gfn.log_z]
    return [g if g is not None else torch.zeros_like(p)
            for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True), strict=True)]


@pytest.mark.parametrize("keep_graph", [False, True], ids=["recomputed", "kept-from-rollout"])
@pytest.mark.parametrize("which", ["one-state", "batched"])
def test_tb_loss_equals_the_full_softmax_formulation(which: str, keep_graph: bool, small_gfn: CrystalGFN,
                                                     packed_gfn: CrystalGFN) -> None:
    gfn = small_gfn if which == "one-state" else packed_gfn
    torch.manual_seed(3)
    np.random.seed(3)
    ro = rollout(gfn.env, gfn.forward_policy, 48, epsilon=0.3, keep_graph=keep_graph)
    assert (ro.hidden is not None and ro.hidden.requires_grad) if keep_graph else ro.hidden is None
    replayed = forced_rollout(gfn.env, ro.crystals[:16])
    for batch in (ro, replayed):
        log_r = torch.randn(len(batch.crystals))
        fast, ref = gfn.tb_loss(batch, log_r), _reference_tb(gfn, batch, log_r)
        assert torch.isfinite(ref.delta).all()
        torch.testing.assert_close(fast.delta, ref.delta, rtol=1e-5, atol=1e-4)
        fast_grads = _grads(gfn, fast.loss)
        assert all(bool(g.abs().sum() > 0) for g in fast_grads[:2])  # the forward policy's first layer learns
        for g_fast, g_ref in zip(fast_grads, _grads(gfn, ref.loss), strict=True):
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5)


def test_stage_heads_are_slices_of_the_full_output(packed_gfn: CrystalGFN) -> None:
    policy, env = packed_gfn.forward_policy, packed_gfn.env
    x = torch.rand(20, env.n_features)
    with torch.no_grad():
        logits, lat = policy(x)
        h = policy.trunk(x)
        torch.testing.assert_close(policy.logits(h, 0, 243), logits[:, :243])
        torch.testing.assert_close(policy.logits(h, 243, env.D), logits[:, 243:])
        torch.testing.assert_close(policy.lattice(h), lat)


@pytest.mark.parametrize("which", ["one-state", "batched"])
def test_backward_rows_match_the_one_state_api(which: str, small_gfn: CrystalGFN, packed_gfn: CrystalGFN) -> None:
    gfn = small_gfn if which == "one-state" else packed_gfn
    env = gfn.env
    ro = rollout(env, gfn.forward_policy, 80, epsilon=0.5)
    states = [State() for _ in range(80)]
    expected: list[list[tuple[list[bool], int | None]]] = [[] for _ in range(80)]
    for row in range(len(ro.action)):
        t, a = int(ro.traj[row]), int(ro.action[row])
        parent = states[t]
        child = forward(env, parent, a) if a >= 0 else forward(env, parent, 0, u=ro.u[row].numpy())
        if parent.stage == "space_group":
            expected[t].append((backward_mask(env, child).tolist(), backward_action(parent, child)))
        states[t] = child
    got: list[list[tuple[list[bool], int | None]]] = [[] for _ in range(80)]
    for row in range(len(ro.b_action)):
        got[int(ro.b_traj[row])].append((ro.b_mask[row].tolist(), int(ro.b_action[row])))
    assert got == expected
    assert sum(len(x) for x in got) >= 80  # every trajectory passes the space-group stage
    assert [s.sg for s in states] == [c.space_group for c in ro.crystals]


def test_fused_adam_after_loading_a_checkpoint_saved_with_other_flags(tmp_path: Path, packed_gfn: CrystalGFN) -> None:
    gfn = CrystalGFN.fresh_like(packed_gfn, seed=1)
    gfn.train(DensityReward(), iterations=2)
    gfn.save(tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    for group in state["optimizer"]["param_groups"]:  # as saved by the earlier foreach Adam
        group["fused"], group["foreach"] = None, True
    torch.save(state, tmp_path / "model.pt")
    loaded = CrystalGFN.load(tmp_path)
    opt = loaded.optimizer()
    assert all(g["fused"] and not g["foreach"] for g in opt.param_groups)
    assert all(int(s["step"]) == 2 for s in opt.state.values())  # the moments came with it
    report = loaded.train(DensityReward(), iterations=2)
    assert np.isfinite(report.loss) and all(int(s["step"]) == 4 for s in opt.state.values())

