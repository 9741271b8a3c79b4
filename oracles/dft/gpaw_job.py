#!/usr/bin/env python
"""A GPAW job, copied into each job folder as ``run_gpaw.py`` by matloop's DFT oracle.

Needs only ASE and GPAW (run it by hand with ``python run_gpaw.py`` inside a job folder). Reads
``gpaw.json`` (parameters) and ``structure.json`` (symbols, cell in Å, Cartesian positions in Å),
runs a static or relaxing plane-wave PAW calculation and writes ``result.json``:

* ``status``: ``ok`` | ``relax_unconverged`` (step cap) | ``scf_unconverged`` | ``out_of_memory`` | ``error``;
* ``energy_eV`` (total, GPAW's zero: the isolated reference atoms of the PAW setups),
  ``forces`` (eV/Å), ``stress`` (Voigt, eV/Å³), ``structure`` (final), ``energies_per_atom`` (eV/atom,
  one per optimizer step), ``n_steps``, ``wall_time_s``, ``gpaw_version``;
* ``elemental_energies_per_atom`` (eV/atom): each element's ground state (ASE's reference crystal
  structure for the element, or the diatomic molecule in a box for H, N, O, F, Cl, ...; relaxed in
  relax mode) with the same parameters, cached in
  ``reference_dir`` (shared by every job with these parameters, under a file lock); elements that
  cannot be computed are listed in ``elemental_errors``.

Exit status: 0 ok or relax step cap, 2 SCF not converged, 3 out of memory, 1 anything else.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

EXIT = {"ok": 0, "relax_unconverged": 0, "scf_unconverged": 2, "out_of_memory": 3, "error": 1}


def atoms_from_doc(doc: dict[str, Any]) -> Any:
    from ase import Atoms

    atoms = Atoms(symbols=doc["symbols"], cell=doc["cell"], positions=doc["positions"], pbc=True)
    if doc.get("magmoms"):
        atoms.set_initial_magnetic_moments(doc["magmoms"])
    return atoms


def atoms_to_doc(atoms: Any) -> dict[str, Any]:
    return {"symbols": atoms.get_chemical_symbols(), "cell": atoms.cell.array.tolist(),
            "positions": atoms.positions.tolist()}


def kpoint_grid(atoms: Any, p: dict[str, Any]) -> list[int]:
    """The Monkhorst-Pack grid, fixed from the *initial* cell: a density re-evaluated while the cell
    relaxes would switch grids mid-relaxation (energy jumps of ~1 eV/atom at low densities)."""
    from ase.calculators.calculator import kptdensity2monkhorstpack

    if p["kpts"]:
        return [int(k) for k in p["kpts"]]
    return [int(k) for k in kptdensity2monkhorstpack(atoms, p["kpoint_density"], even=False)]


def calculator(p: dict[str, Any], txt: str, kpts: list[int]) -> Any:
    from gpaw import GPAW, PW, Mixer

    width = p["smearing_width_eV"]
    occupations = {"fermi-dirac": {"name": "fermi-dirac", "width": width},
                   "gaussian": {"name": "methfessel-paxton", "width": width, "order": 0},  # order 0 = Gaussian
                   "marzari-vanderbilt": {"name": "marzari-vanderbilt", "width": width}}[p["smearing"]]
    return GPAW(mode=PW(p["cutoff_eV"]), xc=p["xc"], kpts={"size": kpts, "gamma": p["gamma_centered"]},
                occupations=occupations,
                mixer=Mixer(beta=p["mixing_beta"], nmaxold=5, weight=50.0), maxiter=p["max_scf_iterations"],
                convergence={"energy": p["scf_energy_tol_eV"]}, spinpol=p["spin"] == "collinear", txt=txt)


def compute(atoms: Any, p: dict[str, Any], txt: str) -> dict[str, Any]:
    """Static or relax run; raises GPAW's ConvergenceError when an SCF does not converge."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    if p["spin"] == "collinear" and not any(atoms.get_initial_magnetic_moments()):
        atoms.set_initial_magnetic_moments([1.0] * len(atoms))
    kpts = kpoint_grid(atoms, p)
    atoms.calc = calculator(p, txt, kpts)
    n = len(atoms)
    energies: list[float] = []
    status, n_steps = "ok", 0
    if p["mode"] == "relax":
        target = FrechetCellFilter(atoms) if p["relax_cell"] else atoms
        opt = BFGS(target, logfile=  # type: ignore[arg-type]
                   txt.replace(".txt", ".relax.log"))
        opt.attach(lambda: energies.append(atoms.get_potential_energy() / n))
        converged = opt.run(fmax=p["fmax"], steps=p["relax_steps"])
        n_steps = int(opt.nsteps)
        status = "ok" if converged else "relax_unconverged"
    energy = float(atoms.get_potential_energy())
    if not energies:
        energies.append(energy / n)
    forces = atoms.get_forces().tolist()
    try:
        stress = atoms.get_stress(voigt=True).tolist()
    except Exception:  # stress is not available for every setting
        stress = None
    return {"status": status, "energy_eV": energy, "energy_per_atom": energy / n, "forces": forces,
            "stress": stress, "structure": atoms_to_doc(atoms), "energies_per_atom": energies, "n_steps": n_steps,
            "kpts": kpts}


