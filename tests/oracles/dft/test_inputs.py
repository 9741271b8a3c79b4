"""Generated inputs against reference files (``data/reference_inputs/<case>/``), and settings errors.

Regenerate the references after an intended change with ``MATLOOP_REGEN_DFT_INPUTS=1 pytest
tests/oracles/dft/test_inputs.py`` and review the diff. Job-folder paths and the Python interpreter are
replaced by ``{JOBDIR}`` and ``{PYTHON}`` before comparing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure

from oracles.dft.codes import write_inputs
from oracles.dft.jobfiles import job_script
from oracles.dft.settings import DFTSettings
from tests.oracles.dft.conftest import DATA, si_structure

REFERENCE = DATA / "reference_inputs"
REGEN = os.environ.get("MATLOOP_REGEN_DFT_INPUTS") == "1"


def fe2o3_like() -> Structure:
    """A small Fe-O cell: MP's input set applies GGA+U and a MAGMOM to it."""
    return Structure(Lattice.cubic(4.2), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


CASES: dict[str, tuple[Structure, dict[str, Any], list[str]]] = {
    "gpaw-static": (si_structure(), {"cutoff_eV": 300, "kpoint_density": 2.0}, ["gpaw.json", "job.sh"]),
    "gpaw-relax-spin": (si_structure(), {"mode": "relax", "spin": "collinear", "smearing": "gaussian",
                                         "kpts": (4, 4, 4), "cores": 4, "env": {"GPAW_SETUP_PATH": "/opt/my setups"},
                                         "modules": ["gpaw/24.1"], "setup_script": "/opt/env.sh"},
                        ["gpaw.json", "job.sh"]),
    "qe-relax": (si_structure(), {"code": "qe", "mode": "relax", "qe_pseudo_dir": "/opt/pseudo",
                                  "qe_pseudopotentials": {"Si": "Si.pbe-n-rrkjus_psl.1.0.0.UPF"},
                                  "qe_command": ["pw.x", "-nk", "2"], "launcher": ["mpirun", "-np", "4"]},
                 ["pw.in", "job.sh"]),
    "qe-static-spin": (fe2o3_like(), {"code": "qe", "spin": "collinear", "smearing": "marzari-vanderbilt",
                                      "qe_pseudopotentials": {"Fe": "Fe.upf", "O": "O.upf"}}, ["pw.in"]),
    "vasp-static": (si_structure(), {"code": "vasp"}, ["INCAR", "KPOINTS", "POSCAR", "POTCAR.spec", "job.sh"]),
    "vasp-relax-feo": (fe2o3_like(), {"code": "vasp", "mode": "relax", "spin": "collinear", "launcher": ["srun"]},
                       ["INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"]),
}


def _normalise(text: str, jobdir: Path) -> str:
    return text.replace(str(jobdir), "{JOBDIR}").replace(sys.executable, "{PYTHON}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_inputs_match_reference(case: str, tmp_path: Path) -> None:
    structure, options, files = CASES[case]
    settings = DFTSettings(**options)
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    command = write_inputs(jobdir, structure, settings, reference_dir=Path("/refs") if settings.code == "gpaw" else None)
    (jobdir / "job.sh").write_text(job_script(jobdir, command, settings, title=f"test case {case}"))
    ref_dir = REFERENCE / case
    for name in files:
        got = _normalise((jobdir / name).read_text(), jobdir)
        if REGEN:
            ref_dir.mkdir(parents=True, exist_ok=True)
            (ref_dir / name).write_text(got)
        assert got == (ref_dir / name).read_text(), f"{case}/{name} differs from the reference"
    subprocess.run(["bash", "-n", str(jobdir / "job.sh")], check=True)  # the job script parses


def test_job_script_quotes_config_values(tmp_path: Path) -> None:
    evil = f"$(touch {tmp_path}/pwned); `touch {tmp_path}/pwned2`"
    settings = DFTSettings(env={"X": evil}, modules=[evil], setup_script=evil, launcher=[evil])
    script = job_script(tmp_path, [*settings.launcher, "true"], settings, title="t")
    # run only the part before the module line (no `module` command here): the export must not execute
    head = script.split("\nmodule load")[0]
    subprocess.run(["bash", "-c", head + '\n[ "$X" = ' + _q(evil) + " ]"], check=True, cwd=tmp_path)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    with pytest.raises(ValueError, match="environment-variable name"):
        job_script(tmp_path, ["true"], DFTSettings(env={"A;rm -rf /": "1"}), title="t")


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValidationError, match="cutof"):
        DFTSettings(cutof=200)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="scheduler"):
        DFTSettings(scheduler="pbs")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="walltime_factor"):
        DFTSettings(retry={"walltime_factor": 0.5})
    assert DFTSettings(max_attempts=5).retry.max_attempts == 5
    assert DFTSettings(code="qe").resolved().cutoff_eV == pytest.approx(544.2)
    assert DFTSettings(code="vasp").resolved().cutoff_eV == 520


def test_registry_and_wrong_code() -> None:
    from oracles.registry import available_oracles, get_oracle

    assert {"gpaw", "dft"} <= set(available_oracles())
    assert get_oracle("dft", code="qe").name == "qe"
    with pytest.raises(ValueError, match="'dft' oracle"):
        get_oracle("gpaw", code="vasp")
