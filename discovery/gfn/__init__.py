"""Crystal-GFN: a constrained, vectorised GFlowNet over space group, composition and lattice."""

from discovery.gfn.model import CrystalGFN, TrainConfig, TrainReport, cosine_lr_factor
from discovery.gfn.policy import PolicyConfig
from discovery.gfn.rewards import (
    DensityReward,
    Reward,
    VolumePriorReward,
    boltzmann,
    densities,
    target_value,
    uniform_reward,
    volume_log_likelihood,
)
from discovery.gfn.space import SearchSpace

__all__ = [
    "CrystalGFN", "DensityReward", "PolicyConfig", "Reward", "SearchSpace", "TrainConfig", "TrainReport",
    "VolumePriorReward", "boltzmann", "cosine_lr_factor", "densities", "target_value", "uniform_reward", "volume_log_likelihood",
]