MOLECULE_BOX_A = (9.0, 9.2, 9.4)
"""Box (Å) of the diatomic references: slightly anisotropic so that no accidental degeneracy slows the SCF."""
HALOGEN_BOND_A = {"Cl": 1.99, "Br": 2.28, "I": 2.67}
"""Bond lengths (Å, experimental) of the halogen molecules, whose crystals ASE has no atomic basis for."""
MOLECULE_MAGMOMS = {"O": 1.0}
"""Initial moments per atom of spin-polarised molecular ground states (O₂ is a triplet)."""


def reference_atoms(symbol: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    """The element's reference state with parameters ``p``: ASE's crystal structure, or for elements whose
    standard state is a diatomic gas (H, N, O, F, Cl, ...) the molecule in a box (Γ point only, fixed box,
    spin-polarised where the molecule is magnetic; also Cl₂, Br₂, I₂). Returns (atoms, parameters, description)."""
    from ase import Atoms
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states

    state: dict[str, Any] = reference_states[atomic_numbers[symbol]] or {}
    bond = float(state["d"]) if state.get("symmetry") == "diatom" else HALOGEN_BOND_A.get(symbol)
    if bond is not None:
        atoms = Atoms([symbol, symbol], positions=[[0.0, 0.0, 0.0], [0.0, 0.0, bond]],
                      cell=list(MOLECULE_BOX_A), pbc=True)
        atoms.center()
        params = {**p, "kpts": [1, 1, 1], "relax_cell": False}
        if symbol in MOLECULE_MAGMOMS:
            atoms.set_initial_magnetic_moments([MOLECULE_MAGMOMS[symbol]] * 2)
            params["spin"] = "collinear"
        return atoms, params, f"{symbol}2 molecule in a {MOLECULE_BOX_A} Å box, Γ point"
    # raises for elements whose crystal ASE cannot build (S, P, B: no atomic basis): no formation energy
    return bulk(symbol), {**p, "kpts": None}, f"ASE reference crystal ({state.get('symmetry', '?')})"


def elemental_energy(symbol: str, p: dict[str, Any], ref_dir: Path) -> float:
    """Energy per atom (eV/atom) of the element's reference state with parameters ``p`` (cached); see
    :func:`reference_atoms`."""
    ref_dir.mkdir(parents=True, exist_ok=True)
    cache = ref_dir / f"{symbol}.json"
    with open(ref_dir / f"{symbol}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cache.exists():
            doc = json.loads(cache.read_text())
        else:
            atoms, params, what = reference_atoms(symbol, p)  # crystal: k-points from the density, not the grid
            out = compute(atoms, params, str(ref_dir / f"{symbol}.txt"))
            doc = {"symbol": symbol, "energy_per_atom": out["energy_per_atom"], "status": out["status"],
                   "structure": out["structure"], "reference": what}
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, cache)
    return float(doc["energy_per_atom"])


def main(jobdir: Path) -> int:
    t0 = time.time()
    os.chdir(jobdir)
    p = json.loads(Path("gpaw.json").read_text())
    result: dict[str, Any] = {}
    convergence_error: type[Exception] = ArithmeticError  # never raised below if gpaw is missing
    try:
        import gpaw
        from gpaw import ConvergenceError as convergence_error

        result["gpaw_version"] = gpaw.__version__
        atoms = atoms_from_doc(json.loads(Path("structure.json").read_text()))
        result.update(compute(atoms, p, "gpaw.txt"))
        if p.get("reference_dir"):
            refs: dict[str, float] = {}
            errors: dict[str, str] = {}
            for symbol in sorted(set(atoms.get_chemical_symbols())):
                try:
                    refs[symbol] = elemental_energy(symbol, p, Path(p["reference_dir"]))
                except Exception as exc:
                    errors[symbol] = f"{type(exc).__name__}: {exc}"
            result["elemental_energies_per_atom"] = refs
            result["elemental_errors"] = errors
    except convergence_error as exc:
        result.update(status="scf_unconverged", message=f"SCF did not converge in {p['max_scf_iterations']} "
                                                        f"iterations ({type(exc).__name__})")
    except MemoryError:
        result.update(status="out_of_memory", message="MemoryError")
    except Exception as exc:
        result.update(status="error", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    result["wall_time_s"] = time.time() - t0
    tmp = Path("result.json.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, "result.json")
    return EXIT[result["status"]]


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()))
