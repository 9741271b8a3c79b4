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

* ``"mp20+li-fe-o"``: every MP-20 train and validation entry shipped in
  ``discovery/data/mp20/`` (MP2020-corrected formation energies as published), the complete
  Li-Fe-O system from MP (375 entries, MP2020 corrections applied here), and the elements at zero.
  **Limits:** MP-20 holds only near-hull entries (MP e_above_hull ≤ 0.08 eV/atom) of ≤ 20-atom cells
  and only 2,369 of them, so for most chemistries the hull is *incomplete*: missing phases can only
  lower MP's true hull, so ``e_above_hull`` here is a lower bound on the value against all of MP
  (stable-looking candidates may not be), and exact only for Li-Fe-O.
* ``"mp20+matbench"`` (default, :data:`DEFAULT_REFERENCE`): the entries above plus every MatBench ``mp_e_form`` formation energy shipped in
  ``discovery/data/composition_only/`` (131,080 MP entries by formula, pre-2020 MP corrections, all
  polymorphs; elements dropped since they sit at zero, and Li-Fe-O systems, which ship complete). The legacy scale is moved onto the MP2020
  scale by a per-element correction ``ΔE = Σ_el x_el · c_el`` (``x_el`` atomic fractions) fitted by ridge
  least squares (λ = 0.01) on the lowest energy of each formula present in both MatBench and the MP2020
  entries above (~2,350 formulas; mean absolute difference 0.052 eV/atom before, ~0.022 after; see
  :meth:`HullReference.provenance`). Dense (most MP chemical systems up to ~2019 are covered), so hull
  distances are close to MP's; the residual scale mismatch is a few 10 meV/atom. Building it takes a few
seconds once per process (cached; the first hull query also indexes the entries by chemical system).
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
import itertools
import json
import math
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedStructureEntry

ReferenceName = Literal["mp20+li-fe-o", "mp20+matbench", "li-fe-o", "elements"]
DEFAULT_REFERENCE: ReferenceName = "mp20+matbench"
"""The hull reference of every oracle, config and command unless one is named (dense: close to MP's hull)."""
DATA_DIR = Path(__file__).resolve().parent.parent / "discovery" / "data"
ELEMENTAL_FILE = "2023-02-07-mp-elemental-reference-entries.json.gz"
LIFEO_FILE = "Li-Fe-O.json.gz"
MATBENCH_FILE = Path("composition_only") / "matbench_mp_e_form.csv.gz"
MATBENCH_RIDGE = 0.01
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
            "'mp20+li-fe-o' and 'mp20+matbench' need the MP-20 tables in discovery/data/mp20/ (columns id or material_id, "
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
                                    "e_above_hull": df.get("e_above_hull", pd.Series(float("nan"), index=df.index)),
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
    extra: dict[str, Any] = field(default_factory=dict)
    _pd_cache: dict[frozenset[str], PhaseDiagram] = field(default_factory=dict, repr=False)
    _by_system: dict[frozenset[str], list[RefEntry]] | None = field(default=None, repr=False)
    _hull_cache: dict[Composition, float] = field(default_factory=dict, repr=False)

    def provenance(self) -> dict[str, Any]:
        return {"reference": self.name, "reference_files": dict(self.files), "n_reference_entries": len(self.entries),
                "elemental_references": ELEMENTAL_FILE, "correction_scheme": CORRECTION_SCHEME,
                "pymatgen": _pymatgen_version(), **self.extra}

    def system_entries(self, elements: frozenset[str]) -> list[RefEntry]:
        """Every reference entry whose elements are a subset of ``elements`` (index by chemical system)."""
        if self._by_system is None:
            index: dict[frozenset[str], list[RefEntry]] = {}
            for e in self.entries:
                index.setdefault(frozenset(el.symbol for el in e.composition.elements), []).append(e)
            self._by_system = index
        els = sorted(elements)
        return [e for r in range(1, len(els) + 1) for sub in itertools.combinations(els, r)
                for e in self._by_system.get(frozenset(sub), ())]

    def phase_diagram(self, elements: frozenset[str]) -> PhaseDiagram:
        """Phase diagram (formation energies, elements at 0) of every reference entry within ``elements``."""
        if elements not in self._pd_cache:
            pd_entries = [PDEntry(Composition({el: 1}), 0.0, name=el) for el in sorted(elements)]
            pd_entries += [PDEntry(e.composition, e.e_form * e.composition.num_atoms, name=e.id)
                           for e in self.system_entries(elements)]
            self._pd_cache[elements] = PhaseDiagram(pd_entries)
        return self._pd_cache[elements]

    def hull_energy_per_atom(self, composition: Composition) -> float:
        """Formation energy (eV/atom) of the reference hull at ``composition`` (≤ 0; cached per reduced
        composition): a phase at this composition is stable when its formation energy is at most this."""
        key = composition.reduced_composition
        if key not in self._hull_cache:
            diagram = self.phase_diagram(frozenset(el.symbol for el in key.elements))
            self._hull_cache[key] = float(diagram.get_hull_energy_per_atom(key))
        return self._hull_cache[key]

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


