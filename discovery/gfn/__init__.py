"""Crystal-GFN: a constrained, vectorised GFlowNet over space group, composition and lattice."""

from discovery.gfn.model import CrystalGFN, TrainConfig, TrainReport
from discovery.gfn.policy import PolicyConfig
from discovery.gfn.rewards import DensityReward, Reward, boltzmann, densities, target_value, uniform_reward
from discovery.gfn.space import SearchSpace

__all__ = [
    "CrystalGFN", "DensityReward", "PolicyConfig", "Reward", "SearchSpace", "TrainConfig", "TrainReport",
    "boltzmann", "densities", "target_value", "uniform_reward",
]
