"""The ``ase`` oracle: any ASE calculator, named by import path, with its own elemental references.

Settings (:class:`ASESettings`) name the calculator as data, e.g. in a campaign config::

    oracle:
      name: ase
      settings:
        calculator: "ase.calculators.emt:EMT"     # module:attribute (or module.attribute)
        calculator_kwargs: {}                     # keyword arguments of the calculator (JSON values)

The import path is imported with :mod:`importlib` (never a shell); the attribute must be an ASE
calculator class (a subclass of ``ase.calculators.calculator.BaseCalculator``) or a factory returning an
instance of one. Either problem is a validation error naming ``calculator`` (or ``calculator_kwargs``)
and the fix.

Each candidate is decoded (crystal-table rows, :mod:`oracles.decode`) or taken as given (structures),
checked by the sanity gates of :mod:`oracles.sanity` before and after, and relaxed with ASE by
:func:`oracles.relax.relax_structure` (``mode: static``: one energy of the input). Targets, per atom:

* ``energy_per_atom`` (eV/atom): the calculator's energy of the final structure, on **its own scale**;
* ``formation_energy_per_atom`` (eV/atom): ``(E − Σ n_i μ_i) / N`` against elemental references computed
  **with the same calculator and settings** (:func:`elemental_reference`): for each element the lowest
  energy per atom among ASE's reference crystal of the element and the fcc, bcc and hcp crystals at its
  volume per atom, each relaxed with cell relaxation (``elemental_structures: lowest``, the default: the
  calculator's own ground state among them, so no pure-element candidate in those structures lies below
  zero; EMT, for one, puts hcp Cu 0.9 meV/atom below fcc Cu), or ASE's reference crystal alone
  (``ase_reference``, as the GPAW oracle); for elements whose standard state is a diatomic gas (H, N, O,
  ...) the molecule in a box (positions relaxed). In ``mode: static`` the references are not relaxed
  either. The references are computed once per
  process for each calculator, keyword arguments and relaxation settings (:data:`_REFERENCES`). ``None``
  when an element has no reference the calculator can compute (the provenance says why), or with
  ``elemental_references: none``;
* ``e_above_hull`` (eV/atom, signed), with ``hull: elements`` (default): against the convex hull of the
  same calculator's elemental references alone, i.e. equal to the formation energy. No compound enters
  that hull, so it is a **lower bound** on the distance to the calculator's full hull (every phase it
  could add lies at or below zero). ``hull: none`` leaves it ``None``. A calculator's energies are
  **never** compared with the Materials Project scale of :mod:`oracles.reference`;
* ``density`` (g/cm³) and ``volume_per_atom`` (Å³/atom) of the final structure.

Every result's provenance names the calculator (``calculator``: the import path, ``calculator_class``,
``calculator_kwargs``, the version of the package that provides it), the settings, the elemental
references μ (eV/atom, with the structure each came from), what the hull is (``reference``) and the gates.
A failure of one candidate (an element the calculator does not know, a NaN energy, an exploded cell, a
timeout) is that candidate's result, never an exception that loses the batch. Candidates run in the calling
process, one at a time per oracle object (the campaign's ``runner.max_workers`` builds several): the time limit
is checked between optimizer steps, and a single calculator call still running ``hard_timeout_grace_s`` after
it is interrupted at its next Python bytecode (:mod:`oracles.deadline`); a call stuck inside compiled code
cannot be interrupted in-process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
from pymatgen.core import Composition, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from oracles.base import (
    Candidate,
    OracleResult,
    ProgressCallback,
    Status,
    failed,
    library_versions,
    structure_to_cif,
)
from oracles.deadline import TimeLimitExceeded, time_limit
from oracles.decode import DecodeError, DecodingFields, decode_crystal
from oracles.relax import RelaxFault, RelaxSettings, relax_structure
from oracles.sanity import Gates, check_structure, gate_message

ORACLE_VERSION = "1"
REFERENCE_NAME: Final = "same-calculator-elements"
"""``provenance["reference"]`` of every result: the hull of the calculator's own elemental references."""
MOLECULE_BOX_A: Final = (9.0, 9.2, 9.4)
"""Box (Å) of the diatomic references (as the GPAW oracle's)."""
POLYMORPHS: Final = ("fcc", "bcc", "hcp")
"""Crystals tried besides ASE's reference crystal of an element (same volume per atom, then relaxed)."""


def _split_path(path: str) -> tuple[str, str]:
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    return module, attr


