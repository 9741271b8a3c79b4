"""Kill test: a campaign SIGKILLed at many moments and resumed each time ends with exactly the
oracle calls of an uninterrupted run with the same seed — none lost, none repeated.

Real Prefect (the session's server), real store (SQLite), density oracle (cheap and exact). The
kills come at named points (``MATLOOP_KILL_AT``: after the proxy fit, after storing candidates,
after storing the batch, between starting an oracle job and storing its result, right after a
result is stored, after logging) and at seeded random moments (SIGKILL to the process group from
outside, wherever it happens to be).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestration.store import Store

CONFIG: dict = {
    "seed": 11,
    "targets": [{"name": "density", "goal": "maximize"}],
    "search_space": {"elements": ["Li", "Na", "Mg", "O", "F", "Cl"], "max_elements": 3, "max_atoms_per_element": 4,
                     "max_atoms": 8, "space_groups": ["cubic", "tetragonal"], "length_range": [2.0, 10.0]},
    "seed_data": {"dataset": "mp20", "max_rows": 120},
    "proxy": {"members": 2, "hidden": 32, "layers": 2, "epochs": 4},
    "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 1.0},
    "generator": {"iterations_first_round": 4, "iterations_per_round": 2, "hyper": {"hidden": 32, "layers": 2, "batch_size": 16}},
    "candidates_per_round": 40,
    "batch_size": 5,
    "oracle": {"name": "density", "retries": 0},
    "rounds": 2,
    "success": {"metric": "density", "at_least": 2.5},
    "tracking": {"enabled": False},
    "runner": {"kind": "local", "max_workers": 2},
}

# (point, n-th time in that process): each kill lands later in the campaign than the one before.
NAMED_KILLS = [("proxy_fitted", 1), ("sampled", 1), ("selected", 1), ("oracle_started", 2), ("result_recorded", 2),
               ("logged", 1), ("generator_trained", 1), ("oracle_started", 1)]


def _config(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **CONFIG, "campaign_dir": str(tmp / name)}))
    return path


def _env(prefect_api_url: str, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MATLOOP_KILL_AT", "MATLOOP_STORE_URL", "MLFLOW_TRACKING_URI")}
    env.update(PREFECT_API_URL=prefect_api_url, PREFECT_HOME=str(home / ".prefect"), PREFECT_LOGGING_LEVEL="WARNING",
               **extra)
    return env


def _matloop(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", *args, "--quiet"], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _calls(db: Path, name: str) -> dict[str, tuple[str, int, str, str]]:
    """candidate id → (composition, space group, status, targets) of every stored oracle result."""
    store = Store.open(f"sqlite:///{db}", create=False)
    try:
        crystals = {c.id: c for c in store.crystals(name)}
        out = {}
        for r in store.results(name):
            c = crystals[r.candidate_id]
            out[r.candidate_id] = (c.formula, c.space_group, r.status, repr(sorted(r.targets.items())))
        assert len(out) == len(store.results(name))  # one result per candidate
        return out
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_oracle_calls(tmp_path: Path, prefect_api_url: str) -> None:
    env = _env(prefect_api_url, tmp_path)
    base = _matloop(["run", str(_config(tmp_path, "base"))], env, tmp_path)
    _, err = base.communicate(timeout=600)
    assert base.returncode == 0, err.decode()[-2000:]
    expected = _calls(tmp_path / "base" / "store.db", "base")
    assert len(expected) == 10  # 2 rounds x batch 5

    cfg = _config(tmp_path, "killed")
    db = tmp_path / "killed" / "store.db"
    killed_at = []
    for point, nth in NAMED_KILLS:
        proc = _matloop(["run", str(cfg)], _env(prefect_api_url, tmp_path, MATLOOP_KILL_AT=f"{point}:{nth}"), tmp_path)
        _, err = proc.communicate(timeout=600)
        if proc.returncode == -signal.SIGKILL:
            killed_at.append(point)
        else:  # the point was not reached again: the campaign must then have finished cleanly
            assert proc.returncode == 0, err.decode()[-2000:]
    rng = random.Random(5)
    for _ in range(2):  # random moments, from outside, to the whole process group
        proc = _matloop(["resume", "killed", "--dir", str(tmp_path / "killed")], env, tmp_path)
        try:
            proc.wait(timeout=rng.uniform(4.0, 12.0))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_at.append("random")
    assert len(killed_at) >= 5 and {p for p, _ in NAMED_KILLS} <= set(killed_at), killed_at

    final = _matloop(["resume", "killed", "--dir", str(tmp_path / "killed")], env, tmp_path)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err.decode()[-2000:]
    got = _calls(db, "killed")
    assert got == expected  # same candidates, same results: none lost, none repeated, nothing extra
    store = Store.open(f"sqlite:///{db}", create=False)
    try:
        assert all(r.completed for r in store.rounds("killed")) and len(store.rounds("killed")) == 2
        assert store.pending("killed") == []
        attempts = store.job_attempts("killed")
        # A job is started again only when a kill landed between its start and its stored result.
        assert set(attempts) == set(expected) and max(attempts.values()) <= 1 + len(killed_at)
        assert store.get_campaign("killed").status == "completed"
    finally:
        store.close()


def _live_processes_with(env_value: str) -> list[str]:
    """``"PID: command line"`` of live (not zombie) processes whose environment holds ``env_value``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if env_value.encode() in (proc / "environ").read_bytes() and " Z " not in (proc / "stat").read_text():
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {cmd}")
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


@pytest.mark.slow
def test_sigterm_stops_gracefully_and_leaves_no_server_behind(tmp_path: Path) -> None:
    """`kill PID` during an oracle call: the call in flight finishes and is stored, Prefect marks the runs
    crashed, the process exits with 143 and a resume hint, and the temporary Prefect server it started
    (no PREFECT_API_URL: ephemeral mode) is stopped, not left running without a parent; resume finishes."""
    home = tmp_path / "home"
    (home / ".prefect").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MATLOOP_KILL_AT", "MATLOOP_STORE_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env.update(PREFECT_HOME=str(home / ".prefect"), PREFECT_LOGGING_LEVEL="WARNING")
    cfg = _config(tmp_path, "termed")
    proc = _matloop(["run", str(cfg)], env | {"MATLOOP_KILL_AT": "oracle_started:2:TERM"}, tmp_path)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # e.g. an orphaned server holding stderr open
        os.killpg(proc.pid, signal.SIGKILL)
        for leftover in _live_processes_with(f"PREFECT_HOME={home / '.prefect'}"):
            os.kill(int(leftover.split(":")[0]), signal.SIGKILL)
        pytest.fail("`matloop run` did not end within 300 s of SIGTERM (or its stderr was held open by a child)")
    text = err.decode()
    assert proc.returncode == 128 + signal.SIGTERM, text[-2000:]
    assert "stopped by signal 15" in text and "matloop resume termed" in text
    assert _live_processes_with(f"PREFECT_HOME={home / '.prefect'}") == []  # no orphaned server or worker
    db = tmp_path / "termed" / "store.db"
    assert len(_calls(db, "termed")) >= 2  # both started oracle calls finished and were stored

    final = _matloop(["resume", "termed", "--dir", str(tmp_path / "termed")], env, tmp_path)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err.decode()[-2000:]
    assert len(_calls(db, "termed")) == 10
    assert _live_processes_with(f"PREFECT_HOME={home / '.prefect'}") == []
