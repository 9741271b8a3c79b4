"""The exact density oracle: mass density (g/cm³) straight from the crystal table (no relaxation).

Cheap and exact, for tests and the paper's density task. For a crystal-table row the density is
``Σ n_i·m_i / (N_A · V)`` with the conventional-cell counts and the cell volume from a, b, c (Å) and
α, β, γ (degrees); for a structure, pymatgen's ``Structure.density``. Targets: ``density`` (g/cm³),
``volume_per_atom`` (Å³/atom).

Sanity gate (:mod:`oracles.sanity`): a cell whose volume per atom is outside the physical bounds is
``invalid`` (its density is exact for the table row but no crystal has it: a density maximiser would
otherwise be rewarded for collapsing the lattice); a structure is also checked for isolated atoms (6 Å).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from oracles.base import Candidate, OracleResult, ProgressCallback, failed, library_versions
from oracles.sanity import Gates, check_structure, check_volume, gate_message

ORACLE_VERSION = "1"
GATES = Gates()


class DensitySettings(BaseModel):
    """The density oracle has no options; unknown settings are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DensityOracle:
    """Exact density from the crystal table (g/cm³)."""

    settings_model: ClassVar[type[BaseModel]] = DensitySettings
    name = "density"

    def __init__(self, **settings: Any) -> None:
        self.settings = DensitySettings(**settings)

    def evaluate(self, candidates: Sequence[Candidate], *, seed: int = 0,
                 progress: ProgressCallback | None = None) -> list[OracleResult]:
        prov = {"oracle": self.name, "oracle_version": ORACLE_VERSION, "settings": self.settings.model_dump(mode="json"),
                "sanity_gates": GATES.provenance(), "versions": library_versions()}
        out: list[OracleResult] = []
        for i, cand in enumerate(candidates, start=1):
            t0 = time.perf_counter()
            try:
                if cand.crystal is not None:
                    volume, n_atoms = cand.crystal.volume, cand.crystal.n_atoms
                    density = cand.crystal.density
                else:
                    assert cand.structure is not None
                    volume, n_atoms = float(cand.structure.volume), len(cand.structure)
                    density = float(cand.structure.density)
                valid = math.isfinite(volume) and volume > 0 and math.isfinite(density)
                refused = _gate(cand) if valid else None
                if not valid:
                    res = failed(cand.id, "invalid", f"the lattice gives no valid cell (volume {volume} Å³)")
                elif refused is not None:
                    res = failed(cand.id, "invalid", gate_message("input", refused))
                else:
                    res = OracleResult(candidate_id=cand.id, status="ok",
                                       targets={"density": density, "volume_per_atom": volume / n_atoms})
            except Exception as exc:  # e.g. an element without a mass
                res = failed(cand.id, "invalid", f"{type(exc).__name__}: {exc}")
            res.wall_time_s = time.perf_counter() - t0
            res.provenance = dict(prov)
            out.append(res)
            if progress is not None:
                progress(i, len(candidates))
        return out


def _gate(cand: Candidate) -> str | None:
    """Why the candidate's cell is unphysical (volume per atom; isolated atoms of a structure), or ``None``."""
    if cand.crystal is not None:
        return check_volume(cand.crystal.volume, cand.crystal.n_atoms, gates=GATES)
    assert cand.structure is not None
    return check_structure(cand.structure, gates=GATES)
