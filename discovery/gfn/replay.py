"""Replay buffer of high-reward crystals and the forced rollouts that replay them.

Trajectory balance is valid for trajectories from any distribution with full support, so a
stored crystal is turned back into a trajectory (a random order of the space-group choices, the
canonical composition order, the lattice action) and trained on like a fresh one.
"""

from __future__ import annotations

import numpy as np

from discovery.crystal import Crystal
from discovery.gfn.env import OFF_CLS, OFF_COMP, OFF_PS, OFF_SG, CrystalEnv, Rollout
from discovery.gfn.space import gamma_interval

_SG_ORDERS = (("sg",), ("cls", "sg"), ("ps", "sg"), ("cls", "ps", "sg"), ("ps", "cls", "sg"))


class ReplayBuffer:
    """Keeps the ``capacity`` distinct crystals with the highest log-reward seen so far."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: dict[tuple[object, ...], tuple[float, Crystal]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, crystals: list[Crystal], log_rewards: np.ndarray) -> None:
        if not self.capacity:
            return
        for c, r in zip(crystals, log_rewards, strict=True):
            key = (c.space_group, tuple(sorted(c.counts.items())), tuple(round(x, 4) for x in c.lattice))
            self._items[key] = (float(r), c)
        if len(self._items) > self.capacity:
            keep = sorted(self._items.items(), key=lambda kv: kv[1][0], reverse=True)[: self.capacity]
            self._items = dict(keep)

    def sample(self, k: int) -> tuple[list[Crystal], np.ndarray]:
        items = list(self._items.values())
        pick = np.random.choice(len(items), size=min(k, len(items)), replace=False)
        return [items[i][1] for i in pick], np.array([items[i][0] for i in pick])


def trajectory_actions(env: CrystalEnv, crystal: Crystal, order: int) -> tuple[list[int], np.ndarray]:
    """Forward discrete actions and normalised lattice parameters (6,) that build ``crystal``."""
    sg = crystal.space_group
    acts: list[int] = []
    for step in _SG_ORDERS[order % len(_SG_ORDERS)]:
        if step == "cls":
            acts.append(OFF_CLS + int(env.sg_cls[sg]))
        elif step == "ps":
            acts.append(OFF_PS + int(env.sg_ps[sg]))
        else:
            acts.append(OFF_SG + sg - 1)
    for el in env.cc.rules.elements:
        n = crystal.counts.get(el, 0)
        if n:
            acts.append(OFF_COMP + env.ms.elements.index(el) * env.C + n - 1)
    acts.append(env.EOS)
    (l0, l1), (a0, a1) = env.ms.length_range, env.ms.angle_range
    lat = np.array(crystal.lattice, dtype=float)
    u = np.empty(6)
    u[:3] = (lat[:3] - l0) / (l1 - l0)
    u[3:] = (lat[3:] - a0) / (a1 - a0)
    if env.triclinic[sg]:
        g_lo, g_hi = gamma_interval(lat[3], lat[4], a0, a1)
        u[5] = (lat[5] - g_lo) / (g_hi - g_lo)
    return acts, np.where(env.free_table[sg], u.clip(1e-5, 1 - 1e-5), 0.5)


def forced_rollout(env: CrystalEnv, crystals: list[Crystal]) -> Rollout:
    """A rollout that takes exactly the actions building ``crystals`` (random space-group order)."""
    from discovery.gfn.sampler import rollout  # local: sampler imports nothing from here

    seqs, us = zip(*(trajectory_actions(env, c, int(np.random.randint(len(_SG_ORDERS)))) for c in crystals), strict=True)
    width = max(len(s) for s in seqs)
    actions = np.full((len(seqs), width), -1, dtype=np.int64)
    for i, s in enumerate(seqs):
        actions[i, : len(s)] = s
    return rollout(env, None, len(crystals), forced=(actions, np.stack(us)))
