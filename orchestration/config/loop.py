"""Config sections of the learning loop: novelty in the acquisition, the substitution candidate source, and
the structure decoder. Every default keeps a campaign as it was before these sections existed (and its hash)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from discovery.loop import SplitRule
from oracles.decode import DecoderOptions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoveltyConfig(_Strict):
    """Penalties subtracted from the acquisition score (the generator's reward and the batch ranking alike)."""

    enabled: bool = False
    known_penalty: float = Field(default=1.0, ge=0, description=(
        "eV/atom off the score of a crystal whose reduced formula is known (the dense hull reference's "
        "formulas and the seed data's): a rediscovered compound is not a discovery"))
    tried_penalty: float = Field(default=1.0, ge=0, description=(
        "eV/atom off the score of a crystal whose reduced formula the campaign already sent to the oracle"))


class SubstitutionSource(_Strict):
    """Isovalent substitutions into relaxed near-hull structures (the seed data's and the campaign's own
    confirmed results), proposed as structures (no decoding step); see :mod:`discovery.substitution`."""

    share: float = Field(default=0.5, ge=0, le=1, description=(
        "share of each round's batch from substitutions (the first round's, or every round's when not adaptive)"))
    adaptive: bool = Field(default=True, description=(
        "from the second round on, split the batch between sources by their posterior S.U.N. rates so far "
        "(Beta(1, 1) per source; share_substitution = p_sub / (p_sub + p_gen), clipped to [min_share, 1 − min_share])"))
    min_share: float = Field(default=0.1, ge=0, le=0.5, description="the least share either source keeps")
    split_rule: SplitRule = Field(default="proportional", description=(
        "adaptive split: 'proportional' to the posterior mean rates, or 'thompson': the substitution share is "
        "P(p_sub > p_gen), the probability that substitutions are the better source (a clearly worse source drops "
        "to min_share); see discovery.loop.source_split"))
    family_weight: float = Field(default=0.0, ge=0, description=(
        "eV/atom per unit of success probability: from the second round on, a substitution's acquisition score "
        "gains family_weight × (its parent family's posterior S.U.N. rate − the prior's 1/3), and the family rate "
        "joins the proposal ranking; a family is the seed structure a proposal descends from (0: off). "
        "See discovery.loop.family_bonus"))
    candidates: int = Field(default=300, ge=1, description="substitution proposals per round (before ranking)")
    near_hull_at_most: float = Field(default=0.05, description=(
        "parents: seed structures with E_hull ≤ this (eV/atom), and the campaign's own converged results within it"))
    partial: bool = Field(default=True, description="also replace one Wyckoff orbit of an element (mixed compositions)")
    seed_structures: bool = Field(default=True, description="substitute into the seed data's near-hull structures")


class SourcesConfig(_Strict):
    """Where a round's candidates come from: the Crystal-GFN always; substitutions when configured."""

    substitution: SubstitutionSource | None = None


DecoderChoice = DecoderOptions
"""How crystal-table rows become 3-D structures before the oracle relaxes them: the oracles' own ``decoder``
setting (:class:`oracles.decode.DecoderOptions`), also accepted at the top level of a campaign config."""
