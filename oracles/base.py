"""The oracle interface: candidates in, one typed result document per candidate out.

An *oracle* scores a batch of candidates with an expensive, trusted method (CHGNet relaxation,
exact density, a dataset look-up, DFT). The campaign calls::

    results = get_oracle(name, **settings).evaluate(candidates, seed=round_seed)

and persists each result keyed by ``candidate_id``. Every oracle must honour this contract
(checked by the shared conformance tests in ``tests/oracles/test_conformance.py``):

* exactly one :class:`OracleResult` per candidate, in input order, with the candidate's id;
* a failure for one candidate is a result (status ``failed``/``invalid``/``unconverged``/
  ``timeout`` with a message), never an exception that loses the rest of the batch;
* the same candidates and ``seed`` give the same results (apart from timings).
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymatgen.core import Structure

from discovery.crystal import Crystal

Status = Literal["ok", "failed", "unconverged", "invalid", "timeout"]
"""``ok``: targets are trustworthy. ``unconverged``: hit the step cap (targets from the last step are
kept but should not be trusted blindly). ``invalid``: the candidate itself cannot be evaluated
(impossible composition/space-group pair, atoms too close, unknown element) or it, or what its
relaxation ended with, is not a physical crystal (an isolated atom, a volume per atom outside the
bounds of :mod:`oracles.sanity`). ``timeout``: the
per-candidate time limit ran out. ``failed``: anything else (model error, NaN energy, exploded or
collapsed structure, no match in a dataset)."""

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)`` is called after each candidate finishes (from the calling process)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One thing to evaluate: an id plus either a crystal-table row or a 3-D pymatgen structure."""

    id: str
    crystal: Crystal | None = None
    structure: Structure | None = None

    def __post_init__(self) -> None:
        if (self.crystal is None) == (self.structure is None):
            raise ValueError(f"candidate {self.id!r}: give exactly one of crystal or structure")

    @classmethod
    def from_crystal(cls, crystal: Crystal, *, id: str | None = None) -> Candidate:
        return cls(id=id or crystal.id, crystal=crystal)

    @classmethod
    def from_structure(cls, structure: Structure, *, id: str) -> Candidate:
        return cls(id=id, structure=structure)

    @property
    def reduced_formula(self) -> str:
        if self.crystal is not None:
            return self.crystal.reduced_formula()
        assert self.structure is not None
        return self.structure.composition.reduced_formula

    def candidate_seed(self, seed: int) -> int:
        """A per-candidate seed that depends only on ``seed`` and the id (not on batch order)."""
        return (zlib.crc32(self.id.encode()) ^ (seed * 2654435761)) % (2**31 - 1)


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class OracleResult(BaseModel):
    """The result document for one candidate (JSON-serialisable with ``model_dump_json``).

    ``targets`` holds the scored properties with these names and units when an oracle provides them:
    ``energy_per_atom`` (eV/atom, raw model energy), ``corrected_energy_per_atom`` (eV/atom, MP2020),
    ``formation_energy_per_atom`` (eV/atom, MP2020 scale), ``e_above_hull`` (eV/atom, signed: negative
    means below the reference hull), ``density`` (g/cm³), ``band_gap`` (eV). Non-finite values are
    stored as ``None``.
    """

    model_config = ConfigDict(extra="forbid")

    candidate_id: str
    status: Status
    message: str = ""
    targets: Mapping[str, float | None] = Field(default_factory=dict)
    structure_cif: str | None = None
    """Relaxed (or decoded, or given) structure as CIF text; ``None`` when there is none."""
    energies: list[float] = Field(default_factory=list)
    """Energy per atom (eV/atom) along the relaxation trajectory, one value per force evaluation."""
    n_steps: int = 0
    wall_time_s: float = 0.0
    provenance: dict[str, Any] = Field(default_factory=dict)

    @field_validator("targets", mode="before")
    @classmethod
    def _clean_targets(cls, v: Mapping[str, Any]) -> dict[str, float | None]:
        return {str(k): _finite_or_none(x) for k, x in (v or {}).items()}

    @field_validator("energies", mode="before")
    @classmethod
    def _clean_energies(cls, v: Sequence[float]) -> list[float]:
        return [float(x) for x in (v or []) if math.isfinite(float(x))]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def structure(self) -> Structure | None:
        """The structure as a pymatgen object (parsed from ``structure_cif``)."""
        return Structure.from_str(self.structure_cif, fmt="cif") if self.structure_cif else None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> OracleResult:
        return cls.model_validate(json.loads(text))


@runtime_checkable
class Oracle(Protocol):
    """Scores a batch of candidates; see the module docstring for the contract."""

    name: str

    def evaluate(
        self, candidates: Sequence[Candidate], *, seed: int = 0, progress: ProgressCallback | None = None
    ) -> list[OracleResult]: ...


def failed(candidate_id: str, status: Status, message: str, **fields: Any) -> OracleResult:
    """A result without targets (shorthand used by every oracle)."""
    return OracleResult(candidate_id=candidate_id, status=status, message=message, **fields)


def structure_to_cif(structure: Structure) -> str:
    """CIF text of a structure (symmetry not re-detected: P1 with all sites, exact round-trip)."""
    return str(structure.to(fmt="cif"))


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions recorded in every result's provenance."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("matloop", "pymatgen", "pyxtal", "chgnet", "torch", "ase"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            continue
    return out
