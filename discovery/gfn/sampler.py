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
) -> Rollout:
    """Sample ``n`` trajectories. With probability ``epsilon`` a step takes a uniformly random valid
    action (exploration); log-probabilities are recomputed later under the policy itself.

    ``forced`` = (actions (n, L) padded with −1, lattice u (n, 6)) replays given trajectories instead
    of sampling (no policy needed); every forced action is checked against the masks.
    """
    if policy is None and forced is None:
        raise ValueError("rollout needs a policy unless the actions are forced")
    st = _BatchState.empty(n, env.N)
    rec: dict[str, list[np.ndarray]] = {k: [] for k in ("feat", "mask", "action", "traj", "u", "free")}
    brec: dict[str, list[np.ndarray]] = {k: [] for k in ("feat", "mask", "action", "traj")}
    n_steps = np.zeros(n, dtype=np.int64)
    packed = env.packed
    batch = BatchComposition(packed, n) if packed is not None else None
    while True:
        idx = np.flatnonzero(st.stage < STAGE_DONE)
        if not len(idx):
            break
        feat = env.features(st, idx)
        if policy is not None:
            logits, lat_params = policy(torch.from_numpy(feat).to(env.device))
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
            lg = logits[torch.from_numpy(disc).to(env.device)]
            m = torch.from_numpy(mask[disc]).to(env.device)
            lg = torch.where(torch.from_numpy(explore[disc]).to(env.device)[:, None], torch.zeros_like(lg), lg)
            # inverse CDF (10x faster than torch.multinomial on 1,000 × 600 rows); masked actions have
            # zero mass, so the first CDF bin above u is an allowed one (capped at the last allowed)
            cdf = torch.softmax(lg.masked_fill(~m, float("-inf")), dim=-1).cumsum(dim=-1)
            pick = torch.searchsorted(cdf, torch.rand(len(cdf), 1, device=cdf.device) * cdf[:, -1:], right=True)[:, 0]
            last_ok = m.shape[1] - 1 - m.flip(1).to(torch.int8).argmax(dim=1)
            actions[disc] = torch.minimum(pick, last_ok).cpu().numpy()
        if forced is None and lat.any():
            sg_l = st.sg[idx[lat]]
            u[lat] = env.sample_u(lat_params[torch.from_numpy(lat).to(env.device)], sg_l, policy.cfg, explore[lat])  # type: ignore[union-attr]
            free[lat] = env.free_table[sg_l]
        rec["feat"].append(feat)
        rec["mask"].append(mask)
        rec["action"].append(actions)
        rec["traj"].append(idx)
        rec["u"].append(u)
        rec["free"].append(free)
        n_steps[idx] += 1
        # -- transitions ------------------------------------------------------------------------
        b_rows: list[int] = []
        b_masks: list[np.ndarray] = []
        b_actions: list[int] = []
        started: list[int] = []
        ended: list[int] = []
        stepped: list[tuple[int, int, int]] = []
        for j, tr in enumerate(idx.tolist()):
            a = int(actions[j])
            s = st.stage[tr]
            if s == STAGE_SG:
                bm = np.zeros(N_BACKWARD, dtype=bool)
                if a < OFF_PS:
                    st.cls[tr] = a
                    bm[B_UNSET_CLS], bm[B_UNSET_PS] = True, st.ps[tr] >= 0
                    b_actions.append(B_UNSET_CLS)
                elif a < OFF_SG:
                    st.ps[tr] = a - OFF_PS
                    bm[B_UNSET_PS], bm[B_UNSET_CLS] = True, st.cls[tr] >= 0
                    b_actions.append(B_UNSET_PS)
                else:
                    sg = a - OFF_SG + 1
                    b_actions.append(int(st.cls[tr] >= 0) + 2 * int(st.ps[tr] >= 0))
                    bm[:4] = True
                    st.sg[tr], st.cls[tr], st.ps[tr] = sg, env.sg_cls[sg], env.sg_ps[sg]
                    st.stage[tr] = STAGE_COMP
                    if batch is None:
                        st.prefix[tr] = env.cc.initial(sg)
                    else:
                        started.append(tr)
                b_rows.append(tr)
                b_masks.append(bm)
            elif s == STAGE_COMP:
                if a == env.EOS:
                    st.stage[tr] = STAGE_LAT
                    ended.append(tr)
                else:
                    flat = a - OFF_COMP
                    full_el, count = divmod(flat, env.C)
                    restricted = int(env.full_to_restricted[full_el])
                    if batch is None:
                        st.prefix[tr] = env.cc.step(int(st.sg[tr]), st.prefix[tr], restricted, count + 1)  # type: ignore[arg-type]
                    else:
                        stepped.append((tr, restricted, count + 1))
                    st.counts[tr, full_el] = count + 1
            else:
                st.u[tr] = u[j]
                st.stage[tr] = STAGE_DONE
        if batch is not None:
            if ended:
                batch.finish(np.array(ended))
            if stepped:
                rows_s, el_s, n_s = (np.array(x, dtype=np.int64) for x in zip(*stepped, strict=True))
                batch.step(rows_s, el_s, n_s)
            if started:
                batch.start(np.array(started), st.sg[started])
        if b_rows:
            brows = np.array(b_rows)
            brec["feat"].append(env.features(st, brows))
            brec["mask"].append(np.stack(b_masks))
            brec["action"].append(np.array(b_actions))
            brec["traj"].append(brows)
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
    )
