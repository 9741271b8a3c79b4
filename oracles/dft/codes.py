"""Per-code inputs and outputs: GPAW (run here), Quantum ESPRESSO and VASP (inputs through ASE/pymatgen).

:func:`write_inputs` writes the code's input files into a job folder and returns the command (an
argument list) that ``job.sh`` runs; :func:`parse_outputs` reads a finished job folder into a
:class:`CodeOutput`. Users only point to executables and pseudopotentials (settings ``qe_command``,
``qe_pseudo_dir``, ``qe_pseudopotentials``, ``vasp_command``, ``vasp_potcar_dir``).

Unit conversions: QE takes Ry and Ry/Bohr (``ecutwfc = cutoff_eV / 13.6057``, ``ecutrho = 8 ecutwfc``
for ultrasoft/PAW pseudopotentials, ``forc_conv_thr = fmax / 25.711``); VASP stress is in kBar
(``/ 1602.18`` → eV/Å³). K-point grids come from ``kpoint_density`` with ASE's
``kptdensity2monkhorstpack`` for every code (the same grid for the same cell). VASP has no
Marzari-Vanderbilt smearing: ``marzari-vanderbilt`` maps to Methfessel-Paxton order 1 (ISMEAR = 1).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pymatgen.core import Lattice, Structure

from oracles.dft.jobfiles import read_json, structure_doc, write_json_atomic
from oracles.dft.settings import RY_EV, DFTSettings

BOHR_A = 0.52917721067
KBAR_PER_EV_A3 = 1602.1766208
GPAW_SCRIPT = Path(__file__).with_name("gpaw_job.py")

RunStatus = Literal["ok", "relax_unconverged", "scf_unconverged", "out_of_memory", "error", "missing"]


class InputError(ValueError):
    """The job cannot be written (a missing pseudopotential, ...); the candidate fails without a job."""


@dataclass
class CodeOutput:
    """What a finished job produced; energies in eV, forces in eV/Å, stress (Voigt) in eV/Å³."""

    status: RunStatus
    message: str = ""
    energy_eV: float | None = None
    forces: list[list[float]] | None = None
    stress: list[float] | None = None
    structure: Structure | None = None
    energies_per_atom: list[float] = field(default_factory=list)
    n_steps: int = 0
    elemental_energies_per_atom: dict[str, float] = field(default_factory=dict)
    elemental_errors: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def kpoint_grid(structure: Structure, settings: DFTSettings) -> tuple[int, int, int]:
    """The Monkhorst-Pack grid: ``settings.kpts`` or from ``kpoint_density`` (ASE's rule, odd or even)."""
    if settings.kpts is not None:
        return settings.kpts
    from ase.calculators.calculator import kptdensity2monkhorstpack
    from pymatgen.io.ase import AseAtomsAdaptor

    grid = kptdensity2monkhorstpack(AseAtomsAdaptor.get_atoms(structure), settings.kpoint_density, even=False)
    return (int(grid[0]), int(grid[1]), int(grid[2]))


def write_inputs(jobdir: Path, structure: Structure, settings: DFTSettings, *,
                 reference_dir: Path | None) -> list[str]:
    """Write the code's inputs into ``jobdir``; returns the command that runs the code there."""
    s = settings.resolved()
    write_json_atomic(jobdir / "structure.json", structure_doc(structure))
    if s.code == "gpaw":
        return _write_gpaw(jobdir, s, reference_dir)
    if s.code == "qe":
        return _write_qe(jobdir, structure, s)
    return _write_vasp(jobdir, structure, s)


def gpaw_parameters(settings: DFTSettings, reference_dir: Path | None) -> dict[str, Any]:
    """``gpaw.json``: the physics settings plus the elemental-reference cache folder (or None)."""
    p = settings.resolved().job_dict()
    for key in ("walltime_s", "cores", "memory_mb", "code", "elemental_references"):
        p.pop(key)
    p["kpts"] = list(settings.kpts) if settings.kpts else None
    p["reference_dir"] = str(reference_dir) if reference_dir and settings.elemental_references != "none" else None
    return p


def _write_gpaw(jobdir: Path, s: DFTSettings, reference_dir: Path | None) -> list[str]:
    write_json_atomic(jobdir / "gpaw.json", gpaw_parameters(s, reference_dir))
    shutil.copyfile(GPAW_SCRIPT, jobdir / "run_gpaw.py")
    return [*s.launcher, s.python or sys.executable, "run_gpaw.py"]


def qe_input_data(structure: Structure, s: DFTSettings) -> dict[str, dict[str, Any]]:
    ecutwfc = round(float(s.cutoff_eV or 0) / RY_EV, 4)
    smearing = {"fermi-dirac": "fd", "gaussian": "gaussian", "marzari-vanderbilt": "mv"}[s.smearing]
    data: dict[str, dict[str, Any]] = {
        "control": {"calculation": "vc-relax" if s.mode == "relax" and s.relax_cell else
                    ("relax" if s.mode == "relax" else "scf"),
                    "prefix": "matloop", "pseudo_dir": s.qe_pseudo_dir or "./", "outdir": "./tmp",
                    "tprnfor": True, "tstress": True, "nstep": s.relax_steps,
                    "forc_conv_thr": round(s.fmax / (RY_EV / BOHR_A), 8)},
        "system": {"ecutwfc": ecutwfc, "ecutrho": round(8 * ecutwfc, 4), "occupations": "smearing",
                   "smearing": smearing, "degauss": round(s.smearing_width_eV / RY_EV, 8)},
        "electrons": {"electron_maxstep": s.max_scf_iterations, "mixing_beta": s.mixing_beta,
                      "conv_thr": float(f"{s.scf_energy_tol_eV * len(structure) / RY_EV:.3e}")},
    }
    if s.spin == "collinear":  # starting_magnetization comes from the atoms' initial moments (1 μB each)
        data["system"]["nspin"] = 2
    if s.mode == "relax":
        data["ions"] = {"ion_dynamics": "bfgs"}
        if s.relax_cell:
            data["cell"] = {"cell_dynamics": "bfgs"}
    return data


def _write_qe(jobdir: Path, structure: Structure, s: DFTSettings) -> list[str]:
    from ase.io.espresso import write_espresso_in
    from pymatgen.io.ase import AseAtomsAdaptor

    symbols = sorted({site.specie.symbol for site in structure})
    missing = [el for el in symbols if el not in s.qe_pseudopotentials]
    if missing:
        raise InputError(f"qe: no pseudopotential for {missing}; set qe_pseudopotentials "
                         "(element -> UPF file in qe_pseudo_dir)")
    atoms = AseAtomsAdaptor.get_atoms(structure)
    if s.spin == "collinear":
        atoms.set_initial_magnetic_moments([1.0] * len(atoms))
    with open(jobdir / "pw.in", "w") as fh:
        write_espresso_in(fh, atoms, input_data=qe_input_data(structure, s),
                          pseudopotentials={el: s.qe_pseudopotentials[el] for el in symbols},
                          kpts=kpoint_grid(structure, s), koffset=(0, 0, 0) if s.gamma_centered else (1, 1, 1))
    return [*s.launcher, *s.qe_command, "-in", "pw.in"]


def vasp_input_set(structure: Structure, s: DFTSettings) -> Any:
    """pymatgen's ``MPRelaxSet`` / ``MPStaticSet`` with these settings (MP's U values, MAGMOM, POTCARs)."""
    from pymatgen.io.vasp.inputs import Kpoints
    from pymatgen.io.vasp.sets import MPRelaxSet, MPStaticSet

    incar: dict[str, Any] = {
        "ENCUT": s.cutoff_eV, "ISMEAR": {"fermi-dirac": -1, "gaussian": 0, "marzari-vanderbilt": 1}[s.smearing],
        "SIGMA": s.smearing_width_eV, "ISPIN": 2 if s.spin == "collinear" else 1, "NELM": s.max_scf_iterations,
        "AMIX": s.mixing_beta, "EDIFF": float(f"{s.scf_energy_tol_eV * len(structure):.3e}"), "KSPACING": None,
    }
    if s.mode == "relax":
        incar.update(EDIFFG=-s.fmax, NSW=s.relax_steps, ISIF=3 if s.relax_cell else 2, IBRION=2)
    grid = kpoint_grid(structure, s)
    kpoints = Kpoints.gamma_automatic(grid) if s.gamma_centered else Kpoints.monkhorst_automatic(grid)
    cls = MPRelaxSet if s.mode == "relax" else MPStaticSet
    return cls(structure, user_incar_settings=incar, user_kpoints_settings=kpoints,  # type: ignore[arg-type]
               sort_structure=True)


def _write_vasp(jobdir: Path, structure: Structure, s: DFTSettings) -> list[str]:
    vis = vasp_input_set(structure, s)
    vis.write_input(str(jobdir), potcar_spec=True)
    if s.vasp_potcar_dir:
        symbols = (jobdir / "POTCAR.spec").read_text().split()
        parts = []
        for sym in symbols:
            path = Path(s.vasp_potcar_dir) / sym / "POTCAR"
            if not path.exists():
                raise InputError(f"vasp: {path} not found (vasp_potcar_dir must hold <symbol>/POTCAR)")
            parts.append(path.read_text())
        (jobdir / "POTCAR").write_text("".join(parts))
    return [*s.launcher, *s.vasp_command]


# -- outputs ----------------------------------------------------------------------------------
def parse_outputs(jobdir: Path, code: str) -> CodeOutput:
    """Read a finished job folder; status ``missing`` when the code left no output to parse."""
    if code == "gpaw":
        return _parse_gpaw(jobdir)
    if code == "qe":
        return _parse_qe(jobdir)
    return _parse_vasp(jobdir)


def _structure_from_doc(doc: dict[str, Any]) -> Structure:
    return Structure(Lattice(doc["cell"]), doc["symbols"], doc["positions"], coords_are_cartesian=True)


def _parse_gpaw(jobdir: Path) -> CodeOutput:
    doc = read_json(jobdir / "result.json")
    if doc is None:
        return CodeOutput("missing", "run_gpaw.py wrote no readable result.json")
    status = doc.get("status", "error")
    if status not in ("ok", "relax_unconverged", "scf_unconverged", "out_of_memory", "error"):
        return CodeOutput("error", f"unknown status {status!r} in result.json")
    out = CodeOutput(status, str(doc.get("message", "")), info={"gpaw_version": doc.get("gpaw_version"),
                                                                 "job_wall_time_s": doc.get("wall_time_s")})
    if status in ("ok", "relax_unconverged"):
        out.energy_eV = float(doc["energy_eV"])
        out.forces, out.stress = doc.get("forces"), doc.get("stress")
        out.structure = _structure_from_doc(doc["structure"])
        out.energies_per_atom = [float(x) for x in doc.get("energies_per_atom", [])]
        out.n_steps = int(doc.get("n_steps", 0))
        out.elemental_energies_per_atom = {k: float(v) for k, v in (doc.get("elemental_energies_per_atom") or {}).items()}
        out.elemental_errors = dict(doc.get("elemental_errors") or {})
    return out


def _parse_qe(jobdir: Path) -> CodeOutput:
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    log = jobdir / "run.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    if not text:
        return CodeOutput("missing", "pw.x wrote no output (run.log)")
    if "convergence NOT achieved" in text:
        return CodeOutput("scf_unconverged", "pw.x: convergence NOT achieved")
    if "JOB DONE" not in text:
        return CodeOutput("error", "pw.x did not finish (no JOB DONE): " + text.strip().splitlines()[-1][:200])
    images: list[Any] = list(read(log, format="espresso-out", index=":"))  # type: ignore[arg-type]
    final = images[-1]
    n = len(final)
    stress = final.get_stress(voigt=True).tolist() if "stress" in final.calc.results else None
    status: RunStatus = "relax_unconverged" if "maximum number of steps has been reached" in text else "ok"
    return CodeOutput(status, "", energy_eV=float(final.get_potential_energy()), forces=final.get_forces().tolist(),
                      stress=stress, structure=AseAtomsAdaptor.get_structure(final),
                      energies_per_atom=[float(a.get_potential_energy()) / n for a in images],
                      n_steps=max(len(images) - 1, 0))


def _parse_vasp(jobdir: Path) -> CodeOutput:
    from pymatgen.io.vasp.outputs import Vasprun

    path = jobdir / "vasprun.xml"
    if not path.exists():
        return CodeOutput("missing", "VASP wrote no vasprun.xml")
    try:
        run = Vasprun(str(path), parse_potcar_file=False, parse_dos=False, parse_eigen=False)
    except Exception as exc:
        return CodeOutput("error", f"vasprun.xml unreadable: {type(exc).__name__}: {exc}")
    if not run.converged_electronic:
        return CodeOutput("scf_unconverged", "VASP: electronic SCF not converged (NELM reached)")
    last = run.ionic_steps[-1]
    n = len(run.final_structure)
    stress = last.get("stress")
    voigt = None
    if stress is not None:
        s = [[-x / KBAR_PER_EV_A3 for x in row] for row in stress]  # VASP: positive = compressive
        voigt = [s[0][0], s[1][1], s[2][2], s[1][2], s[0][2], s[0][1]]
    return CodeOutput("ok" if run.converged_ionic else "relax_unconverged", "", energy_eV=float(run.final_energy),
                      forces=[list(map(float, f)) for f in last.get("forces", [])], stress=voigt,
                      structure=run.final_structure,
                      energies_per_atom=[float(st["e_0_energy"]) / n for st in run.ionic_steps],
                      n_steps=max(len(run.ionic_steps) - 1, 0), info={"vasp_version": run.vasp_version})


def dump_settings(path: Path, settings: DFTSettings) -> None:
    path.write_text(json.dumps(settings.model_dump(mode="json"), indent=1, sort_keys=True) + "\n")
