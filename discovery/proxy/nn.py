"""Neural building blocks: a batched (vectorised) deep ensemble and the composition encoder.

Ensemble parameters carry a leading member axis E, so E networks train and predict in one pass
with batched matrix products (``torch.baddbmm``) instead of a Python loop over members.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from discovery.proxy.features import N_ELEMENTS, N_GROUPS, N_PERIODS, N_SPACE_GROUPS, element_table


class BatchedLinear(nn.Module):
    """E independent linear layers: (E, n, d_in) → (E, n, d_out)."""

    def __init__(self, n_members: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n_members, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_members, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def _element_buffers() -> tuple[Tensor, Tensor, Tensor]:
    table = element_table()
    return (torch.from_numpy(table.props), torch.from_numpy(table.period), torch.from_numpy(table.group))


class EnsembleNet(nn.Module):
    """The paper's proxy, E members at once.

    Per member: element vector = [embedding(Z), embedding(period), embedding(group), W·properties],
    pooled over the composition with atom fractions; a space-group embedding; a lattice MLP on
    standardised lattice features; these plus standardised dense features (composition statistics
    and frozen composition-encoder outputs) go into an MLP head that outputs, per target, a mean
    and a log-variance (both in standardised units).
    """

    props: Tensor
    period: Tensor
    group: Tensor
    dense_mask: Tensor

    def __init__(self, *, n_members: int, n_targets: int, n_lattice: int, n_dense: int, hidden: int = 256,
                 n_layers: int = 3, dropout: float = 0.1, dense_keep: float = 1.0, d_z: int = 24, d_period: int = 4, d_group: int = 4,
                 d_props: int = 16, d_sg: int = 12, d_lattice: int = 32) -> None:
        super().__init__()
        e = n_members
        props, period, group = _element_buffers()
        self.register_buffer("props", props, persistent=False)
        self.register_buffer("period", period, persistent=False)
        self.register_buffer("group", group, persistent=False)
        # feature bagging: each member sees its own random share ``dense_keep`` of the dense features
        self.register_buffer("dense_mask", (torch.rand(e, 1, n_dense) < dense_keep).float())
        self.z_emb = nn.Parameter(torch.randn(e, N_ELEMENTS, d_z) * 0.1)
        self.period_emb = nn.Parameter(torch.randn(e, N_PERIODS, d_period) * 0.1)
        self.group_emb = nn.Parameter(torch.randn(e, N_GROUPS + 1, d_group) * 0.1)
        self.prop_proj = nn.Parameter(torch.randn(e, props.shape[1], d_props) / math.sqrt(props.shape[1]))
        self.sg_emb = nn.Parameter(torch.randn(e, N_SPACE_GROUPS, d_sg) * 0.1)
        self.lattice1 = BatchedLinear(e, n_lattice, d_lattice)
        self.lattice2 = BatchedLinear(e, d_lattice, d_lattice)
        d_in = d_z + d_period + d_group + d_props + d_sg + d_lattice + n_dense
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers += [BatchedLinear(e, d_in if i == 0 else hidden, hidden), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        self.out = BatchedLinear(e, hidden, 2 * n_targets)
        self.n_members, self.n_targets = e, n_targets

    def element_vectors(self) -> Tensor:
        """(E, 95, D) element vectors of every member."""
        e = self.n_members
        return torch.cat([
            self.z_emb, self.period_emb[:, self.period], self.group_emb[:, self.group],
            torch.matmul(self.props.expand(e, -1, -1), self.prop_proj),
        ], dim=-1)

    def forward(self, fractions: Tensor, space_group: Tensor, lattice: Tensor, dense: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs with a leading member axis: fractions (E, n, 95), space_group (E, n) int64 in 0 … 229,
        lattice (E, n, L) and dense (E, n, D) standardised. Returns mean and log-variance, (E, n, m)."""
        pooled = torch.bmm(fractions, self.element_vectors())
        members = torch.arange(self.n_members, device=space_group.device)[:, None]
        sg = self.sg_emb[members, space_group]
        lat = self.lattice2(torch.nn.functional.silu(self.lattice1(lattice)))
        h = self.body(torch.cat([pooled, sg, torch.nn.functional.silu(lat), dense * self.dense_mask], dim=-1))
        out = self.out(h)
        return out[..., : self.n_targets], out[..., self.n_targets:].clamp(-10.0, 6.0)


