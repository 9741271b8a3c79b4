"""Formation energies on the MP2020 scale and energies above a reference convex hull.

Formation energy of a predicted entry (eV/atom)::

    E_form = (E_MP2020 − Σ_i n_i · μ_i) / N

``E_MP2020`` is the total energy (eV) on the MP2020 scale: either the model's energy when the model
learned that scale (CHGNet, see :mod:`oracles.chgnet`), or the raw GGA(+U)-like energy plus the
correction from pymatgen's ``MaterialsProject2020Compatibility`` (:func:`corrected_energy`: anion
corrections and the GGA/GGA+U mixing correction; the entry is declared GGA+U with MP's U values
whenever MP would have used +U for that chemistry). ``μ_i`` are the Materials Project GGA ground-state
elemental reference energies (eV/atom, file ``2023-02-07-mp-elemental-reference-entries.json.gz``).

Reference hulls (``reference=``):

* ``"mp20+li-fe-o"`` (default): every MP-20 train and validation entry shipped in
  ``discovery/data/mp20/`` (MP2020-corrected formation energies as published), the complete
  Li-Fe-O system from MP (375 entries, MP2020 corrections applied here), and the elements at zero.
  **Limits:** MP-20 holds only near-hull entries (MP e_above_hull ≤ 0.08 eV/atom) of ≤ 20-atom cells
  and only 2,369 of them, so for most chemistries the hull is *incomplete*: missing phases can only
  lower MP's true hull, so ``e_above_hull`` here is a lower bound on the value against all of MP
  (stable-looking candidates may not be), and exact only for Li-Fe-O.
* ``"li-fe-o"``: the complete Li-Fe-O system only (exact MP hull for that system; other chemistries
  are measured against the elements and whatever Li/Fe/O subsystems apply).
* ``"elements"``: elements only (``e_above_hull`` = formation energy when it is positive).

Every label carries :meth:`HullReference.provenance` (reference name, files with SHA-256, entry
counts, correction scheme, pymatgen version) because hull labels change with any of them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedStructureEntry

ReferenceName = Literal["mp20+li-fe-o", "li-fe-o", "elements"]
DATA_DIR = Path(__file__).resolve().parent.parent / "discovery" / "data"
ELEMENTAL_FILE = "2023-02-07-mp-elemental-reference-entries.json.gz"
LIFEO_FILE = "Li-Fe-O.json.gz"
CORRECTION_SCHEME = ("reference entries on the MP2020 scale: Li-Fe-O with pymatgen "
                     "MaterialsProject2020Compatibility(compat_type='Advanced') applied here; MP-20 formation "
                     "energies as published (MP2020-corrected)")


class ReferenceDataError(RuntimeError):
    """Reference data for hull labels is missing or unreadable; the message says where it looked."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _pymatgen_version() -> str:
    from importlib.metadata import version

    return version("pymatgen")


@functools.cache
def mp2020() -> MaterialsProject2020Compatibility:
    return MaterialsProject2020Compatibility(check_potcar=False)


@functools.cache
def elemental_references(data_dir: Path = DATA_DIR) -> dict[str, float]:
    """MP GGA ground-state energy per atom (eV/atom) of each element (89 elements)."""
    path = data_dir / "mp_reference" / ELEMENTAL_FILE
    if not path.exists():
        raise ReferenceDataError(f"elemental reference energies not found at {path}")
    with gzip.open(path, "rt") as fh:
        raw = json.load(fh)
    out: dict[str, float] = {}
    for symbol, doc in raw.items():
        out[symbol] = float(doc["energy"]) / sum(doc["composition"].values())
    return out


def mp2020_parameters(composition: Composition) -> dict[str, Any]:
    """Entry parameters that declare the run type and U values MP would have used (GGA or GGA+U)."""
    elements = sorted((el for el in composition.elements if composition[el] > 0), key=lambda el: el.X)
    u_settings = mp2020().u_settings.get(elements[-1].symbol, {}) if len(elements) > 1 else {}
    hubbards = {el.symbol: float(u_settings[el.symbol]) for el in elements if u_settings.get(el.symbol, 0) > 0}
    return {"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards, "is_hubbard": bool(hubbards),
            "software": "ml-potential"}


def corrected_energy(structure: Structure, energy_total_eV: float) -> tuple[float, float]:
    """(corrected total energy, MP2020 correction), both in eV; raises ``ValueError`` if incompatible."""
    entry = ComputedStructureEntry(structure, energy_total_eV, parameters=mp2020_parameters(structure.composition))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "failed to guess oxidation states": MP's own fallback applies
        processed = mp2020().process_entry(entry)
    if processed is None:
        raise ValueError(f"MP2020 compatibility rejected {structure.composition.reduced_formula}")
    return float(processed.energy), float(processed.correction)


def formation_energy_per_atom(composition: Composition, corrected_energy_total_eV: float,
                              *, data_dir: Path = DATA_DIR) -> float:
    """Formation energy (eV/atom) against the MP elemental references."""
    mu = elemental_references(data_dir)
    missing = [el.symbol for el in composition.elements if el.symbol not in mu]
    if missing:
        raise ValueError(f"no elemental reference energy for {missing}")
    ref = sum(mu[el.symbol] * amt for el, amt in composition.items())
    return (corrected_energy_total_eV - ref) / composition.num_atoms


