"""Batched rollouts of the Crystal-GFN: one policy evaluation per step for the whole batch."""

from __future__ import annotations

import numpy as np
import torch

from discovery.crystal import Crystal
from discovery.gfn.batched import BatchComposition
from discovery.gfn.env import (
    B_UNSET_CLS,
    B_UNSET_PS,
    N_BACKWARD,
    OFF_COMP,
    OFF_PS,
    OFF_SG,
    STAGE_COMP,
    STAGE_DONE,
    STAGE_LAT,
    STAGE_SG,
    CrystalEnv,
    Rollout,
    _BatchState,
)
from discovery.gfn.policy import ForwardPolicy


@torch.no_grad()
def rollout(
    env: CrystalEnv,
    policy: ForwardPolicy | None,
    n: int,
    *,
    epsilon: float = 0.0,
    forced: tuple[np.ndarray, np.ndarray] | None = None,
    keep_graph: bool = False,
) -> Rollout:
    """Sample ``n`` trajectories. With probability ``epsilon`` a step takes a uniformly random valid
    action (exploration); log-probabilities are recomputed later under the policy itself.

    ``forced`` = (actions (n, L) padded with −1, lattice u (n, 6)) replays given trajectories instead
    of sampling (no policy needed); every forced action is checked against the masks.

    ``keep_graph``: the policy's trunk runs with gradients and its outputs come back as
    ``Rollout.hidden`` (training reuses them instead of a second forward pass); the sampling itself
    is the same.
    """
    if policy is None and forced is None:
        raise ValueError("rollout needs a policy unless the actions are forced")
    st = _BatchState.empty(n, env.N)
    rec: dict[str, list[np.ndarray]] = {k: [] for k in ("feat", "mask", "action", "traj", "u", "free")}
    brec: dict[str, list[np.ndarray]] = {k: [] for k in ("feat", "mask", "action", "traj")}
    n_steps = np.zeros(n, dtype=np.int64)
    kept: list[torch.Tensor] = []
    packed = env.packed
    batch = BatchComposition(packed, n) if packed is not None else None
    while True:
        idx = np.flatnonzero(st.stage < STAGE_DONE)
        if not len(idx):
            break
        feat = env.features(st, idx)
        if policy is not None:
            with torch.set_grad_enabled(keep_graph):
                hidden = policy.trunk(torch.from_numpy(feat).to(env.device))
            if keep_graph:
                kept.append(hidden)
                hidden = hidden.detach()
        stage = st.stage[idx]
        mask = np.zeros((len(idx), env.D), dtype=bool)
        sg_rows = stage == STAGE_SG
        mask[sg_rows, :OFF_COMP] = env.sg_mask_table[st.cls[idx[sg_rows]] + 1, st.ps[idx[sg_rows]] + 1]
        comp_rows = stage == STAGE_COMP
        if batch is not None and comp_rows.any():
            cm, can_end = batch.masks(idx[comp_rows])
            block = np.zeros((len(cm), env.D), dtype=bool)
            block[:, env.comp_index.ravel()] = cm.reshape(len(cm), -1)
            block[:, env.EOS] = can_end
            mask[comp_rows] = block
        else:
            for jc in np.flatnonzero(comp_rows).tolist():
                mask[jc] = env.comp_mask(int(st.sg[idx[jc]]), st.prefix[idx[jc]])  # type: ignore[arg-type]
        explore = np.random.uniform(size=len(idx)) < epsilon
        disc = stage != STAGE_LAT
        actions = np.full(len(idx), -1, dtype=np.int64)
        u = np.zeros((len(idx), 6))
        free = np.zeros((len(idx), 6), dtype=bool)
        lat = ~disc
        if forced is not None:
            actions[disc] = forced[0][idx[disc], n_steps[idx[disc]]]
            if not mask[np.flatnonzero(disc), actions[disc]].all():
                raise ValueError("a forced trajectory takes an action the masks forbid (crystal outside the space?)")
            u[lat] = forced[1][idx[lat]]
            free[lat] = env.free_table[st.sg[idx[lat]]]
        elif disc.any():
            assert policy is not None
            dev = env.device
            r = torch.rand(int(disc.sum()), 1, device=dev)  # one uniform per discrete row, in row order
            # each stage's rows get the logits of that stage's actions only (the masks allow nothing else)
            for rows, lo, hi in ((sg_rows, 0, OFF_COMP), (comp_rows, OFF_COMP, env.D)):
                j = np.flatnonzero(rows)
                if not len(j):
                    continue
                lg = policy.logits(hidden[torch.from_numpy(j).to(dev)], lo, hi)
                m = torch.from_numpy(mask[j, lo:hi]).to(dev)
                lg = torch.where(torch.from_numpy(explore[j]).to(dev)[:, None], torch.zeros_like(lg), lg)
                # inverse CDF (10x faster than torch.multinomial on 1,000 × 600 rows); masked actions have
                # zero mass, so the first CDF bin above u is an allowed one (capped at the last allowed)
                cdf = torch.softmax(lg.masked_fill(~m, float("-inf")), dim=-1).cumsum(dim=-1)
                at = torch.from_numpy(np.flatnonzero(rows[disc])).to(dev)
                pick = torch.searchsorted(cdf, r[at] * cdf[:, -1:], right=True)[:, 0]
                last_ok = m.shape[1] - 1 - m.flip(1).to(torch.int8).argmax(dim=1)
                actions[j] = torch.minimum(pick, last_ok).cpu().numpy() + lo
        if forced is None and lat.any():
            sg_l = st.sg[idx[lat]]
            assert policy is not None
            lat_params = policy.lattice(hidden[torch.from_numpy(np.flatnonzero(lat)).to(env.device)])
            u[lat] = env.sample_u(lat_params, sg_l, policy.cfg, explore[lat])
            free[lat] = env.free_table[sg_l]
        rec["feat"].append(feat)
        rec["mask"].append(mask)
        rec["action"].append(actions)
        rec["traj"].append(idx)
        rec["u"].append(u)
        rec["free"].append(free)
        n_steps[idx] += 1
        # -- transitions (vectorised over the batch) ---------------------------------------------
        _transition(env, st, batch, idx, stage, actions, u, brec)
    lattice = env.lattice_from_u(st.sg, st.u)
    crystals = [
        Crystal(
            space_group=int(st.sg[t]),
            counts={env.ms.elements[e]: int(st.counts[t, e]) for e in np.flatnonzero(st.counts[t])},
            a=float(lattice[t, 0]), b=float(lattice[t, 1]), c=float(lattice[t, 2]),
            alpha=float(lattice[t, 3]), beta=float(lattice[t, 4]), gamma=float(lattice[t, 5]),
        )
        for t in range(n)
    ]
    dev = env.device

    def cat(key: str, d: dict[str, list[np.ndarray]], dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(d[key])).to(device=dev, dtype=dtype)

    return Rollout(
        crystals=crystals,
        feat=cat("feat", rec, torch.float32),
        mask=cat("mask", rec, torch.bool),
        action=cat("action", rec, torch.long),
        traj=cat("traj", rec, torch.long),
        u=cat("u", rec, torch.float32),
        free=cat("free", rec, torch.bool),
        b_feat=cat("feat", brec, torch.float32),
        b_mask=cat("mask", brec, torch.bool),
        b_action=cat("action", brec, torch.long),
        b_traj=cat("traj", brec, torch.long),
        n_steps=torch.from_numpy(n_steps),
        hidden=_cat_with_grad(kept) if kept else None,
    )


