"""Forward and backward policies of the Crystal-GFN.

The forward policy is one MLP trunk with a categorical head over every discrete action of the
environment (space-group subspace, composition subspace) and a mixture-of-Betas head for the
lattice parameters. The backward policy is a separate MLP with a categorical head over the
backward actions of the space-group subspace (the composition and lattice subspaces have a single
parent per state in matloop's construction, see :mod:`discovery.gfn.env`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

N_LATTICE = 6  # a, b, c (Å), alpha, beta, gamma (degrees), normalised to [0, 1]
U_EPS = 1e-5


@dataclass(frozen=True)
class PolicyConfig:
    """Network sizes (paper: 3 × 256 MLPs, 5 Beta components, Beta parameters kept in a bounded range)."""

    hidden: int = 256
    layers: int = 3
    n_components: int = 5
    beta_min: float = 0.1
    beta_max: float = 100.0


def mlp(n_in: int, n_out: int, *, hidden: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.LeakyReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


class ForwardPolicy(nn.Module):
    """features (B, F) → discrete logits (B, D) and lattice mixture parameters (B, K, 1 + 2·6)."""

    def __init__(self, n_features: int, n_discrete: int, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_discrete = n_discrete
        k = cfg.n_components
        self.net = mlp(n_features, n_discrete + k * (1 + 2 * N_LATTICE), hidden=cfg.hidden, layers=cfg.layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(x)
        return out[:, : self.n_discrete], out[:, self.n_discrete :].reshape(len(x), self.cfg.n_components, -1)

    def _output_layer(self) -> nn.Module:
        *_, last = self.net._modules.values()  # self.net[-1] costs ~10 µs a call
        assert last is not None
        return last

    def trunk(self, x: Tensor) -> Tensor:
        """features (B, F) → last hidden layer (B, hidden), the input of every head."""
        for layer in list(self.net)[:-1]:  # not self.net[:-1], which builds a new Sequential per call
            x = layer(x)
        return x

    def logits(self, h: Tensor, lo: int, hi: int) -> Tensor:
        """Discrete logits ``[lo, hi)`` (B, hi − lo) from hidden ``h``: the same numbers as
        ``forward(x)[0][:, lo:hi]``, computing only those output units (a stage's actions)."""
        last = self._output_layer()
        assert isinstance(last, nn.Linear) and 0 <= lo <= hi <= self.n_discrete
        return nn.functional.linear(h, last.weight[lo:hi], last.bias[lo:hi])

    def lattice(self, h: Tensor) -> Tensor:
        """Lattice mixture parameters (B, K, 1 + 2·6) from hidden ``h`` (as ``forward(x)[1]``)."""
        last = self._output_layer()
        assert isinstance(last, nn.Linear)
        out = nn.functional.linear(h, last.weight[self.n_discrete :], last.bias[self.n_discrete :])
        return out.reshape(len(h), self.cfg.n_components, -1)


class BackwardPolicy(nn.Module):
    """features (B, F) → logits over backward actions (B, n_actions)."""

    def __init__(self, n_features: int, n_actions: int, cfg: PolicyConfig) -> None:
        super().__init__()
        self.net = mlp(n_features, n_actions, hidden=cfg.hidden, layers=cfg.layers)

    def forward(self, x: Tensor) -> Tensor:
        return torch.as_tensor(self.net(x))


class BetaMixture:
    """Mixture of products of Beta distributions over the 6 normalised lattice parameters.

    ``params``: (B, K, 1 + 2·6) raw outputs → weights (B, K), α and β (B, K, 6) in
    [beta_min, beta_max]. Only the free dimensions of each row (``free``: (B, 6) bool) enter the
    density; tied dimensions are derived from free ones by the lattice system.
    """

    def __init__(self, params: Tensor, cfg: PolicyConfig) -> None:
        self.log_w = torch.log_softmax(params[..., 0], dim=-1)
        span = cfg.beta_max - cfg.beta_min
        self.alpha = cfg.beta_min + span * torch.sigmoid(params[..., 1 : 1 + N_LATTICE])
        self.beta = cfg.beta_min + span * torch.sigmoid(params[..., 1 + N_LATTICE :])

    def log_prob(self, u: Tensor, free: Tensor) -> Tensor:
        """Log density (B,) of points ``u`` (B, 6) in the unit box of the free dimensions."""
        u = u.clamp(U_EPS, 1 - U_EPS)[:, None, :]
        dist = torch.distributions.Beta(self.alpha, self.beta, validate_args=False)  # ranges hold by construction
        comp = (dist.log_prob(u) * free[:, None, :].to(u.dtype)).sum(-1)  # (B, K)
        return torch.logsumexp(self.log_w + comp, dim=-1)

    def sample(self) -> Tensor:
        """(B, 6) samples in (0, 1) (torch's global generator); dimensions independent given the component."""
        k = torch.multinomial(self.log_w.exp(), 1)[:, 0]
        rows = torch.arange(len(k), device=k.device)
        u = torch.distributions.Beta(self.alpha[rows, k], self.beta[rows, k], validate_args=False).sample()
        return u.clamp(U_EPS, 1 - U_EPS)