class CompositionEncoder(nn.Module):
    """Composition → (n, d_out) embedding, pre-trained on composition-only formation energies and gaps.

    Inputs: atom fractions (n, 95) and composition statistics (n, S), raw (standardised inside with
    the saved ``stats_mean``/``stats_std``). ``forward`` returns standardised predictions (n, heads);
    ``features`` returns the embedding and the predictions in the targets' units (eV/atom, eV).
    """

    props: Tensor
    period: Tensor
    group: Tensor
    stats_mean: Tensor
    stats_std: Tensor
    target_mean: Tensor
    target_std: Tensor

    def __init__(self, *, n_stats: int, n_heads: int = 2, hidden: int = 256, d_out: int = 64, d_emb: int = 32,
                 variance: bool = False) -> None:
        super().__init__()
        props, period, group = _element_buffers()
        self.register_buffer("props", props, persistent=False)
        self.register_buffer("period", period, persistent=False)
        self.register_buffer("group", group, persistent=False)
        self.z_emb = nn.Embedding(N_ELEMENTS, d_emb)
        self.period_emb = nn.Embedding(N_PERIODS, 8)
        self.group_emb = nn.Embedding(N_GROUPS + 1, 8)
        self.prop_proj = nn.Linear(props.shape[1], d_emb)
        self.register_buffer("stats_mean", torch.zeros(n_stats))
        self.register_buffer("stats_std", torch.ones(n_stats))
        self.register_buffer("target_mean", torch.zeros(n_heads))
        self.register_buffer("target_std", torch.ones(n_heads))
        d_elem = 2 * d_emb + 16
        self.mlp = nn.Sequential(
            nn.Linear(d_elem + n_stats, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, d_out), nn.SiLU(),
        )
        self.head = nn.Linear(d_out, n_heads)
        # optional log-variance head: how hard a composition is, learned from the large composition-only sets
        # (trained on the detached embedding, so that it does not change the mean's features)
        self.var_head = (nn.Sequential(nn.Linear(d_out, d_out), nn.SiLU(), nn.Linear(d_out, n_heads))
                         if variance else None)
        self.config: dict[str, int | bool] = {"n_stats": n_stats, "n_heads": n_heads, "hidden": hidden,
                                              "d_out": d_out, "d_emb": d_emb, "variance": variance}

    @property
    def n_features(self) -> int:
        """Width of :meth:`features`: embedding, predictions and (with a variance head) log std."""
        return int(self.config["d_out"]) + int(self.config["n_heads"]) * (2 if self.var_head is not None else 1)

    def embed(self, fractions: Tensor, stats: Tensor) -> Tensor:
        elem = torch.cat([self.z_emb.weight, self.period_emb(self.period), self.group_emb(self.group),
                          self.prop_proj(self.props)], dim=-1)
        x = torch.cat([fractions @ elem, (stats - self.stats_mean) / self.stats_std], dim=-1)
        return self.mlp(x)

    def forward(self, fractions: Tensor, stats: Tensor) -> Tensor:
        return self.head(self.embed(fractions, stats))

    @torch.no_grad()
    def features(self, fractions: Tensor, stats: Tensor, *, chunk: int = 8192) -> Tensor:
        """(n, n_features): embedding, predictions in target units and, with a variance head, the
        predicted log standard deviations (log of target units); without gradients."""
        was = self.training
        self.eval()
        parts = []
        for i in range(0, fractions.shape[0], chunk):
            h = self.embed(fractions[i:i + chunk], stats[i:i + chunk])
            cols = [h, self.head(h) * self.target_std + self.target_mean]
            if self.var_head is not None:
                cols.append(0.5 * self.var_head(h).clamp(-10, 6) + self.target_std.log())  # log σ, target units
            parts.append(torch.cat(cols, dim=-1))
        self.train(was)
        return torch.cat(parts) if parts else torch.zeros(0, self.n_features)
