"""CHGNet oracle fault handling: each fault becomes a result with the right status while the rest of
the batch completes. Faults are injected into the real CHGNet ASE calculator (see helpers.FaultyCalculator),
so these tests pin ``engine="ase"``; the batched engine's fault isolation is tested in test_batched.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from oracles.base import Candidate
from oracles.chgnet import CHGNetOracle
from tests.oracles.helpers import FaultFactory, impossible_crystal, small_structures

FAULTS = {"MgO": "raise", "LiF": "nan", "KCl": "explode", "NaF": "collapse", "Si": "slow"}
EXPECTED = {
    "NaCl": ("ok", ""),
    "MgO": ("failed", "RuntimeError: injected model failure"),
    "LiF": ("failed", "non-finite energy"),
    "KCl": ("failed", "structure exploded"),
    "NaF": ("failed", "structure collapsed"),
    "Si": ("timeout", "timed out"),
    "impossible": ("invalid", "not compatible with the Wyckoff positions of space group 225"),
}


def _batch() -> list[Candidate]:
    cands = [Candidate.from_structure(s, id=k) for k, s in small_structures().items()]
    return [*cands, Candidate.from_crystal(impossible_crystal())]


def _check(results: list) -> None:
    assert [r.candidate_id for r in results] == [c.id for c in _batch()]
    for r in results:
        status, fragment = EXPECTED[r.candidate_id]
        assert r.status == status, (r.candidate_id, r.message)
        assert fragment in r.message, (r.candidate_id, r.message)
    timed_out = next(r for r in results if r.candidate_id == "Si")
    assert timed_out.n_steps >= 1 and timed_out.energies  # partial trajectory kept
    ok = next(r for r in results if r.candidate_id == "NaCl")
    assert ok.targets["formation_energy_per_atom"] is not None and math.isfinite(ok.targets["formation_energy_per_atom"])
    assert ok.structure_cif and ok.provenance["reference"] and ok.provenance["model_version"]


def test_faults_become_results_in_process(mp20_dir: Path) -> None:
    oracle = CHGNetOracle(calculator_factory=FaultFactory(FAULTS), engine="ase", workers=0, steps=60, timeout_s=3.0,
                          mp20_dir=str(mp20_dir))
    _check(oracle.evaluate(_batch()))


@pytest.mark.slow
def test_faults_become_results_in_worker_processes(mp20_dir: Path) -> None:
    with CHGNetOracle(calculator_factory=FaultFactory(FAULTS), engine="ase", workers=2, steps=60, timeout_s=3.0,
                      mp20_dir=str(mp20_dir)) as oracle:
        _check(oracle.evaluate(_batch()))


@pytest.mark.slow
def test_a_crashing_worker_loses_only_its_own_candidate(mp20_dir: Path) -> None:
    structures = small_structures()
    batch = [Candidate.from_structure(structures[k], id=k) for k in ("NaCl", "MgO", "LiF", "KCl")]
    with CHGNetOracle(calculator_factory=FaultFactory({"MgO": "crash"}), engine="ase", workers=2, steps=30,
                      mp20_dir=str(mp20_dir)) as oracle:
        results = oracle.evaluate(batch)
        assert [r.candidate_id for r in results] == ["NaCl", "MgO", "LiF", "KCl"]
        assert [r.status for r in results] == ["ok", "failed", "ok", "ok"]
        assert "worker process died" in results[1].message
        assert oracle.evaluate(batch[:1])[0].status == "ok"  # the pool is rebuilt for the next batch


@pytest.mark.slow
def test_a_hung_model_call_is_killed_at_the_hard_deadline(mp20_dir: Path) -> None:
    structures = small_structures()
    batch = [Candidate.from_structure(structures[k], id=k) for k in ("NaCl", "Si")]
    with CHGNetOracle(calculator_factory=FaultFactory({"Si": "hang"}), engine="ase", workers=2, steps=30, timeout_s=2.0,
                      hard_timeout_grace_s=3.0, mp20_dir=str(mp20_dir)) as oracle:
        results = oracle.evaluate(batch)
    assert [r.status for r in results] == ["ok", "timeout"]
    assert "hard limit" in results[1].message


def test_unconverged_relaxation_is_reported(chgnet_fast: CHGNetOracle, mp20_dir: Path) -> None:
    s = small_structures()["NaCl"].copy()
    s.perturb(0.3, 0.2, seed=0)
    oracle = CHGNetOracle(workers=0, steps=2, fmax=0.001, mp20_dir=str(mp20_dir))
    res = oracle.evaluate([Candidate.from_structure(s, id="rattled")])[0]
    assert res.status == "unconverged" and "not converged" in res.message and res.n_steps == 2
    assert res.targets["energy_per_atom"] is not None  # last-step energy is kept


def test_missing_reference_data_fails_every_result_cleanly(tmp_path: Path) -> None:
    oracle = CHGNetOracle(workers=0, mp20_dir=str(tmp_path))
    results = oracle.evaluate(_batch()[:2])
    assert [r.status for r in results] == ["failed", "failed"]
    assert "MP-20 reference entries not found" in results[0].message


@pytest.mark.slow
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed campaign must not leave CHGNet worker processes behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("import os, sys\n"
              "from oracles.chgnet import CHGNetOracle\n"
              "o = CHGNetOracle(workers=2)\n"
              "o.warm_up()\n"
              "print(' '.join(str(p) for p in o._pool._processes), flush=True)\n"
              "import time; time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd())
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_the_batched_engine_refuses_a_calculator_it_would_bypass(mp20_dir: Path) -> None:
    """The batched engine runs CHGNet's torch model, never an ASE calculator's calculate(): a factory whose
    calculator overrides it (fault injection, a wrapped model) fails each candidate with a message naming the fix,
    instead of silently relaxing with plain CHGNet."""
    oracle = CHGNetOracle(calculator_factory=FaultFactory(FAULTS), engine="batched", workers=0, steps=5,
                          mp20_dir=str(mp20_dir))
    results = oracle.evaluate(_batch()[:2])
    assert [r.status for r in results] == ["failed", "failed"]
    assert all("engine: ase" in r.message and "FaultyCalculator" in r.message for r in results)