def _mp20_frames(mp20_dir: Path) -> pd.DataFrame:
    files = sorted(p for p in mp20_dir.glob("*.csv*") if "cif" not in p.name) or sorted(mp20_dir.glob("*.csv*"))
    if not files:
        raise ReferenceDataError(
            f"MP-20 reference entries not found: no CSV in {mp20_dir}. The default hull reference "
            "'mp20+li-fe-o' needs the MP-20 tables in discovery/data/mp20/ (columns id or material_id, "
            "composition or pretty_formula, formation_energy_per_atom); use reference='li-fe-o' or "
            "'elements' to run without them.")
    frames = []
    for path in files:
        df = pd.read_csv(path)
        id_col = "id" if "id" in df.columns else "material_id"
        comp_col = next((c for c in ("composition", "pretty_formula", "formula") if c in df.columns), None)
        if id_col not in df.columns or comp_col is None or "formation_energy_per_atom" not in df.columns:
            raise ReferenceDataError(f"{path}: needs id/material_id, composition/pretty_formula and "
                                     "formation_energy_per_atom columns")
        frames.append(pd.DataFrame({"id": df[id_col].astype(str), "composition": df[comp_col].astype(str),
                                    "formation_energy_per_atom": df["formation_energy_per_atom"].astype(float),
                                    "file": path.name}))
    return pd.concat(frames, ignore_index=True).drop_duplicates("id")


@dataclass(frozen=True, slots=True)
class RefEntry:
    """A reference phase: composition and formation energy per atom (eV/atom, MP2020 scale)."""

    id: str
    composition: Composition
    e_form: float


@dataclass
class HullReference:
    """A reference set of phases with per-chemical-system phase diagrams built lazily and cached."""

    name: str
    entries: list[RefEntry]
    files: dict[str, str]
    data_dir: Path = DATA_DIR
    _pd_cache: dict[frozenset[str], PhaseDiagram] = field(default_factory=dict, repr=False)

    def provenance(self) -> dict[str, Any]:
        return {"reference": self.name, "reference_files": dict(self.files), "n_reference_entries": len(self.entries),
                "elemental_references": ELEMENTAL_FILE, "correction_scheme": CORRECTION_SCHEME,
                "pymatgen": _pymatgen_version()}

    def phase_diagram(self, elements: frozenset[str]) -> PhaseDiagram:
        """Phase diagram (formation energies, elements at 0) of every reference entry within ``elements``."""
        if elements not in self._pd_cache:
            pd_entries = [PDEntry(Composition({el: 1}), 0.0, name=el) for el in sorted(elements)]
            for e in self.entries:
                if {el.symbol for el in e.composition.elements} <= elements:
                    pd_entries.append(PDEntry(e.composition, e.e_form * e.composition.num_atoms, name=e.id))
            self._pd_cache[elements] = PhaseDiagram(pd_entries)
        return self._pd_cache[elements]

    def e_above_hull(self, composition: Composition, e_form_per_atom: float) -> float:
        """Signed energy above the reference hull (eV/atom); negative means below (new stable phase)."""
        elements = frozenset(el.symbol for el in composition.elements)
        diagram = self.phase_diagram(elements)
        entry = PDEntry(composition, e_form_per_atom * composition.num_atoms)
        e_hull = diagram.get_e_above_hull(entry, allow_negative=True)
        if e_hull is None:
            raise ValueError(f"no decomposition found for {composition.reduced_formula}")
        return float(e_hull)

    def formation_energy_per_atom(self, composition: Composition, corrected_energy_total_eV: float) -> float:
        return formation_energy_per_atom(composition, corrected_energy_total_eV, data_dir=self.data_dir)


def lifeo_entries(data_dir: Path = DATA_DIR) -> list[ComputedStructureEntry]:
    """The Li-Fe-O system from MP with MP2020 corrections applied (energies in eV)."""
    path = data_dir / "mp_reference" / LIFEO_FILE
    if not path.exists():
        raise ReferenceDataError(f"Li-Fe-O reference entries not found at {path}")
    with gzip.open(path, "rt") as fh:
        raw = json.load(fh)
    entries = [ComputedStructureEntry.from_dict(d) for d in raw]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(mp2020().process_entries(entries, clean=True, verbose=False))


@functools.cache
def load_reference(name: ReferenceName = "mp20+li-fe-o", *, data_dir: Path = DATA_DIR,
                   mp20_dir: Path | None = None) -> HullReference:
    """Build (once per process) the named reference; see the module docstring for the choices."""
    entries: list[RefEntry] = []
    files: dict[str, str] = {}
    mp20 = _mp20_frames(mp20_dir or data_dir / "mp20") if name == "mp20+li-fe-o" else None  # fail fast
    elemental = data_dir / "mp_reference" / ELEMENTAL_FILE
    elemental_references(data_dir)
    files[_display(elemental, data_dir)] = _sha256(elemental)
    if name in ("mp20+li-fe-o", "li-fe-o"):
        for e in lifeo_entries(data_dir):
            entries.append(RefEntry(str(e.entry_id), e.composition,
                                    formation_energy_per_atom(e.composition, e.energy, data_dir=data_dir)))
        path = data_dir / "mp_reference" / LIFEO_FILE
        files[_display(path, data_dir)] = _sha256(path)
    if mp20 is not None:
        mp20_dir = mp20_dir or data_dir / "mp20"
        df = mp20
        for row in df.itertuples(index=False):
            entries.append(RefEntry(str(row.id), Composition(str(row.composition)), float(row.formation_energy_per_atom)))
        for fname in sorted(set(df["file"])):
            files[_display(mp20_dir / fname, data_dir)] = _sha256(mp20_dir / fname)
    return HullReference(name=name, entries=entries, files=files, data_dir=data_dir)


def _display(path: Path, data_dir: Path) -> str:
    root = data_dir.parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
