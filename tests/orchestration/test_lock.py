"""One campaign, one writer (issue 14, defect 8): the campaign lock on real SQLite and PostgreSQL stores,
a real holder process killed with SIGKILL, and two real `matloop run` of one campaign."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from orchestration.store import Store
from orchestration.store.locks import CampaignLock, CampaignLocked, Holder, hold_campaign, lock_holder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_a_second_writer_is_refused_with_the_holder_named(url: str) -> None:
    with Store.open(url) as a, Store.open(url) as b:
        with CampaignLock(a, "demo", command="matloop run demo.yaml"):
            with pytest.raises(CampaignLocked) as info:
                CampaignLock(b, "demo", command="matloop run demo.yaml").acquire()
            msg = str(info.value)
            assert f"pid {os.getpid()}" in msg and "matloop run demo.yaml" in msg and "'demo'" in msg
            assert lock_holder(b, "demo") is not None
            with CampaignLock(b, "other"):  # another campaign of the same store is free
                pass
        with CampaignLock(b, "demo") as again:  # released: free again
            assert again.taken_over is None
        assert lock_holder(a, "demo") is None


def test_the_heartbeat_keeps_a_lock_and_a_takeover_is_noticed(url: str) -> None:
    elsewhere = Holder(host="node-7", boot_id="other-boot", pid=4242, pid_start="1", command="matloop run")
    with Store.open(url) as a, Store.open(url) as b:
        remote = CampaignLock(a, "demo", heartbeat_s=0.2, stale_after_s=1.0, holder=elsewhere).acquire()
        time.sleep(1.5)  # beating: still fresh although older than stale_after_s
        with pytest.raises(CampaignLocked, match="pid 4242 on host node-7"):
            CampaignLock(b, "demo", stale_after_s=1.0).acquire()
        remote._stop.set()  # the remote machine dies: no more heartbeats
        time.sleep(1.5)
        mine = CampaignLock(b, "demo", stale_after_s=1.0).acquire()
        assert mine.taken_over is not None and "no heartbeat" in mine.taken_over and "4242" in mine.taken_over
        assert remote.beat() is False and remote.lost
        mine.release()
        remote.release()


HOLDER = textwrap.dedent("""
    import sys, time
    from orchestration.store import Store
    from orchestration.store.locks import CampaignLock
    lock = CampaignLock(Store.open(sys.argv[1]), "demo", command="holder").acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_a_lock_of_a_killed_process_is_taken_over_at_once(url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with Store.open(url) as s:
            with pytest.raises(CampaignLocked, match=f"pid {proc.pid}"):
                CampaignLock(s, "demo").acquire()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            with CampaignLock(s, "demo") as lock:  # same machine, process gone: no waiting for the heartbeat
                assert lock.taken_over is not None and f"its process {proc.pid} is gone" in lock.taken_over
    finally:
        proc.kill()
        proc.wait()


def test_status_names_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.campaign.status import status
    from orchestration.config import parse_config
    from orchestration.store import open_campaign

    monkeypatch.delenv("MATLOOP_STORE_URL", raising=False)
    cfg = parse_config({"name": "w", "targets": [{"name": "density"}], "search_space": {"elements": ["Na", "Cl"]},
                        "seed_data": {"dataset": "mp20"}, "candidates_per_round": 4, "batch_size": 2,
                        "oracle": {"name": "density"}, "rounds": 1, "campaign_dir": str(tmp_path / "w")})
    store, _ = open_campaign(cfg)
    with store:
        assert status(store, "w")["writer"] is None
        with CampaignLock(store, "w", command="matloop run w.yaml"):
            assert f"pid {os.getpid()}" in status(store, "w")["writer"]


def test_hold_campaign_is_reentrant_within_a_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with hold_campaign(url, "demo", command="outer") as outer, hold_campaign(url, "demo", command="inner") as inner:
        assert inner is outer
    with Store.open(url) as s:
        assert lock_holder(s, "demo") is None


# -- acceptance: two `matloop run` of one campaign, then a SIGKILL and a resume --------------------------

CONFIG: dict = {
    "seed": 11,
    "targets": [{"name": "density", "goal": "maximize"}],
    "search_space": {"elements": ["Li", "Na", "Mg", "O", "F", "Cl"], "max_elements": 3, "max_atoms_per_element": 4,
                     "max_atoms": 8, "space_groups": ["cubic", "tetragonal"], "length_range": [2.0, 10.0]},
    "seed_data": {"dataset": "mp20", "max_rows": 120},
    "proxy": {"members": 2, "hidden": 32, "layers": 2, "epochs": 4},
    "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 1.0},
    "generator": {"iterations_first_round": 4, "iterations_per_round": 2,
                  "hyper": {"hidden": 32, "layers": 2, "batch_size": 16}},
    "candidates_per_round": 40,
    "batch_size": 5,
    "oracle": {"name": "density", "retries": 0},
    "rounds": 2,
    "success": {"metric": "density", "at_least": 2.5},
    "tracking": {"enabled": False},
    "runner": {"kind": "local", "max_workers": 1},
}


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
    with Store.open(f"sqlite:///{db}", create=False) as store:
        crystals = {c.id: c for c in store.crystals(name)}
        return {r.candidate_id: (crystals[r.candidate_id].formula, crystals[r.candidate_id].space_group, r.status,
                                 repr(sorted(r.targets.items()))) for r in store.results(name)}


@pytest.mark.slow
def test_concurrent_runs_one_is_refused_and_a_killed_holder_is_taken_over(tmp_path: Path,
                                                                           prefect_api_url: str) -> None:
    env = _env(prefect_api_url, tmp_path)
    base = _matloop(["run", str(_config(tmp_path, "base"))], env, tmp_path)
    _, err = base.communicate(timeout=600)
    assert base.returncode == 0, err.decode()[-2000:]
    expected = _calls(tmp_path / "base" / "store.db", "base")
    assert len(expected) == 10

    cfg = _config(tmp_path, "twice")
    # the first run stops itself (SIGSTOP) mid-round, between starting its 2nd oracle call and storing it
    first = _matloop(["run", str(cfg)], _env(prefect_api_url, tmp_path, MATLOOP_KILL_AT="oracle_started:2:STOP"),
                     tmp_path)
    try:
        deadline = time.monotonic() + 600
        while not (Path(f"/proc/{first.pid}/stat").exists()
                   and Path(f"/proc/{first.pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"):
            assert first.poll() is None and time.monotonic() < deadline, "the first run never reached its stop point"
            time.sleep(0.5)
        second = _matloop(["run", str(cfg)], env, tmp_path)
        _, err2 = second.communicate(timeout=300)
        text = " ".join(err2.decode().split())
        assert second.returncode != 0, text
        assert f"pid {first.pid}" in text and "'twice' is being written by" in text and "Traceback" not in text, text
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    resumed = _matloop(["resume", "twice", "--dir", str(tmp_path / "twice")], env, tmp_path)
    _, err3 = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err3.decode()[-2000:]
    assert "took over the lock" in " ".join(err3.decode().split())
    assert _calls(tmp_path / "twice" / "store.db", "twice") == expected  # none lost, none repeated
    with Store.open(f"sqlite:///{tmp_path / 'twice' / 'store.db'}", create=False) as store:
        attempts = store.job_attempts("twice")
        assert set(attempts) == set(expected) and max(attempts.values()) <= 2  # only the call in flight ran again
        assert all(r.completed for r in store.rounds("twice")) and lock_holder(store, "twice") is None
