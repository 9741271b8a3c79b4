"""What the discovery benchmark runs: its settings, the loop's campaign config, one evaluated call."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from discovery.crystal import Crystal
from discovery.loop import SPLIT_RULES, SplitRule

if TYPE_CHECKING:
    from discovery.gfn import SearchSpace

STRATEGIES: tuple[str, ...] = ("loop", "random", "random_proxy", "gfn_once")
"""The strategies of the ``hull`` and ``formation_energy`` objectives (their default)."""
SUN_STRATEGIES: tuple[str, ...] = (*STRATEGIES, "substitution_once")
"""The strategies of the ``sun`` objective (its default); ``substitution_once`` needs :mod:`discovery.substitution`."""
ALL_STRATEGIES: tuple[str, ...] = SUN_STRATEGIES
Objective = Literal["hull", "formation_energy", "sun"]
OBJECTIVES: tuple[str, ...] = ("hull", "formation_energy", "sun")
HIT_THRESHOLDS: tuple[float, ...] = (0.1, 0.0)

# The benchmark's search space: the paper's 22 elements, but small cells (≤ 3 elements, ≤ 8 atoms per
# element, ≤ 12 atoms, lengths 3–9 Å) so that one CHGNet relaxation takes seconds on one core.
BENCH_SPACE: dict[str, Any] = {
    "elements": ["H", "Li", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "V", "Mn",
                 "Fe", "Co", "Ni", "Cu", "Se"],
    "min_elements": 2, "max_elements": 3, "max_atoms_per_element": 8, "max_atoms": 12,
    "length_range": [3.0, 9.0], "angle_range": [60.0, 120.0],
}

DEFAULT_BUDGET: dict[str, int] = {"hull": 24, "formation_energy": 24, "sun": 60}
"""Oracle calls per strategy and seed when ``--budget`` is not given. ``sun``: 60 calls × 5 strategies × 3 seeds
= 900 CHGNet relaxations on the batched engine, three loop rounds of 20 per seed: 22 min 57 s on 2 cores
(docs/results/discovery.md), with twice the labels per round of the earlier 30."""
DEFAULT_SEEDS: dict[str, int] = {"hull": 2, "formation_energy": 2, "sun": 3}
"""Seeds (independent repetitions) when ``--seeds`` is not given. ``sun`` reports paired-bootstrap CIs over seeds:
over 2 seeds a resample is one of 3 distinct pairs and a CI is the two seeds' own range; 3 seeds give 10."""
DEFAULT_RATTLE: dict[str, float] = {"hull": 0.0, "formation_energy": 0.0, "sun": 0.05}
"""``decode_rattle`` (Å) of the CHGNet oracle when ``--rattle`` is not given: decoded rows' atoms are moved off
their special positions before relaxing (:mod:`oracles.decode`); the earlier objectives keep their figures."""
DEFAULT_SPLIT_RULE: dict[str, str] = {"hull": "proportional", "formation_energy": "proportional", "sun": "thompson"}
"""The loop's ``sources.substitution.split_rule`` when ``--split-rule`` is not given (only ``sun`` has sources)."""
DEFAULT_MAX_SD: dict[str, float | None] = {"hull": None, "formation_energy": None, "sun": 0.5}
"""``acquisition.max_sd`` (eV/atom) of the loop's config (its generator reward and batch ranking, and the round-0
scoring of random + proxy and GFN once) when ``--max-sd`` is not given; the earlier objectives keep their figures."""
DEFAULT_FAMILY_WEIGHT: dict[str, float] = {"hull": 0.0, "formation_energy": 0.0, "sun": 3.0}
"""The loop's ``sources.substitution.family_weight`` (eV/atom per unit of success probability) when
``--family-weight`` is not given. 3 was chosen on a replay of the stored rounds 1–2 of three loops run without
it (``python -m orchestration.bench_discovery.rounds runs/bench-sun60-ts/loop-s{0,1,2} --family-weights
0,1,2,3,5``, no oracle call): at 1 the diversity term against earlier batches still kept 91 of 108 substitution
picks away from the families that had worked, at 3 it took 32 from them, at 5 half the picks."""
SUN_ORACLE_WEIGHT = 10.0
"""``proxy.oracle_weight`` of the loop under ``--objective sun`` unless ``oracle_weight`` is given."""


def default_strategies(objective: str) -> tuple[str, ...]:
    """The strategies an objective runs when none are named."""
    return SUN_STRATEGIES if objective == "sun" else STRATEGIES


def oracle_optimizer(settings: BenchSettings) -> dict[str, Any]:
    """The CHGNet oracle's optimizer settings of the benchmark: nothing for FIRE (the oracle's default, so that
    the loop's config stays as before), else the optimizer on the batched engine."""
    return {} if settings.optimizer == "FIRE" else {"optimizer": settings.optimizer, "engine": "batched"}