def import_calculator(path: str) -> Any:
    """The object named by ``path`` (``module:attr`` or ``module.attr``), imported with importlib.

    Raises ``ValueError`` with the reason and the fix (the message names no field; callers add it)."""
    module, attr = _split_path(path.strip())
    if not module or not attr:
        raise ValueError(f"{path!r} is not an import path; write 'package.module:CalculatorClass', "
                         "e.g. 'ase.calculators.emt:EMT'")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module!r} ({exc}); install the package that provides the "
                         "calculator or correct the module path, e.g. 'ase.calculators.emt:EMT'") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module!r} has no attribute {attr!r}; correct the name after the colon, "
                             "e.g. 'ase.calculators.emt:EMT'")
        obj = getattr(obj, part)
    return obj


def _is_calculator_class(obj: Any) -> bool:
    from ase.calculators.calculator import BaseCalculator

    return isinstance(obj, type) and issubclass(obj, BaseCalculator)


class ASESettings(DecodingFields):
    """Every keyword of ``get_oracle('ase', ...)``: the calculator, relaxation and reference settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calculator: str = Field(description="import path of an ASE calculator class or factory, "
                                        "e.g. 'ase.calculators.emt:EMT'")
    calculator_kwargs: dict[str, JsonValue] = Field(default_factory=dict,
                                                    description="keyword arguments of the calculator")
    mode: Literal["relax", "static"] = "relax"
    fmax: float = Field(0.05, gt=0, description="force convergence criterion, eV/Å")
    steps: int = Field(300, ge=0, description="optimizer step cap per structure")
    timeout_s: float = Field(300.0, gt=0, description="wall-time limit per structure (decode + relax), s")
    hard_timeout_grace_s: float = Field(30.0, gt=0, description="slack after timeout_s before a calculator "
                                                                 "call running in Python is interrupted, s")
    relax_cell: bool = True
    optimizer: Literal["FIRE", "BFGS"] = "FIRE"
    cell_filter: Literal["unit", "frechet"] = "unit"
    max_volume_change: float = Field(4.0, gt=1, description="volume factor beyond which a cell exploded/collapsed")
    elemental_references: Literal["same_calculator", "none"] = Field(
        "same_calculator", description="'same_calculator': formation energies against elemental ground states "
                                       "relaxed with this calculator; 'none': no formation energy")
    elemental_structures: Literal["lowest", "ase_reference"] = Field(
        "lowest", description="'lowest': the lowest of ASE's reference crystal and fcc/bcc/hcp, each relaxed; "
                              "'ase_reference': ASE's reference crystal only (as the GPAW oracle)")
    hull: Literal["elements", "none"] = Field(
        "elements", description="'elements': e_above_hull against the hull of the calculator's own elemental "
                                "references (= the formation energy, a lower bound); 'none': not computed")
    neighbor_cutoff_A: float | None = Field(None, gt=0, description="sanity gate: every atom needs a neighbour "
                                                                    "within this distance, Å (default 6 Å)")

    @field_validator("calculator")
    @classmethod
    def _importable(cls, value: str) -> str:
        obj = import_calculator(value)
        if isinstance(obj, type) and not _is_calculator_class(obj):
            raise ValueError(f"{value!r} is the class {obj.__module__}.{obj.__qualname__}, not an ASE calculator "
                             "(a subclass of ase.calculators.calculator.BaseCalculator); name an ASE calculator "
                             "class, e.g. 'ase.calculators.emt:EMT'")
        if not callable(obj):
            raise ValueError(f"{value!r} is a {type(obj).__name__}, not an ASE calculator class or factory; name a "
                             "calculator class, e.g. 'ase.calculators.emt:EMT'")
        return value.strip()

    @model_validator(mode="after")
    def _kwargs_accepted(self) -> ASESettings:
        obj = import_calculator(self.calculator)
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):  # builtins without a signature: checked when the calculator is built
            return self
        try:
            signature.bind(**self.calculator_kwargs)
        except TypeError as exc:
            raise ValueError(f"calculator_kwargs do not fit {self.calculator!r} ({exc}); pass only its keyword "
                             f"arguments: {', '.join(signature.parameters) or 'none'}") from None
        return self

    def relax_settings(self, *, relax_cell: bool | None = None) -> RelaxSettings:
        return RelaxSettings(fmax=self.fmax, steps=self.steps, optimizer=self.optimizer, cell_filter=self.cell_filter,
                             relax_cell=self.relax_cell if relax_cell is None else relax_cell,
                             max_volume_change=self.max_volume_change)

    def calculator_key(self) -> str:
        """Digest of everything the energies depend on (calculator, its kwargs, relaxation settings)."""
        physics = {"calculator": self.calculator, "calculator_kwargs": self.calculator_kwargs, "mode": self.mode,
                   "elemental_structures": self.elemental_structures,
                   "fmax": self.fmax, "steps": self.steps, "optimizer": self.optimizer,
                   "cell_filter": self.cell_filter, "relax_cell": self.relax_cell}
        return hashlib.sha256(json.dumps(physics, sort_keys=True).encode()).hexdigest()[:16]


def build_calculator(settings: ASESettings) -> Any:
    """A new calculator instance; ``ValueError`` naming the field and the fix when it cannot be built."""
    from ase.calculators.calculator import BaseCalculator

    factory: Callable[..., Any] = import_calculator(settings.calculator)
    try:
        calc = factory(**settings.calculator_kwargs)
    except Exception as exc:
        raise ValueError(f"oracle 'ase': `calculator` {settings.calculator!r} could not be built with "
                         f"`calculator_kwargs` {settings.calculator_kwargs} ({type(exc).__name__}: {exc}); "
                         "fix calculator_kwargs") from exc
    if not isinstance(calc, BaseCalculator):
        raise ValueError(f"oracle 'ase': `calculator` {settings.calculator!r} returned a {type(calc).__name__}, not "
                         "an ASE calculator; name a calculator class or a factory that returns one")
    return calc


@functools.cache
def _calculator_version(path: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    top = _split_path(path)[0].split(".")[0]
    for dist in packages_distributions().get(top, [top]):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


# --- elemental references -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ElementReference:
    """One element's reference with this calculator: energy per atom (eV/atom), or why there is none."""

    symbol: str
    energy_per_atom: float | None
    structure: str = ""
    """Which structure gave the energy (e.g. 'fcc (ASE reference crystal)'), or what failed."""
    volume_per_atom: float | None = None

    def provenance(self) -> dict[str, Any]:
        return {"energy_per_atom": self.energy_per_atom, "structure": self.structure,
                "volume_per_atom": self.volume_per_atom}


