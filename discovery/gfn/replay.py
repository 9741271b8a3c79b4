"""Replay buffer of high-reward crystals and the forced rollouts that replay them.

Trajectory balance is valid for trajectories from any distribution with full support, so a
stored crystal is turned back into a trajectory (a random order of the space-group choices, the
canonical composition order, the lattice action) and trained on like a fresh one. The same
forced rollouts replay labelled crystals given from outside (offline trajectories, GFlowNet-AL,
Jain et al. 2022): :func:`offline_trajectories` keeps those the model's space can build.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from discovery.crystal import Crystal
from discovery.gfn.env import OFF_CLS, OFF_COMP, OFF_PS, OFF_SG, CrystalEnv, Rollout
from discovery.gfn.space import gamma_interval

LATTICE_TOLERANCE = 1e-3  # Å or degrees a lattice parameter may lie outside the space's range (rounding in files)

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


def forced_rollout(env: CrystalEnv, crystals: Sequence[Crystal]) -> Rollout:
    """A rollout that takes exactly the actions building ``crystals`` (random space-group order)."""
    from discovery.gfn.sampler import rollout  # local: sampler imports nothing from here

    seqs, us = zip(*(trajectory_actions(env, c, int(np.random.randint(len(_SG_ORDERS)))) for c in crystals), strict=True)
    width = max(len(s) for s in seqs)
    actions = np.full((len(seqs), width), -1, dtype=np.int64)
    for i, s in enumerate(seqs):
        actions[i, : len(s)] = s
    return rollout(env, None, len(crystals), forced=(actions, np.stack(us)))


def in_space(env: CrystalEnv, crystal: Crystal) -> bool:
    """Whether ``env`` can build ``crystal``: its elements, atom limits, space group (one the space
    allows that hosts this composition: SMACT and Wyckoff look-ahead, the masks' own test) and its
    free lattice parameters within the ranges (± ``LATTICE_TOLERANCE``)."""
    rules, space, tol = env.cc.rules, env.space, LATTICE_TOLERANCE
    counts = {el: n for el, n in crystal.counts.items() if n}
    if not counts or any(el not in rules.elements or n < 0 or n != int(n) for el, n in counts.items()):
        return False
    if not rules.min_elements <= len(counts) <= rules.max_elements or sum(counts.values()) > rules.max_atoms:
        return False
    sg = crystal.space_group
    if max(counts.values()) > rules.max_per_element or not isinstance(sg, int | np.integer):
        return False
    sg = int(sg)
    if sg not in space.feasible_space_groups:
        return False
    lat = np.array(crystal.lattice, dtype=float)
    if not np.isfinite(lat).all():
        return False
    free = env.free_table[sg]
    for (lo, hi), dims in ((space.length_range, slice(0, 3)), (space.angle_range, slice(3, 6))):
        vals = lat[dims][free[dims]]
        if ((vals < lo - tol) | (vals > hi + tol)).any():
            return False
    if env.triclinic[sg]:
        g_lo, g_hi = gamma_interval(lat[3], lat[4], *space.angle_range)
        if not g_lo - tol <= lat[5] <= g_hi + tol:
            return False
    prefix = env.cc.initial(sg)
    for i, el in enumerate(rules.elements):
        n = int(counts.get(el, 0))
        if n:
            if not env.comp_mask(sg, prefix)[OFF_COMP + env.ms.elements.index(el) * env.C + n - 1]:
                return False
            prefix = env.cc.step(sg, prefix, i, n)
    return bool(env.comp_mask(sg, prefix)[env.EOS])


def offline_trajectories(env: CrystalEnv, crystals: Sequence[Crystal]) -> tuple[list[Crystal], int]:
    """The crystals of ``crystals`` that ``env`` can build, as it builds them, and how many were dropped.

    A kept crystal comes back as its forced trajectory rebuilds it: lattice parameters tied by the
    lattice system follow it (a tetragonal cell gets b = a), parameters within the tolerance outside a
    range are clipped inside. Ends with one forced rollout of all kept crystals (the masks training uses);
    should it refuse one, each is tried alone and the refused ones are dropped too.
    """
    kept = [c for c in crystals if in_space(env, c)]
    if not kept:
        return [], len(crystals)
    try:
        rebuilt = forced_rollout(env, kept).crystals
    except ValueError:
        rebuilt = []
        for c in kept:
            with contextlib.suppress(ValueError):
                rebuilt += forced_rollout(env, [c]).crystals
    return rebuilt, len(crystals) - len(rebuilt)