_LOAD_LOCK = threading.Lock()


def load_reference(name: ReferenceName = DEFAULT_REFERENCE, *, data_dir: Path = DATA_DIR,
                   mp20_dir: Path | None = None) -> HullReference:
    """The named reference, built once per process (see the module docstring for the choices).

    Thread-safe: concurrent callers (e.g. two oracle tasks of a campaign) wait for one build instead
    of each building the dense reference."""
    with _LOAD_LOCK:
        return _build_reference(name, data_dir=data_dir, mp20_dir=mp20_dir)


@functools.cache
def _build_reference(name: ReferenceName, *, data_dir: Path, mp20_dir: Path | None) -> HullReference:
    entries: list[RefEntry] = []
    files: dict[str, str] = {}
    with_mp20 = name in ("mp20+li-fe-o", "mp20+matbench")
    mp20 = _mp20_frames(mp20_dir or data_dir / "mp20") if with_mp20 else None  # fail fast
    elemental = data_dir / "mp_reference" / ELEMENTAL_FILE
    elemental_references(data_dir)
    files[_display(elemental, data_dir)] = _sha256(elemental)
    if name in ("mp20+li-fe-o", "mp20+matbench", "li-fe-o"):
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
    extra: dict[str, Any] = {}
    if name == "mp20+matbench":
        path = data_dir / MATBENCH_FILE
        extra = _add_matbench(entries, path)
        files[_display(path, data_dir)] = _sha256(path)
    return HullReference(name=name, entries=entries, files=files, data_dir=data_dir, extra=extra)


def _add_matbench(entries: list[RefEntry], path: Path) -> dict[str, Any]:
    """Append MatBench formation energies moved to the MP2020 scale of ``entries``; returns the fit's summary."""
    if not path.exists():
        raise ReferenceDataError(f"MatBench formation energies not found at {path}; the 'mp20+matbench' reference "
                                 "needs discovery/data/composition_only/matbench_mp_e_form.csv.gz (use 'mp20+li-fe-o')")
    df = pd.read_csv(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen: "No Pauling electronegativity for He" (formula ordering)
        return _fit_matbench(entries, df)


_FORMULA_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*(?:\.\d+)?)")


def _amounts(formula: str) -> dict[str, float]:
    """Element amounts of a plain formula such as ``Li2Fe1O3`` (3× faster than pymatgen's parser for
    MatBench's 131k formulas); anything else (brackets, charges) goes through :class:`Composition`."""
    tokens = _FORMULA_TOKEN.findall(formula)
    if "".join(el + n for el, n in tokens) != formula or len({el for el, _ in tokens}) != len(tokens):
        return {el.symbol: float(n) for el, n in Composition(formula).items()}
    return {el: float(n) if n else 1.0 for el, n in tokens}