_REFERENCES: dict[str, dict[str, ElementReference]] = {}
"""Per process: calculator key (:meth:`ASESettings.calculator_key`) → element → reference."""
_REFERENCE_LOCK = threading.Lock()


def _reference_states(symbol: str, *, polymorphs: bool = True) -> list[tuple[Any, bool, str]]:
    """The structures tried for an element: (atoms, relax the cell, description)."""
    from ase import Atoms
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states

    state: dict[str, Any] = reference_states[atomic_numbers[symbol]] or {}
    if state.get("symmetry") == "diatom":
        atoms = Atoms([symbol, symbol], positions=[[0.0, 0.0, 0.0], [0.0, 0.0, float(state["d"])]],
                      cell=list(MOLECULE_BOX_A), pbc=True)
        atoms.center()
        return [(atoms, False, f"{symbol}2 molecule in a {MOLECULE_BOX_A} Å box")]
    ref = bulk(symbol)  # raises for elements whose crystal ASE cannot build (no reference state or basis)
    out: list[tuple[Any, bool, str]] = [(ref, True, f"{state.get('symmetry', '?')} (ASE reference crystal)")]
    v = ref.get_volume() / len(ref)
    lattice = {"fcc": (4 * v) ** (1 / 3), "bcc": (2 * v) ** (1 / 3), "hcp": (4 * v / (3**0.5 * 1.633)) ** (1 / 3)}
    for kind in POLYMORPHS if polymorphs else ():
        if kind != state.get("symmetry"):
            out.append((bulk(symbol, kind, a=lattice[kind], **({"c": 1.633 * lattice[kind]} if kind == "hcp" else {})),
                        True, f"{kind} at the reference volume per atom"))
    return out


def _compute_reference(symbol: str, calculator: Any, settings: ASESettings) -> ElementReference:
    try:
        states = _reference_states(symbol, polymorphs=settings.elemental_structures == "lowest")
    except Exception as exc:
        return ElementReference(symbol, None, f"no reference structure: {type(exc).__name__}: {exc}")
    best: ElementReference | None = None
    errors: list[str] = []
    for atoms, cell, what in states:
        structure = AseAtomsAdaptor.get_structure(atoms)
        try:
            if settings.mode == "static" or settings.steps == 0:
                energy, final = _static_energy(structure, calculator), structure
            else:
                out = relax_structure(structure, calculator=calculator, settings=settings.relax_settings(relax_cell=cell))
                energy, final = out.energy_total, out.structure
                what += "" if out.converged else f" ({out.message})"
        except Exception as exc:
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
            continue
        per_atom = energy / len(final)
        if best is None or best.energy_per_atom is None or per_atom < best.energy_per_atom:
            best = ElementReference(symbol, per_atom, what, float(final.volume / len(final)))
    return best or ElementReference(symbol, None, "; ".join(errors) or "no structure")


