"""Real GPAW jobs through a real single-node SLURM (started by the ``slurm`` fixture)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from oracles.base import Candidate
from oracles.dft.oracle import DFTOracle
from oracles.queue import FileLedger, drive, job_dir
from tests.oracles.dft.conftest import CHEAP, si_structure, tc_structure

pytestmark = pytest.mark.usefixtures("gpaw_available", "slurm")


def _oracle(root: Path, **extra: object) -> DFTOracle:
    return DFTOracle(workdir=str(root), scheduler="slurm", partition="debug", **{**CHEAP, **extra})


def test_si_and_failures_through_slurm(tmp_path: Path) -> None:
    oracle = _oracle(tmp_path, max_attempts=1, memory_mb=2000)
    cands = [Candidate.from_structure(si_structure(), id="si"), Candidate.from_structure(tc_structure(), id="tc")]
    si, tc = oracle.evaluate(cands, seed=0)
    assert si.status == "ok", si.message
    assert si.provenance["scheduler"] == "slurm" and si.provenance["scheduler_state"] == "COMPLETED"
    assert si.targets["formation_energy_per_atom"] == pytest.approx(0.0, abs=1e-3)
    assert si.targets["energy_per_atom"] == pytest.approx(-5.081, abs=0.01)
    assert tc.status == "failed" and tc.provenance["failure"] == "exit_code"
    assert tc.provenance["scheduler_state"] == "FAILED" and tc.provenance["exit_code"] == 1
    out = (Path(si.provenance["job_dir"]) / "job.out")
    assert out.exists()


def test_scf_unconverged_through_slurm(tmp_path: Path) -> None:
    oracle = _oracle(tmp_path, max_attempts=1, max_scf_iterations=2)
    [r] = oracle.evaluate([Candidate.from_structure(si_structure(), id="si")], seed=0)
    assert r.status == "unconverged" and r.provenance["failure"] == "scf_unconverged"


def test_cancelled_job_is_classified(tmp_path: Path) -> None:
    oracle = _oracle(tmp_path, max_attempts=1, elemental_references="none")
    cand = Candidate.from_structure(si_structure(), id="si")
    ledger = FileLedger(tmp_path / "ledger")
    assert drive(oracle, [cand], root=tmp_path, ledger=ledger, seed=0, wait=False) == {}
    [handle] = ledger.submissions("si")
    subprocess.run(["scancel", handle.job_id], check=True)
    finals = drive(oracle, [cand], root=tmp_path, ledger=ledger, seed=0, poll_interval_s=0.5)
    assert finals["si"].provenance["failure"] == "cancelled" and finals["si"].status == "failed"


def test_crash_between_sbatch_and_recording_the_id(tmp_path: Path) -> None:
    """The job id file is lost (as if killed right after sbatch): the job is found by its name, not resubmitted."""
    oracle = _oracle(tmp_path, elemental_references="none")
    cand = Candidate.from_structure(si_structure(), id="si")
    handle = oracle.submit(cand, seed=0, workdir=job_dir(tmp_path, "si", 0))
    (Path(handle.workdir) / "jobid").unlink()
    ledger = FileLedger(tmp_path / "ledger")  # empty: the submission was never recorded
    finals = drive(oracle, [cand], root=tmp_path, ledger=ledger, seed=0, poll_interval_s=0.5)
    assert finals["si"].status == "ok" and finals["si"].provenance["job_id"] == handle.job_id
    assert [h.job_id for h in ledger.submissions("si")] == [handle.job_id]


@pytest.mark.slow
def test_timeout_through_slurm(tmp_path: Path) -> None:
    """SLURM's smallest time limit is one minute: a 64-atom Si cell at 400 eV with dense k-points runs longer."""
    from pymatgen.core import Lattice, Structure

    big = Structure.from_spacegroup(227, Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]) * (2, 2, 2)
    oracle = _oracle(tmp_path, max_attempts=1, walltime_s=60, cutoff_eV=400, kpoint_density=3.0,
                     elemental_references="none")
    [r] = oracle.evaluate([Candidate.from_structure(big, id="si64")], seed=0)
    assert r.status == "timeout" and r.provenance["failure"] == "timeout", r
    assert r.provenance["scheduler_state"] == "TIMEOUT"