def _cat_with_grad(parts: list[torch.Tensor]) -> torch.Tensor:
    with torch.enable_grad():  # rollout runs under no_grad: a plain cat would cut the graph
        return torch.cat(parts)


def _transition(env: CrystalEnv, st: _BatchState, batch: BatchComposition | None, idx: np.ndarray,
                stage: np.ndarray, actions: np.ndarray, u: np.ndarray, brec: dict[str, list[np.ndarray]]) -> None:
    """Apply one step's ``actions`` to trajectories ``idx`` (sorted; ``stage`` their stages before the
    step, ``u`` (len(idx), 6) the lattice draws) and record the backward rows of the space-group stage."""
    none = np.zeros(0, dtype=np.int64)
    started = ended = stepped = restricted = count = none
    # space-group subspace: set the system, the symmetry or the space group (which fills both)
    sg_j = np.flatnonzero(stage == STAGE_SG)
    if len(sg_j):
        tr, a = idx[sg_j], actions[sg_j]
        had_cls, had_ps = st.cls[tr] >= 0, st.ps[tr] >= 0
        is_cls, is_ps = a < OFF_PS, (a >= OFF_PS) & (a < OFF_SG)
        is_sg = a >= OFF_SG
        bm = np.zeros((len(tr), N_BACKWARD), dtype=bool)
        bm[:, B_UNSET_CLS] = is_cls | (is_ps & had_cls)
        bm[:, B_UNSET_PS] = is_ps | (is_cls & had_ps)
        bm[is_sg, :4] = True
        b_act = np.where(is_cls, B_UNSET_CLS, np.where(is_ps, B_UNSET_PS, had_cls.astype(np.int64) + 2 * had_ps))
        st.cls[tr[is_cls]] = a[is_cls]
        st.ps[tr[is_ps]] = a[is_ps] - OFF_PS
        started = tr[is_sg]
        if len(started):
            sg = a[is_sg] - OFF_SG + 1
            st.sg[started], st.cls[started], st.ps[started] = sg, env.sg_cls[sg], env.sg_ps[sg]
            st.stage[started] = STAGE_COMP
            if batch is None:
                for t, g in zip(started.tolist(), sg.tolist(), strict=True):
                    st.prefix[t] = env.cc.initial(g)
    # composition subspace: end it, or add (element, count)
    comp_j = np.flatnonzero(stage == STAGE_COMP)
    if len(comp_j):
        tr, a = idx[comp_j], actions[comp_j]
        eos = a == env.EOS
        ended, stepped = tr[eos], tr[~eos]
        st.stage[ended] = STAGE_LAT
        full_el, count = np.divmod(a[~eos] - OFF_COMP, env.C)
        restricted = env.full_to_restricted[full_el]
        if batch is None:
            for t, e, c in zip(stepped.tolist(), restricted.tolist(), count.tolist(), strict=True):
                st.prefix[t] = env.cc.step(int(st.sg[t]), st.prefix[t], e, c + 1)  # type: ignore[arg-type]
        st.counts[stepped, full_el] = count + 1
    # lattice subspace: the drawn parameters end the trajectory
    lat_j = np.flatnonzero(stage == STAGE_LAT)
    st.u[idx[lat_j]] = u[lat_j]
    st.stage[idx[lat_j]] = STAGE_DONE
    if batch is not None:
        if len(ended):
            batch.finish(ended)
        if len(stepped):
            batch.step(stepped, restricted, count + 1)
        if len(started):
            batch.start(started, st.sg[started])
    if len(sg_j):
        brows = idx[sg_j]
        brec["feat"].append(env.features(st, brows))
        brec["mask"].append(bm)
        brec["action"].append(b_act)
        brec["traj"].append(brows)