def _fit_matbench(entries: list[RefEntry], df: pd.DataFrame) -> dict[str, Any]:
    exact = {"Li", "Fe", "O"}  # the complete MP2020 Li-Fe-O system ships: MatBench does not replace it
    mb: list[tuple[Composition, float, frozenset[str]]] = []
    for formula, y in zip(df["formula"].astype(str), df["target"].astype(float), strict=True):
        amounts = _amounts(formula)
        symbols = frozenset(amounts)
        if len(symbols) > 1 and not symbols <= exact:
            mb.append((Composition(amounts), float(y), symbols))
    lowest_mp: dict[str, float] = {}
    for e in entries:
        f = e.composition.reduced_formula
        lowest_mp[f] = min(lowest_mp.get(f, math.inf), e.e_form)
    mp_systems = {frozenset(el.symbol for el in Composition(f).elements) for f in lowest_mp}
    lowest_mb: dict[str, tuple[Composition, float]] = {}
    for c, y, symbols in mb:
        if symbols not in mp_systems:  # no shared formula possible: skip the costly reduced formula
            continue
        f = c.reduced_formula
        if f in lowest_mp and y < lowest_mb.get(f, (c, math.inf))[1]:
            lowest_mb[f] = (c, y)
    elements = sorted(set().union(*(symbols for _, _, symbols in mb)))
    col = {el: i for i, el in enumerate(elements)}

    def fractions(c: Composition) -> np.ndarray:
        x = np.zeros(len(elements))
        for el, amt in c.items():
            x[col[el.symbol]] = amt / c.num_atoms
        return x

    shared = sorted(lowest_mb)
    x = np.array([fractions(lowest_mb[f][0]) for f in shared]).reshape(len(shared), len(elements))
    d = np.array([lowest_mp[f] - lowest_mb[f][1] for f in shared])
    coef = np.linalg.solve(x.T @ x + MATBENCH_RIDGE * np.eye(len(elements)), x.T @ d) if len(shared) else np.zeros(len(elements))
    shift = dict(zip(elements, coef.tolist(), strict=True))
    for i, (c, y, _) in enumerate(mb):
        entries.append(RefEntry(f"matbench-{i}", c, y + sum(amt * shift[el.symbol] for el, amt in c.items()) / c.num_atoms))
    return {"matbench_entries": len(mb), "matbench_scale_fit_formulas": len(shared),
            "matbench_scale_mae_before_eV_per_atom": round(float(np.abs(d).mean()), 4) if len(shared) else None,
            "matbench_scale_mae_after_eV_per_atom": round(float(np.abs(d - x @ coef).mean()), 4) if len(shared) else None,
            "matbench_scale_correction": "per-element ridge fit of MP2020 minus MatBench formation energies "
                                         f"(lambda {MATBENCH_RIDGE}) on formulas in both"}


def _display(path: Path, data_dir: Path) -> str:
    root = data_dir.parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def check_against_mp20(name: ReferenceName, *, data_dir: Path = DATA_DIR) -> dict[str, Any]:
    """How well a reference reproduces MP's published hull distances of the shipped MP-20 entries.

    Each entry's published formation energy is placed against the reference hull (eV/atom) and compared
    with its published ``e_above_hull``; a reference close to MP's own hull gives small differences."""
    df = _mp20_frames(data_dir / "mp20")
    ref = load_reference(name, data_dir=data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = np.array([ref.e_above_hull(Composition(c), float(e))
                        for c, e in zip(df["composition"], df["formation_energy_per_atom"], strict=True)])
    published = df["e_above_hull"].to_numpy(dtype=float)
    diff = np.abs(got - published)
    return {"reference": name, "entries": len(df), "mae_e_above_hull_eV_per_atom": round(float(diff.mean()), 4),
            "share_within_0p05": round(float(np.mean(diff <= 0.05)), 4),
            "pearson_r": round(float(np.corrcoef(got, published)[0, 1]), 3),
            "mean_e_above_hull": round(float(got.mean()), 4), "mean_published": round(float(published.mean()), 4)}


if __name__ == "__main__":  # python -m oracles.reference --check-mp20
    import sys

    if sys.argv[1:] != ["--check-mp20"]:
        sys.exit("usage: python -m oracles.reference --check-mp20   (compare each hull reference with MP's "
                 "published E_hull of the MP-20 entries; prints JSON)")
    print(json.dumps([check_against_mp20(n) for n in ("mp20+li-fe-o", "mp20+matbench")], indent=2))