@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark runs. ``budget``: oracle calls per strategy and seed; ``strategies``: empty for the
    objective's default (:func:`default_strategies`); ``oracle_weight``: None for the objective's default (1, or
    :data:`SUN_ORACLE_WEIGHT` under ``sun``)."""

    budget: int = 24
    seeds: int = 2
    rounds: int = 3
    candidates_per_round: int = 300
    gfn_iterations_first: int = 150
    gfn_iterations_per_round: int = 50
    workers: int = 2
    device: str = "cpu"
    fmax: float = 0.1
    steps: int = 200
    oracle_timeout_s: float = 300.0
    strategies: tuple[str, ...] = ()
    space: dict[str, Any] = field(default_factory=lambda: dict(BENCH_SPACE))
    reference: str = "mp20+matbench"
    objective: Objective = "formation_energy"
    oracle_weight: float | None = None  # proxy.oracle_weight of the loop (rounds ≥ 1 only: baselines do not depend on it)
    seed_rows: int | None = None  # seed_data.max_rows: fewer labelled MP-20 rows for the round-0 proxy (a cold start)
    substitution_share: float = 0.5  # sun: the loop's sources.substitution.share (1.0: substitutions only, every round)
    decode_rattle: float = 0.0  # Å: the CHGNet oracle's decode_rattle, for every strategy (0: off)
    optimizer: Literal["FIRE", "BFGS"] = "FIRE"  # the CHGNet oracle's optimizer, for every strategy (both on the batched engine)
    split_rule: SplitRule = "proportional"  # sun: sources.substitution.split_rule
    max_sd: float | None = None  # eV/atom: the loop config's acquisition.max_sd (None: σ uncapped)
    family_weight: float = 0.0  # sun: sources.substitution.family_weight (rounds ≥ 1 only: baselines do not depend on it)
    family_std: float = 0.0  # sun: proxy.residual_family_std (rounds ≥ 1 only, like the residual model itself)

    @property
    def relative_to_hull(self) -> str | None:
        """The acquisition's hull (``acquisition.relative_to_hull``), or None for plain formation energy."""
        return self.reference if self.objective in ("hull", "sun") else None

    @property
    def loop_oracle_weight(self) -> float:
        """The loop's ``proxy.oracle_weight``."""
        if self.oracle_weight is not None:
            return self.oracle_weight
        return SUN_ORACLE_WEIGHT if self.objective == "sun" else 1.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose {', '.join(OBJECTIVES)}")
        if not self.strategies:
            object.__setattr__(self, "strategies", default_strategies(self.objective))
        unknown = sorted(set(self.strategies) - set(ALL_STRATEGIES))
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(ALL_STRATEGIES)}")
        if self.budget < self.rounds:
            raise ValueError(f"budget ({self.budget}) must be at least rounds ({self.rounds})")
        if self.candidates_per_round < math.ceil(self.budget / self.rounds):
            raise ValueError("candidates_per_round must be at least the per-round batch (budget / rounds)")
        if self.reference not in ("mp20+li-fe-o", "mp20+matbench"):
            raise ValueError(f"unknown hull reference {self.reference!r}; choose mp20+matbench or mp20+li-fe-o")
        if self.seed_rows is not None and self.seed_rows < 1:
            raise ValueError(f"seed_rows must be at least 1, not {self.seed_rows}")
        if not 0 <= self.substitution_share <= 1:
            raise ValueError(f"substitution_share must be in [0, 1], not {self.substitution_share}")
        if not 0 <= self.decode_rattle <= 0.5:
            raise ValueError(f"decode_rattle must be in [0, 0.5] Å, not {self.decode_rattle}")
        if self.optimizer not in ("FIRE", "BFGS"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose FIRE or BFGS")
        if self.split_rule not in SPLIT_RULES:
            raise ValueError(f"unknown split rule {self.split_rule!r}; choose {' or '.join(SPLIT_RULES)}")
        if self.max_sd is not None and not self.max_sd > 0:
            raise ValueError(f"max_sd must be positive (eV/atom), not {self.max_sd}")
        if not self.family_weight >= 0:
            raise ValueError(f"family_weight must be at least 0 (eV/atom), not {self.family_weight}")
        if not self.family_std >= 0:
            raise ValueError(f"family_std must be at least 0 (eV/atom), not {self.family_std}")
        if self.oracle_weight is not None and self.oracle_weight < 1:
            raise ValueError(f"oracle_weight must be at least 1, not {self.oracle_weight}")


@dataclass
class Evaluated:
    """One oracle call of a strategy: the candidate, the result status and labels (eV/atom), the relaxed CIF.

    ``round`` and ``source`` (``generator``, ``substitution``, ``random``) say where the candidate came from;
    ``predicted``: the proxy's formation energy (eV/atom) for it before the oracle labelled it (NaN if unknown)."""

    crystal: Crystal
    status: str
    e_above_hull: float
    formation_energy: float
    relaxed_cif: str | None
    round: int = 0
    source: str = "generator"
    predicted: float = float("nan")


# -- the loop as a campaign -------------------------------------------------------------------------
def sun_loop_features(settings: BenchSettings) -> dict[str, dict[str, Any]]:
    """The loop's learning features under ``--objective sun``, per campaign-config section (merged into the
    sections :func:`campaign_config` writes): acquisition on the predicted distance to the reference hull with
    a novelty penalty (eV/atom off the score), half of each round from substitutions into near-hull structures
    (adaptive split), a residual proxy weighted towards oracle labels, a generator trained afresh each round
    with labelled candidates replayed, and selection that looks across rounds and skips tried formulas.
    The one place to tune what the S.U.N. benchmark's loop does."""
    return {
        "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 0.125, "relative_to_hull": settings.reference,
                        **({"max_sd": settings.max_sd} if settings.max_sd is not None else {})},
        "novelty": {"enabled": True, "known_penalty": 1.0, "tried_penalty": 1.0},
        "sources": {"substitution": {"share": settings.substitution_share,
                                     "adaptive": 0 < settings.substitution_share < 1, "min_share": 0.1,
                                     "split_rule": settings.split_rule, "family_weight": settings.family_weight,
                                     "candidates": settings.candidates_per_round, "near_hull_at_most": 0.05,
                                     "partial": True}},
        "proxy": {"residual": True, "oracle_weight": settings.loop_oracle_weight,
                  **({"residual_family_std": settings.family_std} if settings.family_std > 0 else {})},
        "generator": {"retrain": "fresh", "offline_replay": True},
        "selection": {"method": "mmr", "diversity": 0.5, "across_rounds": True, "skip_tried_formulas": True},
    }


