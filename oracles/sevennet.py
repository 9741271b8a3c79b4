"""The SevenNet oracle: the CHGNet oracle's pipeline (decode → relax → MP2020 formation energy → hull
distance, sanity gates, fault isolation) with SevenNet as the force field, relaxed by the batched torch-sim
engine (:mod:`oracles.batched`). Weights come from the ``sevenn`` wheel (:mod:`oracles.batched.sevennet`).

Energy scale: SevenNet-0 is trained on MPtrj, like CHGNet. ``mp2020_correction`` decides whether its
energies are taken as already on the MP2020 scale ("learned") or corrected with pymatgen's
``MaterialsProject2020Compatibility`` ("apply"); the default is the one with the smaller formation-energy
error against MP on 30 MP-20 validation structures (docs/benchmarks.md, "Batched relaxation (issue 17)").

Example (campaign YAML)::

    oracle:
      name: sevennet
      settings: {model: 7net-0, fmax: 0.1, steps: 200}
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from oracles.base import library_versions
from oracles.batched.run import engine_provenance
from oracles.batched.sevennet import SEVENNET_MODELS, SevenNetFactory, SevenNetName
from oracles.chgnet import ORACLE_VERSION, CHGNetOracle, CHGNetSettings, _mp20_kw
from oracles.reference import load_reference


class SevenNetSettings(CHGNetSettings):
    """Settings of the SevenNet oracle: those of the CHGNet oracle, plus ``model``; the engine is batched."""

    model: SevenNetName = Field("7net-0", description="pretrained SevenNet shipped in the sevenn wheel")
    engine: Literal["batched"] = Field("batched", description="SevenNet runs on the batched torch-sim engine only")
    mode: Literal["relax"] = "relax"
    mp2020_correction: Literal["learned", "apply"] = Field(
        "apply", description="'apply' (default for SevenNet): pymatgen's MaterialsProject2020Compatibility on "
                             "its energies; 'learned': take them as already on the MP2020 scale")


class SevenNetOracle(CHGNetOracle):
    """Relaxes candidates with SevenNet (batched, torch-sim) and labels formation energy and hull distance.

    Example::

        with SevenNetOracle(model="7net-0", steps=200) as oracle:
            results = oracle.evaluate(candidates, seed=0)
    """

    settings_model: ClassVar[type[BaseModel]] = SevenNetSettings
    name = "sevennet"

    def __init__(self, **settings: Any) -> None:
        model = SevenNetSettings(**settings).model
        super().__init__(calculator_factory=SevenNetFactory(model), **settings)

    def provenance(self) -> dict[str, Any]:
        ref = load_reference(self.settings.reference, **_mp20_kw(self.settings))
        versions = library_versions()
        scheme = ("pymatgen MaterialsProject2020Compatibility applied to the model energy"
                  if self.settings.mp2020_correction == "apply" else "MP2020 taken as learned by the model")
        return {"oracle": self.name, "oracle_version": ORACLE_VERSION, "model": "SevenNet",
                "model_version": SEVENNET_MODELS[self.settings.model],  # type: ignore[attr-defined]
                **engine_provenance(self.settings), "settings": self.settings.model_dump(mode="json"),
                "energy_correction": scheme, **ref.provenance(), "versions": versions}