def elemental_reference(symbols: Sequence[str], *, calculator: Any, settings: ASESettings) -> dict[str, ElementReference]:
    """The references of ``symbols`` for this calculator and settings, computed on first use (once per process)."""
    key = settings.calculator_key()
    with _REFERENCE_LOCK:  # one thread computes; the others then read (calculators need not be thread-safe)
        cache = _REFERENCES.setdefault(key, {})
        for symbol in sorted(set(symbols) - set(cache)):
            cache[symbol] = _compute_reference(symbol, calculator, settings)
        return {s: cache[s] for s in symbols}


def _static_energy(structure: Structure, calculator: Any) -> float:
    atoms = AseAtomsAdaptor.get_atoms(structure)
    calculator.reset()
    atoms.calc = calculator
    energy = float(atoms.get_potential_energy())
    if not math.isfinite(energy):
        raise RelaxFault("failed", f"the calculator returned a non-finite energy ({energy})")
    return energy


# --- the oracle ---------------------------------------------------------------------------------
class ASECalculatorOracle:
    """Relaxes candidates with any ASE calculator; formation energies against its own elemental references.

    Example::

        oracle = ASECalculatorOracle(calculator="ase.calculators.emt:EMT", fmax=0.05)
        results = oracle.evaluate([Candidate.from_structure(s, id="cu3al")], seed=0)
    """

    settings_model: ClassVar[type[BaseModel]] = ASESettings
    name = "ase"

    def __init__(self, **settings: Any) -> None:
        self.settings = ASESettings(**settings)
        self.calculator = build_calculator(self.settings)
        cutoff = self.settings.neighbor_cutoff_A
        self.gates = Gates(cutoff_source="default for oracles without a model cutoff") if cutoff is None else \
            Gates(cutoff_A=cutoff, cutoff_source="oracle setting neighbor_cutoff_A")
        self._lock = threading.Lock()

    def provenance(self) -> dict[str, Any]:
        cls = type(self.calculator)
        hull = ("convex hull of the calculator's own elemental references only: e_above_hull = formation energy, "
                "a lower bound on the distance to the calculator's full hull" if self.settings.hull == "elements"
                else "none: e_above_hull not computed")
        return {"oracle": self.name, "oracle_version": ORACLE_VERSION, "model": f"{cls.__module__}.{cls.__qualname__}",
                "calculator": self.settings.calculator, "calculator_class": f"{cls.__module__}.{cls.__qualname__}",
                "calculator_kwargs": self.settings.calculator_kwargs,
                "calculator_version": _calculator_version(self.settings.calculator),
                "calculator_key": self.settings.calculator_key(), "settings": self.settings.model_dump(mode="json"),
                "reference": REFERENCE_NAME if self.settings.hull == "elements" else "none", "hull_reference": hull,
                "energy_scale": "the calculator's own (never compared with Materials Project energies)",
                "sanity_gates": self.gates.provenance(), "versions": library_versions()}

    def evaluate(self, candidates: Sequence[Candidate], *, seed: int = 0,
                 progress: ProgressCallback | None = None) -> list[OracleResult]:
        """One result per candidate, in order; see :mod:`oracles.base` for the contract."""
        prov = self.provenance()
        out: list[OracleResult] = []
        with self._lock:  # one calculator instance: candidates of this oracle run one at a time
            for i, candidate in enumerate(candidates):
                t0 = time.perf_counter()
                try:
                    res = self._run(candidate, seed)
                except BaseException as exc:  # a candidate never loses the batch (not even to a stray time limit)
                    if isinstance(exc, KeyboardInterrupt | SystemExit):
                        raise
                    res = failed(candidate.id, "failed", f"{type(exc).__name__}: {exc}")
                res.wall_time_s = time.perf_counter() - t0
                res.provenance = {**prov, **res.provenance}
                out.append(res)
                if progress is not None:
                    progress(i + 1, len(candidates))
        return out

    def _structure(self, candidate: Candidate, seed: int) -> tuple[Structure, dict[str, Any]]:
        if candidate.structure is not None:
            return candidate.structure, {"input": "structure"}
        assert candidate.crystal is not None
        dseed = candidate.candidate_seed(seed)
        dec = decode_crystal(candidate.crystal, seed=dseed, settings=self.settings.decode_settings())
        return dec.structure, {"input": "crystal", "decode_seed": dseed, "decode_attempt": dec.attempt,
                               "decode_volume_scale": round(dec.volume_scale, 6),
                               "decoder": self.settings.decoder.name}

    def _run(self, candidate: Candidate, seed: int) -> OracleResult:
        s = self.settings
        structure: Structure | None = None
        info: dict[str, Any] = {}

        def result(res: OracleResult) -> OracleResult:
            res.provenance.update(info)
            return res

        try:
            structure, info = self._structure(candidate, seed)
            refused = check_structure(structure, gates=self.gates)
            if refused is not None:
                return result(failed(candidate.id, "invalid", gate_message("input", refused),
                                     structure_cif=structure_to_cif(structure)))
            with time_limit(s.timeout_s + s.hard_timeout_grace_s):
                if s.mode == "static" or s.steps == 0:
                    final, energy = structure, _static_energy(structure, self.calculator)
                    energies, n_steps, message = [energy / len(structure)], 0, ""
                    status: Status = "ok"
                else:
                    out = relax_structure(structure, calculator=self.calculator, settings=s.relax_settings(),
                                          deadline=time.monotonic() + s.timeout_s)
                    final, energy, energies = out.structure, out.energy_total, out.energies_per_atom
                    n_steps, status, message = out.n_steps, out.status, out.message
            refused = check_structure(final, gates=self.gates)
            if refused is not None:
                return result(failed(candidate.id, "invalid", gate_message("result", refused),
                                     structure_cif=structure_to_cif(final), energies=energies, n_steps=n_steps))
            targets = self._targets(final, energy, info)
            return result(OracleResult(candidate_id=candidate.id, status=status, message=message, targets=targets,
                                       structure_cif=structure_to_cif(final), energies=energies, n_steps=n_steps))
        except DecodeError as exc:
            return result(failed(candidate.id, "invalid" if exc.impossible else "failed", f"decoding failed: {exc}"))
        except RelaxFault as exc:
            cif = structure_to_cif(structure) if structure is not None else None
            return result(failed(candidate.id, exc.status, str(exc), structure_cif=cif, n_steps=exc.n_steps,
                                 energies=exc.energies_per_atom))
        except TimeLimitExceeded:
            cif = structure_to_cif(structure) if structure is not None else None
            return result(failed(candidate.id, "timeout", f"interrupted: one calculator call ran past the limit "
                                 f"({s.timeout_s:g} s + {s.hard_timeout_grace_s:g} s grace)", structure_cif=cif))
        except Exception as exc:  # the calculator or a library raised (e.g. an element it has no parameters for)
            cif = structure_to_cif(structure) if structure is not None else None
            return result(failed(candidate.id, "failed", f"{type(exc).__name__}: {exc}", structure_cif=cif))

    def _targets(self, structure: Structure, energy: float, info: dict[str, Any]) -> dict[str, float | None]:
        n = len(structure)
        comp: Composition = structure.composition
        targets: dict[str, float | None] = {"energy_per_atom": energy / n, "formation_energy_per_atom": None,
                                            "e_above_hull": None, "density": float(structure.density),
                                            "volume_per_atom": float(structure.volume / n)}
        if self.settings.elemental_references == "none":
            info["formation_energy_reference"] = "none: elemental_references: none"
            return targets
        symbols = [el.symbol for el in comp.elements]
        refs = elemental_reference(symbols, calculator=self.calculator, settings=self.settings)
        info["elemental_references"] = {s: r.provenance() for s, r in refs.items()}
        missing = {s: r.structure for s, r in refs.items() if r.energy_per_atom is None}
        if missing:
            info["formation_energy_reference"] = f"none: no elemental reference with this calculator for {missing}"
            return targets
        mu = {s: float(r.energy_per_atom) for s, r in refs.items() if r.energy_per_atom is not None}
        e_form = (energy - sum(mu[el.symbol] * amt for el, amt in comp.items())) / n
        info["formation_energy_reference"] = ("elemental ground states relaxed with the same calculator and "
                                              f"settings; mu (eV/atom) = {json.dumps(mu, sort_keys=True)}")
        targets["formation_energy_per_atom"] = e_form
        if self.settings.hull == "elements":
            targets["e_above_hull"] = e_form
        return targets
