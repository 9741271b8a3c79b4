"""The Crystal-GFN environment: space group → composition → lattice parameters, on batches.

Action structure (forward):

* **Space group** (paper §4.1): the state is (crystal-lattice system, point symmetry, space
  group); any of the three can be set first, each choice restricts the others, and choosing the
  space group fills the other two. Discrete actions ``[0, 8)`` set the crystal-lattice system,
  ``[8, 13)`` the point symmetry, ``[13, 243)`` the space group (number − 1). This subspace is a
  DAG: a state can have several parents, so its backward policy is learned (6 backward actions:
  "the space group was set last, with/without the system and symmetry set before" (4), "unset the
  system", "unset the symmetry").
* **Composition** (paper §4.2): (element, count) pairs, each element at most once, then *end*.
  Elements are added in canonical order (electronegativity), which makes the hard constraints'
  look-ahead exact (:mod:`discovery.gfn.constraints`): every valid composition is reachable, no
  state is a dead end, and each state has a single parent.
* **Lattice** (paper §4.3): one continuous action drawing the free lattice parameters of the
  space group's lattice system from a mixture of Betas (normalised to the configured ranges);
  tied parameters follow the lattice system; for triclinic cells γ is drawn inside the interval
  that keeps the cell valid given α and β.

Shapes: ``B`` trajectories, ``F`` features, ``D = 243 + N·C + 1`` discrete actions (``N``
elements, ``C`` max atoms per element, last = end composition).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from discovery.crystal import Crystal
from discovery.gfn.batched import PackedTables
from discovery.gfn.constraints import PrefixState
from discovery.gfn.policy import U_EPS, BetaMixture, PolicyConfig
from discovery.gfn.space import FREE_DIMS, GAMMA_FIXED, SearchSpace, free_dims_table, gamma_interval
from discovery.symmetry import CRYSTAL_LATTICE_SYSTEMS, POINT_SYMMETRIES, all_space_groups

OFF_CLS, OFF_PS, OFF_SG, OFF_COMP = 0, 8, 13, 243
STAGE_SG, STAGE_COMP, STAGE_LAT, STAGE_DONE = 0, 1, 2, 3
N_BACKWARD = 6
B_UNSET_CLS, B_UNSET_PS = 4, 5
_TRICLINIC_GAMMA = 5


@dataclass
class Rollout:
    """What a batch of trajectories did, enough to recompute every log-probability with gradients.

    Forward rows (one per transition): ``feat`` (T, F), ``mask`` (T, D) bool, ``action`` (T,)
    (−1 for lattice rows), ``traj`` (T,), ``u`` (T, 6) and ``free`` (T, 6) for lattice rows.
    Backward rows (transitions with several possible parents): ``b_feat``, ``b_mask`` (Tb, 6),
    ``b_action``, ``b_traj``. ``hidden``: the policy's trunk outputs computed while sampling, kept with
    their autograd graph (``rollout(..., keep_graph=True)``) so that training need not recompute them.
    """

    crystals: list[Crystal]
    feat: Tensor
    mask: Tensor
    action: Tensor
    traj: Tensor
    u: Tensor
    free: Tensor
    b_feat: Tensor
    b_mask: Tensor
    b_action: Tensor
    b_traj: Tensor
    n_steps: Tensor = field(default_factory=lambda: torch.zeros(0))
    hidden: Tensor | None = None  # (T, hidden) forward-policy trunk outputs of ``feat``, with their graph


class CrystalEnv:
    """Masks, transitions and rollouts for a model trained on ``model_space``, sampling in ``space``.

    ``space`` must be a restriction of ``model_space`` (:meth:`SearchSpace.restrict`); the action
    layout and the normalisation of lattice parameters always follow ``model_space``.
    """

    def __init__(self, model_space: SearchSpace, space: SearchSpace | None = None, *, device: str = "cpu") -> None:
        self.ms = model_space
        self.space = space or model_space
        self.device = torch.device(device)
        self.N, self.C = len(self.ms.elements), self.ms.max_atoms_per_element
        self.D = OFF_COMP + self.N * self.C + 1
        self.EOS = self.D - 1
        self.n_features = 3 + 9 + 6 + 231 + 2 * self.N + 2
        self.cc = self.space.constraints
        rules = self.cc.rules
        elem_map = np.array([self.ms.elements.index(e) for e in rules.elements], dtype=np.int64)
        self.comp_index = (elem_map[:, None] * self.C + np.arange(rules.max_per_element)[None, :]) + OFF_COMP
        self.elem_map = elem_map
        self.full_to_restricted = np.full(self.N, -1, dtype=np.int64)
        self.full_to_restricted[elem_map] = np.arange(len(elem_map))
        groups = all_space_groups()
        self.sg_cls = np.array([-1] + [CRYSTAL_LATTICE_SYSTEMS.index(g.crystal_lattice_system) for g in groups])
        self.sg_ps = np.array([-1] + [POINT_SYMMETRIES.index(g.point_symmetry) for g in groups])
        self.space.check_feasible()
        self.sg_mask_table = self._sg_masks(self.space.feasible_space_groups)
        self.free_table = free_dims_table()
        self.triclinic = np.array([False] + [g.lattice_system == "triclinic" for g in groups])
        self.hexagonal = np.array([False] + [g.lattice_system in GAMMA_FIXED for g in groups])
        self.restricted_box = (self.space.length_range != self.ms.length_range) or (
            self.space.angle_range != self.ms.angle_range
        )
        self._mask_cache: dict[tuple[object, ...], tuple[np.ndarray, bool]] = {}
        self._packed: PackedTables | bool | None = None  # False: this space takes the one-state path

    @property
    def packed(self) -> PackedTables | None:
        """All tables packed for batched composition steps (:mod:`discovery.gfn.batched`); None where
        the space needs the one-state path (budgeted spaces, unary compositions)."""
        if self._packed is None:
            rules = self.cc.rules
            self._packed = False
            if rules.max_atoms >= rules.max_elements * rules.max_per_element and rules.min_elements >= 2:
                try:
                    self._packed = PackedTables(self.cc)
                except Exception as exc:  # a damaged table file: the one-state path reads what it can
                    warnings.warn(f"batched composition tables unavailable ({type(exc).__name__}: {exc})", stacklevel=2)
        return self._packed if isinstance(self._packed, PackedTables) else None

    # -- space-group subspace ---------------------------------------------------------------------
    def _sg_masks(self, feasible: tuple[int, ...]) -> np.ndarray:
        """(9, 6, 243) forward masks of the space-group subspace by (system + 1, symmetry + 1)."""
        out = np.zeros((9, 6, OFF_COMP), dtype=bool)
        feas = np.array(feasible, dtype=np.int64)
        for c in range(-1, 8):
            for p in range(-1, 5):
                ok = feas[((self.sg_cls[feas] == c) | (c < 0)) & ((self.sg_ps[feas] == p) | (p < 0))]
                out[c + 1, p + 1, OFF_SG + ok - 1] = True
                if c < 0:
                    out[c + 1, p + 1, OFF_CLS + np.unique(self.sg_cls[ok])] = True
                if p < 0:
                    out[c + 1, p + 1, OFF_PS + np.unique(self.sg_ps[ok])] = True
        return out

    # -- composition subspace ---------------------------------------------------------------------
    def comp_mask(self, sg: int, prefix: PrefixState) -> np.ndarray:
        """(D,) forward mask of a composition state."""
        key = (self.cc.for_space_group(sg).key, prefix.counts)
        hit = self._mask_cache.get(key)
        if hit is None:
            hit = self.cc.action_mask(sg, prefix)
            if len(self._mask_cache) > 500_000:
                self._mask_cache.clear()
            self._mask_cache[key] = hit
        m, can_end = hit
        out = np.zeros(self.D, dtype=bool)
        out[self.comp_index[m]] = True
        out[self.EOS] = can_end
        return out

    # -- features ---------------------------------------------------------------------------------
    def features(self, st: _BatchState, idx: np.ndarray) -> np.ndarray:
        """(len(idx), F) float32 state features."""
        n = len(idx)
        f = np.zeros((n, self.n_features), dtype=np.float32)
        # one-hot blocks: stage [0, 3), system [3, 12), symmetry [12, 18), space group [18, 249)
        hot = np.stack([np.minimum(st.stage[idx], 2), 4 + st.cls[idx], 13 + st.ps[idx], 18 + st.sg[idx]], axis=1)
        f[np.arange(n)[:, None], hot] = 1
        counts = st.counts[idx]
        present = counts > 0
        o = 249
        f[:, o : o + self.N] = counts / self.C
        f[:, o + self.N : o + 2 * self.N] = present
        f[:, -2] = present.sum(1) / self.ms.max_elements
        f[:, -1] = counts.sum(1) / self.ms.max_atoms
        return f

    # -- lattice subspace -------------------------------------------------------------------------
    def lattice_from_u(self, sg: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(B, 6) physical lattice (Å, degrees) from normalised free parameters ``u`` (B, 6)."""
        (l0, l1), (a0, a1) = self.ms.length_range, self.ms.angle_range
        lat = np.empty_like(u, dtype=np.float64)
        lat[:, :3] = l0 + u[:, :3] * (l1 - l0)
        lat[:, 3:] = a0 + u[:, 3:] * (a1 - a0)
        free = self.free_table[sg]
        lat[:, 1] = np.where(free[:, 1], lat[:, 1], lat[:, 0])
        lat[:, 2] = np.where(free[:, 2], lat[:, 2], lat[:, 0])
        for d in (3, 4, 5):
            lat[:, d] = np.where(free[:, d], lat[:, d], 90.0)
        lat[:, 5] = np.where(self.hexagonal[sg], 120.0, lat[:, 5])
        tri = self.triclinic[sg]
        if tri.any():
            g_lo, g_hi = gamma_interval(lat[tri, 3], lat[tri, 4], a0, a1)
            lat[tri, 5] = g_lo + u[tri, 5] * (g_hi - g_lo)
        return lat

    def _u_box(self, sg: np.ndarray, u_partial: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-row (lo, hi) of u allowed by the sampling space's ranges; γ of triclinic rows needs α, β."""
        (l0, l1), (a0, a1) = self.ms.length_range, self.ms.angle_range
        (r0, r1), (b0, b1) = self.space.length_range, self.space.angle_range
        lo = np.tile(np.array([(r0 - l0) / (l1 - l0)] * 3 + [(b0 - a0) / (a1 - a0)] * 3), (len(sg), 1))
        hi = np.tile(np.array([(r1 - l0) / (l1 - l0)] * 3 + [(b1 - a0) / (a1 - a0)] * 3), (len(sg), 1))
        tri = self.triclinic[sg]
        if u_partial is not None and tri.any():
            al = a0 + u_partial[tri, 3] * (a1 - a0)
            be = a0 + u_partial[tri, 4] * (a1 - a0)
            g_lo, g_hi = gamma_interval(al, be, a0, a1)
            rg_lo, rg_hi = gamma_interval(al, be, b0, b1)
            lo[tri, 5] = (rg_lo - g_lo) / (g_hi - g_lo)
            hi[tri, 5] = (rg_hi - g_lo) / (g_hi - g_lo)
        return lo.clip(0, 1), hi.clip(0, 1)

    def sample_u(self, params: Tensor, sg: np.ndarray, cfg: PolicyConfig, explore: np.ndarray) -> np.ndarray:
        """Draw normalised lattice parameters (B, 6) from the policy (uniform where ``explore``)."""
        free = self.free_table[sg]
        if not self.restricted_box:
            u = BetaMixture(params, cfg).sample().cpu().numpy().astype(np.float64)
            if explore.any():
                u[explore] = np.random.uniform(U_EPS, 1 - U_EPS, size=(int(explore.sum()), 6))
        else:
            u = self._sample_truncated(params, sg, cfg, explore)
        return np.where(free, u, 0.5)

    def _sample_truncated(self, params: Tensor, sg: np.ndarray, cfg: PolicyConfig, explore: np.ndarray) -> np.ndarray:
        """Sample the mixture restricted to the sampling box by inverse CDF (exact per component;
        the component is chosen by its mass in the box of a, b, c, α, β)."""
        # imported here: 0.3–0.7 s that plain sampling never needs
        from scipy.special import betainc, betaincinv

        mix = BetaMixture(params, cfg)
        a, b = mix.alpha.double().cpu().numpy(), mix.beta.double().cpu().numpy()
        logw = mix.log_w.double().cpu().numpy()
        free = self.free_table[sg]
        lo, hi = self._u_box(sg)
        f_lo, f_hi = betainc(a, b, lo[:, None, :]), betainc(a, b, hi[:, None, :])
        mass = np.clip(f_hi - f_lo, 1e-300, None)
        first = free.copy()
        first[:, _TRICLINIC_GAMMA] = False
        logits = logw + (np.log(mass) * first[:, None, :]).sum(-1)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        k = (p.cumsum(1) < np.random.uniform(size=(len(p), 1))).sum(1).clip(0, p.shape[1] - 1)
        rows = np.arange(len(k))
        ak, bk, flo, fhi = a[rows, k], b[rows, k], f_lo[rows, k], f_hi[rows, k]
        u = betaincinv(ak, bk, flo + np.random.uniform(size=flo.shape) * (fhi - flo))
        lo2, hi2 = self._u_box(sg, u)
        g = _TRICLINIC_GAMMA
        glo, ghi = betainc(ak[:, g], bk[:, g], lo2[:, g]), betainc(ak[:, g], bk[:, g], hi2[:, g])
        u[:, g] = betaincinv(ak[:, g], bk[:, g], glo + np.random.uniform(size=len(u)) * (ghi - glo))
        if explore.any():
            uni = lo2 + np.random.uniform(size=lo2.shape) * (hi2 - lo2)
            u[explore] = uni[explore]
        return np.clip(u, U_EPS, 1 - U_EPS)


@dataclass
class _BatchState:
    stage: np.ndarray
    cls: np.ndarray
    ps: np.ndarray
    sg: np.ndarray
    counts: np.ndarray
    prefix: list[PrefixState | None]
    u: np.ndarray

    @classmethod
    def empty(cls, n: int, n_elements: int) -> _BatchState:
        return cls(
            stage=np.zeros(n, dtype=np.int64),
            cls=np.full(n, -1, dtype=np.int64),
            ps=np.full(n, -1, dtype=np.int64),
            sg=np.zeros(n, dtype=np.int64),
            counts=np.zeros((n, n_elements), dtype=np.int64),
            prefix=[None] * n,
            u=np.zeros((n, 6)),
        )


__all__ = ["FREE_DIMS", "N_BACKWARD", "CrystalEnv", "Rollout"]
