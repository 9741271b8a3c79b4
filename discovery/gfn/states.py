"""One-state view of the Crystal-GFN environment: forward and backward transitions and masks.

The batched rollouts (:mod:`discovery.gfn.sampler`) are the fast path; this module spells the same
transitions out for a single state, so that tests can check the invariants every subspace must
satisfy (a forward step followed by the matching backward step returns the parent; masks are
never empty before the end) and so that stored crystals can be turned back into trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from discovery.gfn.env import (
    B_UNSET_CLS,
    B_UNSET_PS,
    N_BACKWARD,
    OFF_COMP,
    OFF_PS,
    OFF_SG,
    CrystalEnv,
)


@dataclass(frozen=True)
class State:
    """cls / ps: crystal-lattice system and point-symmetry indices (−1 unset); sg 0 = unset;
    counts: ((model element index, count), ...) in canonical order; ``ended``: composition ended;
    ``lattice``: normalised lattice parameters once drawn (terminal)."""

    cls: int = -1
    ps: int = -1
    sg: int = 0
    counts: tuple[tuple[int, int], ...] = ()
    ended: bool = False
    lattice: tuple[float, ...] | None = None

    @property
    def stage(self) -> str:
        if self.sg == 0:
            return "space_group"
        if not self.ended:
            return "composition"
        return "lattice" if self.lattice is None else "done"


def _prefix(env: CrystalEnv, state: State):  # type: ignore[no-untyped-def]
    prefix = env.cc.initial(state.sg)
    for full_el, n in state.counts:
        prefix = env.cc.step(state.sg, prefix, int(env.full_to_restricted[full_el]), n)
    return prefix


def forward_mask(env: CrystalEnv, state: State) -> np.ndarray:
    """(D,) allowed discrete actions (all False in the lattice stage, whose action is continuous)."""
    out = np.zeros(env.D, dtype=bool)
    if state.stage == "space_group":
        out[:OFF_COMP] = env.sg_mask_table[state.cls + 1, state.ps + 1]
    elif state.stage == "composition":
        out = env.comp_mask(state.sg, _prefix(env, state))
    return out


def forward(env: CrystalEnv, state: State, action: int, u: np.ndarray | None = None) -> State:
    """The child reached by ``action`` (discrete) or by drawing lattice ``u`` (lattice stage)."""
    if state.stage == "lattice":
        if u is None:
            raise ValueError("the lattice stage takes continuous parameters u")
        return replace(state, lattice=tuple(float(x) for x in u))
    if not forward_mask(env, state)[action]:
        raise ValueError(f"action {action} is masked in state {state}")
    if state.stage == "space_group":
        if action < OFF_PS:
            return replace(state, cls=action)
        if action < OFF_SG:
            return replace(state, ps=action - OFF_PS)
        sg = action - OFF_SG + 1
        return replace(state, sg=sg, cls=int(env.sg_cls[sg]), ps=int(env.sg_ps[sg]))
    if action == env.EOS:
        return replace(state, ended=True)
    el, n = divmod(action - OFF_COMP, env.C)
    return replace(state, counts=(*state.counts, (el, n + 1)))


def backward_mask(env: CrystalEnv, state: State) -> np.ndarray:
    """(N_BACKWARD,) backward actions of the space-group subspace available from ``state``; all
    False where the parent is unique (composition, lattice) or the state is the source."""
    m = np.zeros(N_BACKWARD, dtype=bool)
    if state.stage == "composition" and not state.counts:
        m[:4] = True
    elif state.stage == "space_group":
        m[B_UNSET_CLS], m[B_UNSET_PS] = state.cls >= 0, state.ps >= 0
    return m


def backward(env: CrystalEnv, state: State, baction: int | None = None) -> State:
    """The parent of ``state``; ``baction`` chooses among several parents (space-group subspace)."""
    if state.lattice is not None:
        return replace(state, lattice=None)
    if state.ended:
        return replace(state, ended=False)
    if state.counts:
        return replace(state, counts=state.counts[:-1])
    if baction is None or not backward_mask(env, state)[baction]:
        raise ValueError(f"state {state} needs a valid backward action, got {baction}")
    if state.sg:
        keep_cls, keep_ps = baction & 1, baction >> 1
        return State(cls=state.cls if keep_cls else -1, ps=state.ps if keep_ps else -1)
    if baction == B_UNSET_CLS:
        return replace(state, cls=-1)
    return replace(state, ps=-1)


def backward_action(parent: State, child: State) -> int | None:
    """The backward action that undoes ``parent → child`` (None where the parent is unique)."""
    if child.stage == "composition" and not child.counts and parent.sg == 0:
        return int(parent.cls >= 0) + 2 * int(parent.ps >= 0)
    if child.stage == "space_group":
        return B_UNSET_CLS if parent.cls != child.cls else B_UNSET_PS
    return None
