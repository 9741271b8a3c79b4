"""Campaigns with a queued oracle: real GPAW DFT jobs through the ``local`` scheduler adapter, a real
Prefect server and a SQLite store.

* a 2-round campaign (≤ 4 atoms per cell, batch 2) completes with DFT labels, through the ``local``
  queue and through a real single-node SLURM (``sbatch``);
* ``--no-wait`` stops a round with its jobs in flight and ``matloop resume`` collects them;
* SIGKILL right after a job is submitted (before and after it is recorded in the store) and at a
  random moment while jobs run, then resume: every candidate ends with one result and no job was
  submitted twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestration.store import Store
from tests.orchestration.test_kill import _env

pytest.importorskip("gpaw", reason="GPAW is installed by `make install` (see Makefile)")

CONFIG: dict = {
    "seed": 3,
    "targets": [{"name": "formation_energy_per_atom", "goal": "minimize"}],
    "search_space": {"elements": ["Li", "Na", "F", "Cl"], "max_elements": 2, "max_atoms_per_element": 2,
                     "max_atoms": 4, "length_range": [3.0, 5.5], "angle_range": [70.0, 110.0]},
    "seed_data": {"dataset": "mp20", "max_rows": 60},
    "proxy": {"members": 2, "hidden": 16, "layers": 1, "epochs": 3},
    "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 0.25},
    "generator": {"iterations_first_round": 3, "iterations_per_round": 2, "hyper": {"hidden": 32, "layers": 2, "batch_size": 16}},
    "candidates_per_round": 30,
    "batch_size": 2,
    "oracle": {"name": "gpaw", "retries": 0, "poll_interval_s": 0.5,
               "settings": {"cutoff_eV": 200.0, "kpts": [2, 2, 2], "max_parallel": 2, "walltime_s": 600,
                            "max_scf_iterations": 60}},
    "rounds": 2,
    "success": {"metric": "formation_energy_per_atom", "at_most": 0.0},
    "tracking": {"enabled": False},
}


def _config(tmp: Path, name: str, **over: object) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **CONFIG, **over, "campaign_dir": str(tmp / name)}))
    return path


def _matloop(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Like the kill test's, but keeping stdout (the run reports jobs in flight there)."""
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", *args, "--quiet"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _finish(proc: subprocess.Popen[bytes], timeout: float = 900) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode() + err.decode()


def _check_store(db: Path, name: str, *, rounds: int) -> None:
    """Every batch candidate has one result and exactly one submission per attempt; attempt dirs match."""
    store = Store.open(f"sqlite:///{db}", create=False)
    try:
        assert [r.index for r in store.rounds(name) if r.completed] == list(range(rounds))
        assert store.pending(name) == []
        results = store.results(name)
        batch = [cid for r in range(rounds) for cid in store.batch(name, r)]
        assert sorted(r.candidate_id for r in results) == sorted(batch) and len(batch) == 2 * rounds
        subs = store.submissions(name)
        per_candidate: dict[str, list[int]] = {}
        for s in subs:
            per_candidate.setdefault(s.candidate_id, []).append(s.attempt)
            assert Path(s.workdir).is_dir()
        assert set(per_candidate) == set(batch)
        for cid, attempts in per_candidate.items():
            assert attempts == list(range(len(attempts))), (cid, attempts)  # 0, 1, ... each once
            candidate_dir = Path(next(s.workdir for s in subs if s.candidate_id == cid)).parent
            assert len(list(candidate_dir.glob("attempt-*"))) == len(attempts), cid  # no unrecorded submission
        ok = [r for r in results if r.status == "ok"]
        assert ok, [(r.candidate_id, r.status, r.provenance.get("message")) for r in results]
        for r in ok:
            assert r.targets.get("energy_per_atom") is not None and r.targets.get("formation_energy_per_atom") is not None
    finally:
        store.close()


@pytest.mark.slow
def test_gpaw_campaign_through_the_local_queue(tmp_path: Path, prefect_api_url: str) -> None:
    env = _env(prefect_api_url, tmp_path)
    code, log = _finish(_matloop(["run", str(_config(tmp_path, "dft"))], env, tmp_path))
    assert code == 0, log[-3000:]
    _check_store(tmp_path / "dft" / "store.db", "dft", rounds=2)


@pytest.mark.slow
def test_gpaw_campaign_through_slurm(tmp_path: Path, prefect_api_url: str, slurm: Path) -> None:
    oracle = {**CONFIG["oracle"], "settings": {**CONFIG["oracle"]["settings"], "scheduler": "slurm"}}
    env = _env(prefect_api_url, tmp_path, SLURM_CONF=str(slurm / "slurm.conf"))
    code, log = _finish(_matloop(["run", str(_config(tmp_path, "dftslurm", oracle=oracle))], env, tmp_path))
    assert code == 0, log[-3000:]
    _check_store(tmp_path / "dftslurm" / "store.db", "dftslurm", rounds=2)
    store = Store.open(f"sqlite:///{tmp_path / 'dftslurm' / 'store.db'}", create=False)
    try:
        # every job went through SLURM; "none" marks a candidate that failed before any job (e.g. no placement)
        jobs = [s for s in store.submissions("dftslurm") if s.scheduler != "none"]
        assert jobs and {s.scheduler for s in jobs} == {"slurm"}
        assert all(s.job_id.isdigit() for s in jobs)  # SLURM job ids
    finally:
        store.close()


@pytest.mark.slow
def test_no_wait_then_resume_and_kills_with_jobs_in_flight(tmp_path: Path, prefect_api_url: str) -> None:
    cfg = _config(tmp_path, "dftkill")
    db = tmp_path / "dftkill" / "store.db"
    # 1. --no-wait: round 0 submits its two jobs and the run returns, reporting them in flight.
    code, log = _finish(_matloop(["run", str(cfg), "--no-wait"], _env(prefect_api_url, tmp_path), tmp_path))
    assert code == 0 and "in flight" in log, log[-3000:]
    store = Store.open(f"sqlite:///{db}", create=False)
    try:
        assert len(store.submissions("dftkill")) == 2 and store.get_round("dftkill", 0).state == "evaluating"
    finally:
        store.close()
    # 2. resume, killed right after the first job of round 1 is submitted but before the store records it,
    #    then right after the second is recorded; 3. a kill at a random moment while jobs run.
    kills = []
    for point in ("job_submitted:1", "submitted:2"):
        proc = _matloop(["resume", "dftkill", "--dir", str(tmp_path / "dftkill")],
                        _env(prefect_api_url, tmp_path, MATLOOP_KILL_AT=point), tmp_path)
        code, log = _finish(proc)
        if code == -signal.SIGKILL:
            kills.append(point)
        else:
            assert code == 0, log[-3000:]
    proc = _matloop(["resume", "dftkill", "--dir", str(tmp_path / "dftkill")], _env(prefect_api_url, tmp_path), tmp_path)
    time.sleep(3.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert kills == ["job_submitted:1", "submitted:2"]
    code, log = _finish(_matloop(["resume", "dftkill", "--dir", str(tmp_path / "dftkill")],
                                 _env(prefect_api_url, tmp_path), tmp_path))
    assert code == 0, log[-3000:]
    _check_store(db, "dftkill", rounds=2)