def campaign_config(settings: BenchSettings, seed: int, directory: Path) -> dict[str, Any]:
    """The campaign config (as YAML data) of the full loop for one seed."""
    batch = math.ceil(settings.budget / settings.rounds)
    weight = settings.loop_oracle_weight
    config: dict[str, Any] = {
        "name": f"bench-discovery-s{seed}",
        "description": "matloop bench discovery: full loop",
        "seed": seed,
        "targets": [{"name": "formation_energy_per_atom", "goal": "minimize"}],
        "search_space": settings.space,
        "seed_data": {"dataset": "mp20", **({"max_rows": settings.seed_rows} if settings.seed_rows else {})},
        "proxy": {"members": 5, "hidden": 128, "layers": 3, "epochs": 60, "warm_start": True,
                  **({"oracle_weight": weight} if weight != 1.0 else {})},
        "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 0.125,
                        **({"relative_to_hull": settings.relative_to_hull} if settings.relative_to_hull else {})},
        "generator": {"iterations_first_round": settings.gfn_iterations_first,
                      "iterations_per_round": settings.gfn_iterations_per_round, "device": settings.device,
                      "hyper": {"hidden": 128, "layers": 2, "batch_size": 32}},
        "candidates_per_round": settings.candidates_per_round,
        "batch_size": batch,
        "selection": {"method": "mmr", "diversity": 0.5},
        "oracle": {"name": "chgnet", "settings": {"fmax": settings.fmax, "steps": settings.steps, "device": settings.device,
                                                  "reference": settings.reference,
                                                  **({"decode_rattle": settings.decode_rattle}
                                                     if settings.decode_rattle else {}),
                                                  **oracle_optimizer(settings)},
                   "retries": 1, "retry_delay_s": 1, "timeout_s": settings.oracle_timeout_s},
        "rounds": settings.rounds,
        "stopping": {"max_oracle_calls": settings.budget},
        "success": {"metric": "e_above_hull", "at_most": 0.1},
        "campaign_dir": str(directory),
        "tracking": {"enabled": False},
        "runner": {"kind": "local", "max_workers": settings.workers},
    }
    if settings.objective == "sun":
        for section, values in sun_loop_features(settings).items():
            config[section] = {**config.get(section, {}), **values}
    return config


def search_space(settings: BenchSettings) -> SearchSpace:
    """The benchmark's generator search space (``settings.space``), without the loop's other sections."""
    from orchestration.config import CampaignConfig, build_search_space

    plain = replace(settings, objective="formation_energy", strategies=STRATEGIES)
    return build_search_space(CampaignConfig.model_validate(campaign_config(plain, 0, Path("."))))
