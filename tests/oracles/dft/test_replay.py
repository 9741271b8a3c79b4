"""Replay mode (in the spirit of atomate2's ``mock_vasp``): real GPAW job folders recorded once
(``data/replay/<case>``, by running the jobs of ``test_local.py``) are collected again, so parsing and
failure classification are checked in milliseconds. Cases: ``si-ok`` (static), ``si-relax`` (3 BFGS
steps), ``si-scf`` (SCF capped at 2 iterations), ``tc-error`` (no PAW setup for Tc: exit 1),
``si-timeout`` (1 s walltime, SIGTERM from the local runner). The state-file variants (lost runner,
SIGKILL, corrupt result.json, cancelled) edit a copy of a recorded folder the way that event would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from oracles.base import OracleResult
from oracles.dft.oracle import DFTOracle
from oracles.queue import JobHandle
from tests.oracles.dft.conftest import DATA

REPLAY = DATA / "replay"


def replay(case: str, tmp_path: Path, *, edit: dict[str, str | None] | None = None,
           job_id: str = "1.0") -> OracleResult:
    jobdir = tmp_path / case / "attempt-0"
    shutil.copytree(REPLAY / case, jobdir)
    for name, text in (edit or {}).items():
        if text is None:
            (jobdir / name).unlink()
        else:
            (jobdir / name).write_text(text)
    settings = json.loads((jobdir / "settings.json").read_text())
    settings["workdir"] = str(tmp_path)
    oracle = DFTOracle(**settings)
    handle = JobHandle(case, 0, job_id, "local", str(jobdir))
    assert oracle.poll([handle]) == ["finished"]
    return oracle.collect(handle)


def test_ok(tmp_path: Path) -> None:
    r = replay("si-ok", tmp_path)
    assert r.status == "ok" and "failure" not in r.provenance
    assert r.targets["energy_per_atom"] == pytest.approx(-5.081, abs=0.01)
    assert r.targets["formation_energy_per_atom"] == pytest.approx(0.0, abs=1e-3)
    assert r.targets["max_force"] < 1e-6 and r.targets["density"] == pytest.approx(2.33, abs=0.01)
    assert r.structure() is not None and len(r.structure()) == 2  # type: ignore[arg-type]
    assert r.provenance["gpaw_version"] and r.provenance["exit_code"] == 0
    assert r.provenance["hull_reference"]["note"].startswith("MP2020-scale")
    assert OracleResult.from_json(r.to_json()) == r


def test_relax_trajectory(tmp_path: Path) -> None:
    r = replay("si-relax", tmp_path)
    assert r.status == "ok" and r.n_steps == 3 and len(r.energies) == 4
    assert r.energies == sorted(r.energies, reverse=True)  # BFGS went downhill on a fixed k-point grid


@pytest.mark.parametrize(("case", "status", "failure"), [
    ("si-scf", "unconverged", "scf_unconverged"),
    ("tc-error", "failed", "exit_code"),
    ("si-timeout", "timeout", "timeout"),
])
def test_recorded_failures(case: str, status: str, failure: str, tmp_path: Path) -> None:
    r = replay(case, tmp_path)
    assert (r.status, r.provenance["failure"]) == (status, failure), r.message
    assert r.message and not r.targets


def _runner(case: str, **changes: object) -> str:
    doc = json.loads((REPLAY / case / "runner.json").read_text())
    doc.update(changes)
    return json.dumps(doc)


def test_corrupt_result_is_a_parse_error(tmp_path: Path) -> None:
    text = (REPLAY / "si-ok" / "result.json").read_text()[:200]
    r = replay("si-ok", tmp_path, edit={"result.json": text})
    assert r.provenance["failure"] == "parse_error" and r.status == "failed"


def test_sigkill_without_output_is_out_of_memory(tmp_path: Path) -> None:
    r = replay("si-ok", tmp_path, edit={"result.json": None, "runner.json": _runner("si-ok", exit_code=137),
                                        "job.status": "started 1.0\nexit 137 2.0\n"})
    assert r.provenance["failure"] == "out_of_memory"


def test_runner_gone_without_exit_is_lost(tmp_path: Path) -> None:
    r = replay("si-ok", tmp_path, job_id="999999999.1",
               edit={"result.json": None, "runner.json": _runner("si-ok", state="running", job_pid=999999998),
                     "job.status": "started 1.0\n"})
    assert r.provenance["failure"] == "lost"


def test_cancelled(tmp_path: Path) -> None:
    r = replay("si-timeout", tmp_path, edit={"runner.json": _runner("si-timeout", timed_out=False, cancelled=True)})
    assert r.provenance["failure"] == "cancelled"


def test_retry_settings(tmp_path: Path) -> None:
    oracle = DFTOracle(workdir=str(tmp_path), memory_mb=1000, walltime_s=100, max_scf_iterations=50)
    scf = replay("si-scf", tmp_path / "a")
    assert oracle.should_retry(scf, attempt=0) and not oracle.should_retry(scf, attempt=2)
    nxt = oracle.settings_for(scf)
    assert nxt.max_scf_iterations == 4 and nxt.mixing_beta == pytest.approx(0.15)  # recorded run had 2
    timeout = replay("si-timeout", tmp_path / "b")
    assert oracle.settings_for(timeout).walltime_s == 2  # recorded run had 1 s
    oom = OracleResult(candidate_id="x", status="failed", message="oom",
                       provenance={"failure": "out_of_memory", "settings": {"memory_mb": 1000}})
    assert oracle.settings_for(oom).memory_mb == 2000
    err = replay("tc-error", tmp_path / "c")
    assert not oracle.should_retry(err, attempt=0)  # exit codes are not retried by default


def test_qe_recorded_outputs(tmp_path: Path) -> None:
    """Real pw.x 6.7 outputs (Debian quantum-espresso, Si.pbe-rrkj.UPF, 300 eV): static, vc-relax, SCF cap."""
    ok = replay("qe-si-ok", tmp_path / "a")
    assert ok.status == "ok" and ok.provenance["code"] == "qe"
    assert ok.targets["energy_per_atom"] == pytest.approx(-106.78, abs=0.01)  # QE's scale: pseudopotential-dependent
    assert ok.targets["formation_energy_per_atom"] is None
    assert ok.provenance["formation_energy_reference"].startswith("none")
    relax = replay("qe-si-relax", tmp_path / "b")
    assert relax.status == "ok" and relax.n_steps == 4 and relax.energies[-1] < relax.energies[0]
    scf = replay("qe-si-scf", tmp_path / "c")
    assert scf.status == "unconverged" and scf.provenance["failure"] == "scf_unconverged"


def test_an_exploded_final_structure_is_invalid(tmp_path: Path) -> None:
    """The sanity gate on what the job ended with: the recorded Si cell scaled 10× (20,000 Å³/atom)."""
    doc = json.loads((REPLAY / "si-ok" / "result.json").read_text())
    doc["structure"]["cell"] = [[10 * x for x in row] for row in doc["structure"]["cell"]]
    doc["structure"]["positions"] = [[10 * x for x in row] for row in doc["structure"]["positions"]]
    r = replay("si-ok", tmp_path, edit={"result.json": json.dumps(doc)})
    assert r.status == "invalid" and not r.targets, r.message
    assert r.message.startswith("unphysical final structure: volume per atom") and "460" in r.message
    assert r.provenance["sanity_gates"]["neighbor_cutoff_A"] == 6.0 and "failure" not in r.provenance
