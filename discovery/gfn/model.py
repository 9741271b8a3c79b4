"""The Crystal-GFN: trajectory-balance training, sampling, restricted sampling, checkpoints."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from discovery.crystal import Crystal
from discovery.gfn.env import N_BACKWARD, OFF_COMP, CrystalEnv, Rollout
from discovery.gfn.parallel import chunk_seeds, sample_chunks
from discovery.gfn.policy import BackwardPolicy, BetaMixture, ForwardPolicy, PolicyConfig
from discovery.gfn.replay import ReplayBuffer, forced_rollout, offline_trajectories
from discovery.gfn.rewards import Reward
from discovery.gfn.sampler import rollout
from discovery.gfn.space import SearchSpace

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper: Adam, lr 1e-4, log Z lr 1e-2, 10 trajectories, 10 % random actions)."""

    batch_size: int = 64
    lr: float = 5e-4
    lr_log_z: float = 5e-2
    epsilon: float = 0.1
    replay_capacity: int = 0  # 0 disables the replay buffer
    replay_batch: int = 16
    grad_clip: float = 10.0


def cosine_lr_factor(*, start: int, iterations: int, final: float) -> Callable[[int], float]:
    """Learning-rate multiplier decaying from 1 at iteration ``start`` to ``final`` (a fraction of the rate, in
    (0, 1]) at ``start + iterations`` along half a cosine, constant ``final`` after it."""
    if not 0 < final <= 1:
        raise ValueError(f"final must be in (0, 1], got {final}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")

    def factor(iteration: int) -> float:
        t = min(max((iteration - start) / iterations, 0.0), 1.0)
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


@dataclass
class TrainReport:
    iterations: int
    trajectories: int
    seconds: float
    trajectories_per_s: float
    loss: float
    log_z: float
    history: list[dict[str, float]] = field(default_factory=list)
    offline_used: int = 0  # offline crystals the space can build (replayed)
    offline_dropped: int = 0  # offline crystals outside the space (ignored)
    offline_trajectories: int = 0  # forced offline trajectories trained on, all iterations together


@dataclass
class Losses:
    loss: torch.Tensor
    delta: torch.Tensor  # (n,) log Z + Σ log P_F − log R − Σ log P_B


