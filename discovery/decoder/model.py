"""The score network: a small message-passing network on the periodic multigraph with two heads.

* position head: per-atom Cartesian vectors ``v_i = Σ_j w_ij (r_j − r_i)/|r_j − r_i|`` (equivariant), turned
  into a fractional score ``L v_i`` (L: row lattice matrix) and divided by σ_x — the score of the noised
  fractional positions, shape (N, 3);
* lattice head: from the mean-pooled atom states and the lattice features, the score on
  ``y = (ln a, ln b, ln c, α, β, γ)`` divided by σ_L, shape (B, 6); the sampler projects it onto the free
  parameters with ``Tᵀ``.

Both noise levels are given as ``t = ln(σ/σ_max) / ln(σ_min/σ_max)`` ∈ [0, 1] per structure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from discovery.decoder.graph import lattice_matrix, radius_graph


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Network size and noise scales. σ_x in fractional units (wrapped), σ_L in ln-length / radian units."""

    hidden: int = 64
    layers: int = 3
    n_rbf: int = 16
    cutoff: float = 5.0  # Å
    sigma_x_max: float = 0.5
    sigma_x_min: float = 0.005
    sigma_l_max: float = 0.2
    sigma_l_min: float = 0.002
    max_z: int = 100

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(slots=True)
class GraphBatch:
    """A batch of B noised cells with N atoms in all.

    ``z`` (N,) atomic numbers; ``frac`` (N, 3) fractional; ``batch`` (N,) cell index; ``y`` (B, 6) lattice
    (ln Å, rad); ``system`` (B,) lattice-system index; ``log_l0`` (B,) ln of the volume prior's length scale
    (ln Å, ⅓ ln of the prior volume); ``t_x``, ``t_l`` (B,) noise levels in [0, 1].
    """

    z: torch.Tensor
    frac: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    system: torch.Tensor
    log_l0: torch.Tensor
    t_x: torch.Tensor
    t_l: torch.Tensor


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class ScoreNet(nn.Module):
    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        h = cfg.hidden
        self.embed = nn.Embedding(cfg.max_z + 1, h)
        n_cond = 2 * 8 + 6 + 6  # noise features, lattice system one-hot, normalised lattice
        self.cond = _mlp(n_cond, h, h)
        self.register_buffer("rbf_centers", torch.linspace(0.0, cfg.cutoff, cfg.n_rbf))
        self.messages = nn.ModuleList(_mlp(2 * h + cfg.n_rbf, h, h) for _ in range(cfg.layers))
        self.updates = nn.ModuleList(_mlp(2 * h, h, h) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.layers))
        self.pos_head = _mlp(2 * h + cfg.n_rbf, h, 1)
        self.lat_head = nn.Sequential(nn.Linear(2 * h, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 6))

    @staticmethod
    def _noise_features(t: torch.Tensor) -> torch.Tensor:
        k = torch.arange(1, 5, dtype=t.dtype)
        return torch.cat([torch.sin(math.pi * k * t[:, None]), torch.cos(math.pi * k * t[:, None])], -1)

    def lattice_features(self, g: GraphBatch) -> torch.Tensor:
        y = g.y.clone()
        y[:, :3] = y[:, :3] - g.log_l0[:, None]
        y[:, 3:] = y[:, 3:] - math.pi / 2
        onehot = nn.functional.one_hot(g.system, 6).to(y.dtype)
        return torch.cat([self._noise_features(g.t_x), self._noise_features(g.t_l), onehot, y], -1)

    def forward(self, g: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``(pos (N, 3) fractional, lattice (B, 6) on y)`` already divided by σ_x and σ_L."""
        cfg = self.config
        dt = self.embed.weight.dtype  # inputs are cast to the weights' dtype (float32 training, any sampling)
        g = GraphBatch(g.z, g.frac.to(dt), g.batch, g.y.to(dt), g.system, g.log_l0.to(dt), g.t_x.to(dt),
                       g.t_l.to(dt))
        lat = lattice_matrix(g.y)
        with torch.no_grad():
            src, dst, vec = radius_graph(g.frac.detach(), lat.detach(), g.batch, cfg.cutoff)
        dist = vec.norm(dim=-1, keepdim=True)
        width = cfg.cutoff / cfg.n_rbf
        env = 0.5 * (torch.cos(math.pi * dist / cfg.cutoff) + 1.0)
        rbf = torch.exp(-((dist - self.rbf_centers) / width) ** 2) * env
        cond = self.cond(self.lattice_features(g))
        h = self.embed(g.z) + cond[g.batch]
        n = h.shape[0]
        for msg, upd, norm in zip(self.messages, self.updates, self.norms, strict=True):
            m = msg(torch.cat([h[src], h[dst], rbf], -1)) * env
            agg = torch.zeros(n, m.shape[1], dtype=m.dtype).index_add_(0, src, m) / 16.0
            h = norm(h + upd(torch.cat([h, agg], -1)))
        w = self.pos_head(torch.cat([h[src], h[dst], rbf], -1)) * env
        v = torch.zeros(n, 3, dtype=h.dtype).index_add_(0, src, w * vec / dist.clamp_min(1e-6)) / 4.0
        pos = torch.einsum("nij,nj->ni", lat[g.batch], v)
        sigma_x = cfg.sigma_x_max * (cfg.sigma_x_min / cfg.sigma_x_max) ** g.t_x
        sigma_l = cfg.sigma_l_max * (cfg.sigma_l_min / cfg.sigma_l_max) ** g.t_l
        b = g.y.shape[0]
        counts = torch.bincount(g.batch, minlength=b).clamp_min(1).to(h.dtype)
        pooled = torch.zeros(b, h.shape[1], dtype=h.dtype).index_add_(0, g.batch, h) / counts[:, None]
        lat_score = self.lat_head(torch.cat([pooled, cond], -1))
        return pos / sigma_x[g.batch, None], lat_score / sigma_l[:, None]
