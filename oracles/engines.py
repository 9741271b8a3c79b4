"""Which relaxation engine a CHGNet oracle uses when its settings leave ``engine`` out.

Kept apart from :mod:`oracles.chgnet_worker` (which imports torch and CHGNet) so that a campaign config can be
hashed without loading a model (:func:`orchestration.config.schema.stored_reading`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

Engine = Literal["batched", "ase"]
DEFAULT_ENGINE: Engine = "batched"
"""The CHGNet oracle's relaxation engine when the settings leave it out and ask for nothing ASE-only: the
batched engine was faster in every run measured on the 2-core box, from 1 structure per call to 64
(docs/benchmarks.md, "Default engine and campaigns"). It was ``"ase"`` before 2026-12-05."""
FORMER_DEFAULT_ENGINE: Engine = "ase"
"""The engine of a CHGNet oracle whose settings left it out before the default changed: campaigns stored
then keep it when they are resumed (:func:`orchestration.config.schema.stored_reading`)."""
ASE_ONLY_OPTIMIZERS = frozenset({"BFGS"})
"""``optimizer`` values that, with ``engine`` left out, resolve to the ASE engine: the batched engine ran only
torch-sim's FIRE until 2026-12-05 and configs written before then keep their engine; ``engine: batched`` with
``optimizer: BFGS`` runs ASE's BFGS on the batch (:mod:`oracles.batched.bfgs`)."""


def batched_cell_setting_fits(*, optimizer: str, relax_cell: bool, cell_filter: str) -> bool:
    """Whether the batched engine runs ``optimizer`` with this cell setting: its BFGS (:mod:`oracles.batched.bfgs`)
    is ASE's ``BFGS(UnitCellFilter)``, so it needs ``relax_cell`` and the unit filter; FIRE runs with any. The one
    rule behind the oracle settings' check (config field names) and :class:`oracles.batched.engine.EngineSettings`'s."""
    return optimizer != "BFGS" or (relax_cell and cell_filter == "unit")


def resolved_engine(settings: Mapping[str, Any]) -> Engine:
    """The engine a CHGNet oracle with these settings (as written, e.g. a campaign's ``oracle.settings``)
    relaxes with: ``engine`` when given; else ``"ase"`` when an ASE-only option is asked for (``optimizer``
    in :data:`ASE_ONLY_OPTIMIZERS`); else :data:`DEFAULT_ENGINE`."""
    engine = settings.get("engine")
    if engine is not None:
        return cast(Engine, engine)
    if settings.get("optimizer") in ASE_ONLY_OPTIMIZERS:
        return "ase"
    return DEFAULT_ENGINE