class CrystalGFN:
    """A Crystal-GFN over ``space``.

    Example::

        gfn = CrystalGFN(SearchSpace(elements=("Li", "Mn", "O")), seed=0)
        gfn.train(DensityReward(), iterations=200)
        crystals = gfn.sample(1000, seed=1)
        gfn.save("runs/gfn")
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        device: str = "cpu",
        seed: int = 0,
        policy: PolicyConfig | None = None,
        train: TrainConfig | None = None,
    ) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed)
        self.space = space
        self.device = device
        self.seed = seed
        self.policy_cfg = policy or PolicyConfig()
        self.train_cfg = train or TrainConfig()
        self.env = CrystalEnv(space, device=device)
        self.forward_policy = ForwardPolicy(self.env.n_features, self.env.D, self.policy_cfg).to(device)
        self.backward_policy = BackwardPolicy(self.env.n_features, N_BACKWARD, self.policy_cfg).to(device)
        self.log_z = torch.nn.Parameter(torch.zeros((), device=device))
        self.iterations_done = 0
        self.replay = ReplayBuffer(self.train_cfg.replay_capacity)
        self._restricted_envs: dict[SearchSpace, CrystalEnv] = {}

    # -- training ---------------------------------------------------------------------------------
    def tb_loss(self, ro: Rollout, log_reward: torch.Tensor) -> Losses:
        """Trajectory-balance loss of a batch whose actions were already taken (recomputes log-probs).

        Each row's log-softmax runs over its own stage's actions only (space group ``[0, OFF_COMP)``,
        composition ``[OFF_COMP, D)``, lattice parameters): the masks allow nothing outside a row's
        stage, so this is the same distribution as a softmax over all ``D`` masked logits, for the
        cost of the output units the stage uses. The trunk's outputs come from the rollout where it kept
        them (``Rollout.hidden``), else from a forward pass over ``ro.feat``."""
        n = len(ro.crystals)
        fp = self.forward_policy
        h = ro.hidden if ro.hidden is not None else fp.trunk(ro.feat)
        sum_pf = torch.zeros(n, device=ro.feat.device)
        act = ro.action
        for lo, hi, rows in ((0, OFF_COMP, (act >= 0) & (act < OFF_COMP)), (OFF_COMP, self.env.D, act >= OFF_COMP)):
            r = rows.nonzero()[:, 0]
            if len(r):
                lg = fp.logits(h[r], lo, hi).masked_fill(~ro.mask[r, lo:hi], float("-inf"))
                lp = torch.log_softmax(lg, dim=-1).gather(1, (act[r] - lo)[:, None])[:, 0]
                sum_pf = sum_pf.index_add(0, ro.traj[r], lp)
        r = (act < 0).nonzero()[:, 0]
        if len(r):
            lp = BetaMixture(fp.lattice(h[r]), self.policy_cfg).log_prob(ro.u[r], ro.free[r])
            sum_pf = sum_pf.index_add(0, ro.traj[r], lp)
        sum_pb = torch.zeros(n, device=sum_pf.device)
        if len(ro.b_action):
            bl = self.backward_policy(ro.b_feat).masked_fill(~ro.b_mask, float("-inf"))
            blp = torch.log_softmax(bl, dim=-1).gather(1, ro.b_action[:, None])[:, 0]
            sum_pb = sum_pb.index_add(0, ro.b_traj, blp)
        delta = self.log_z + sum_pf - log_reward - sum_pb
        return Losses((delta**2).mean(), delta.detach())

    def train(
        self,
        log_reward: Reward | Callable[[Sequence[Crystal]], np.ndarray],
        *,
        iterations: int,
        progress: Callable[[int, dict[str, float]], None] | None = None,
        log_every: int = 10,
        offline: Sequence[Crystal] = (),
        offline_batch: int = 8,
        lr_factor: Callable[[int], float] | None = None,
    ) -> TrainReport:
        """Train (or keep training: warm start) with trajectory balance for ``iterations`` batches.

        ``offline``: labelled crystals replayed as forced trajectories (GFlowNet-AL, Jain et al. 2022):
        each iteration adds ``offline_batch`` of them (drawn without replacement) to the on-policy batch,
        their log-reward from ``log_reward`` like every other trajectory, so trajectory balance stays
        consistent. Crystals the space cannot build (elements, atom limits, lattice ranges, a space
        group that cannot host the composition) are dropped, counted in ``TrainReport.offline_dropped``;
        tied lattice parameters follow the lattice system (see :func:`offline_trajectories`).

        ``lr_factor``: multiplier of both learning rates (``lr``, ``lr_log_z``) as a function of the model's
        iteration count before each step (``iterations_done``, so a schedule continues across calls), e.g.
        :func:`cosine_lr_factor`; None: constant rates.
        """
        cfg = self.train_cfg
        params = list(self.forward_policy.parameters()) + list(self.backward_policy.parameters())
        opt = self.optimizer()
        history: list[dict[str, float]] = []
        t0 = time.perf_counter()
        n_traj = 0
        loss_v = math.nan
        off, n_dropped = offline_trajectories(self.env, offline) if len(offline) else ([], 0)
        off_logr = np.asarray(log_reward(off), dtype=np.float64) if off else np.zeros(0)
        n_off = 0
        for it in range(iterations):
            if lr_factor is not None:
                factor = float(lr_factor(self.iterations_done))
                for group, base_lr in zip(opt.param_groups, (cfg.lr, cfg.lr_log_z), strict=True):
                    group["lr"] = base_lr * factor
            ro = rollout(self.env, self.forward_policy, cfg.batch_size, epsilon=cfg.epsilon, keep_graph=True)
            logr_np = np.asarray(log_reward(ro.crystals), dtype=np.float64)
            logr = torch.as_tensor(logr_np, dtype=torch.float32, device=ro.feat.device)
            parts = [(self.tb_loss(ro, logr).loss, len(ro.crystals))]
            n_traj += len(ro.crystals)
            if self.replay.capacity:
                self.replay.add(ro.crystals, logr_np)
                if len(self.replay) >= cfg.replay_batch:
                    crystals, lr_rep = self.replay.sample(cfg.replay_batch)
                    ro_rep = forced_rollout(self.env, crystals)
                    rep = self.tb_loss(ro_rep, torch.as_tensor(lr_rep, dtype=torch.float32, device=ro.feat.device))
                    parts.append((rep.loss, len(crystals)))
            if off and offline_batch > 0:
                pick = np.random.choice(len(off), size=min(offline_batch, len(off)), replace=False)
                ro_off = forced_rollout(self.env, [off[i] for i in pick])
                lr_off = torch.as_tensor(off_logr[pick], dtype=torch.float32, device=ro.feat.device)
                parts.append((self.tb_loss(ro_off, lr_off).loss, len(pick)))
                n_off += len(pick)
            loss = sum((part * k for part, k in parts), torch.zeros((), device=ro.feat.device)) / sum(k for _, k in parts)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            self.iterations_done += 1
            loss_v = float(loss.detach())
            if (it + 1) % log_every == 0 or it == iterations - 1:
                row = {
                    "iteration": float(self.iterations_done),
                    "loss": loss_v,
                    "log_z": float(self.log_z.detach()),
                    "mean_log_reward": float(logr_np.mean()),
                    "trajectories_per_s": n_traj / max(time.perf_counter() - t0, 1e-9),
                    **({"mean_offline_log_reward": float(off_logr.mean())} if off else {}),
                }
                history.append(row)
                if progress is not None:
                    progress(it + 1, row)
        seconds = time.perf_counter() - t0
        return TrainReport(iterations, n_traj, seconds, n_traj / max(seconds, 1e-9), loss_v,
                           float(self.log_z.detach()), history, offline_used=len(off), offline_dropped=n_dropped,
                           offline_trajectories=n_off)

    @classmethod
    def fresh_like(cls, other: CrystalGFN, *, seed: int | None = None, device: str | None = None) -> CrystalGFN:
        """An untrained model with ``other``'s space, policy and training settings (a fresh Adam, no
        replay contents, ``iterations_done`` 0), initialised from ``seed`` (default: ``other.seed``):
        retraining from scratch each round instead of fine-tuning ``other``."""
        return cls(other.space, device=device or other.device, seed=other.seed if seed is None else seed,
                   policy=other.policy_cfg, train=other.train_cfg)

    # -- sampling ---------------------------------------------------------------------------------
    def env_for(self, space: SearchSpace | None) -> CrystalEnv:
        if space is None or space == self.space:
            return self.env
        if space not in self._restricted_envs:
            self._restricted_envs[space] = CrystalEnv(self.space, space, device=self.device)
        return self._restricted_envs[space]

    def restricted(self, **restrictions: Any) -> SearchSpace:
        """A sample-time restriction of the model's space (see :meth:`SearchSpace.restrict`)."""
        return self.space.restrict(**restrictions)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        space: SearchSpace | None = None,
        batch_size: int = 1024,
        progress: Callable[[int], None] | None = None,
        workers: int = 1,
    ) -> list[Crystal]:
        """Draw ``n`` crystals from the trained policy (no exploration), optionally in a restricted space.

        Trajectories run in chunks of ``batch_size``, each seeded from ``seed``: the crystals depend on
        ``(seed, batch_size)`` only, whatever ``workers`` is. ``workers`` > 1 samples the chunks on that
        many forked processes (CPU only; one torch thread each); use it from a command-line process, not
        from one that runs server threads."""
        env = self.env_for(space)
        sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
        out: list[Crystal] = []
        for chunk in sample_chunks(env, self.forward_policy, sizes, chunk_seeds(seed, len(sizes)), workers=workers):
            out += chunk
            if progress is not None:
                progress(len(out))
        return [Crystal(c.space_group, c.counts, *c.lattice, id=f"gfn-{i}") for i, c in enumerate(out)]

    def optimizer(self) -> torch.optim.Adam:
        """The model's Adam optimiser (policies at ``lr``, log Z at ``lr_log_z``), created once and kept, so
        that training in several calls (chunked runs, campaign rounds) continues its moment estimates;
        saved in and restored from checkpoints."""
        opt: torch.optim.Adam | None = getattr(self, "_opt", None)
        if opt is None:
            cfg = self.train_cfg
            params = list(self.forward_policy.parameters()) + list(self.backward_policy.parameters())
            opt = torch.optim.Adam([{"params": params, "lr": cfg.lr}, {"params": [self.log_z], "lr": cfg.lr_log_z}],
                                   fused=True)  # one fused kernel per group (CPU too): ~3x faster than foreach
            self._opt = opt
        return opt

    def _load_optimizer(self, state: dict[str, Any]) -> None:
        """Restore Adam's moments and step counts; the update stays fused (a checkpoint's param groups
        carry the implementation flags they were saved with, e.g. ``foreach`` from older versions)."""
        opt = self.optimizer()
        opt.load_state_dict(state)
        for group in opt.param_groups:
            group["fused"], group["foreach"] = True, None

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` (space and settings) and ``model.pt`` (weights, log Z) to ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        config = {
            "format": CHECKPOINT_FORMAT,
            "space": self.space.to_dict(),
            "policy": asdict(self.policy_cfg),
            "train": asdict(self.train_cfg),
            "seed": self.seed,
            "iterations": self.iterations_done,
        }
        tmp = d / "model.pt.tmp"
        torch.save(
            {"forward": self.forward_policy.state_dict(), "backward": self.backward_policy.state_dict(),
             "log_z": self.log_z.detach().cpu(),
             **({"optimizer": self._opt.state_dict()} if getattr(self, "_opt", None) is not None else {})},
            tmp,
        )
        tmp.replace(d / "model.pt")
        (d / "config.json").write_text(json.dumps(config, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "cpu") -> CrystalGFN:
        d = Path(directory)
        if not (d / "config.json").exists() or not (d / "model.pt").exists():
            raise FileNotFoundError(f"{d} is not a Crystal-GFN checkpoint (needs config.json and model.pt)")
        fix = "restore the file or train the generator again"
        try:
            config = json.loads((d / "config.json").read_text())
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{d / 'config.json'}: damaged Crystal-GFN config ({_first_line(exc)}); {fix}") from None
        if config.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{d}: checkpoint format {config.get('format')} is not supported (expected {CHECKPOINT_FORMAT})")
        try:
            state = torch.load(d / "model.pt", map_location=device, weights_only=True)
        except Exception as exc:
            raise ValueError(f"{d / 'model.pt'}: damaged Crystal-GFN weights ({_first_line(exc)}); {fix}") from None
        try:
            model = cls(
                SearchSpace.from_dict(config["space"]),
                device=device,
                seed=config.get("seed", 0),
                policy=PolicyConfig(**config["policy"]),
                train=TrainConfig(**config["train"]),
            )
            model.forward_policy.load_state_dict(state["forward"])
            model.backward_policy.load_state_dict(state["backward"])
            with torch.no_grad():
                model.log_z.copy_(state["log_z"].to(device))
            if "optimizer" in state:  # older checkpoints have none: training then starts a fresh Adam
                model._load_optimizer(state["optimizer"])
            model.iterations_done = int(config.get("iterations", 0))
        except Exception as exc:
            raise ValueError(f"{d}: config.json and model.pt do not make a Crystal-GFN checkpoint "
                             f"({type(exc).__name__}: {_first_line(exc)}); {fix}") from None
        return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
