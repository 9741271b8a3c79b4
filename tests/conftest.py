"""Shared fixtures: real services on 127.0.0.1, started once per session and only when a test asks.

* ``postgres`` — a PostgreSQL server (initdb into a temp dir; as the ``postgres`` user when root);
  ``postgres_url`` gives a fresh database per test. Skips when the binaries are absent.
* ``prefect_api_url`` — a ``prefect server start`` (UI off) with its own ``PREFECT_HOME``.
* ``mlflow_server_uri`` — an ``mlflow server`` (one worker, job execution off) on a temp SQLite.
* every test starts from the same global NumPy and torch random state, so a draw that a test or a library
  forgot to seed (pymatgen's ``Structure.perturb``) is the same draw on every run and every machine.
* ``slurm`` — a single-node SLURM (munge, slurmctld, slurmd on 127.0.0.1) started with
  ``deploy/slurm/start-slurm.sh``; sets ``SLURM_CONF``. Skips only where SLURM cannot start (not root,
  slurm-wlm missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_HOME", str(Path(__file__).resolve().parents[1] / ".prefect"))


@pytest.fixture(autouse=True)
def _same_global_random_state() -> None:
    """Seed NumPy's and torch's global generators before each test: its result then depends neither on the tests
    that ran before it nor on luck (an unseeded ``perturb`` once gave CI cells that relaxed a step faster than
    here). Python's ``random`` is left alone: Prefect's ephemeral server picks its port with it."""
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    from orchestration.servers import postgres_bin_dir, postgres_server

    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: install postgresql or set PG_BIN")
    os_user = None
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no `postgres` system user to run the server as")
        os_user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="matloop-pg-"))  # outside pytest's root-only tmp dirs
    try:
        if os_user:
            shutil.chown(root, user=os_user)
        with postgres_server(root / "data", fast=True, os_user=os_user) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: object) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    from orchestration.servers import PostgresServer

    assert isinstance(postgres, PostgresServer)
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from orchestration.servers import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect-home"), ui=False) as service:
        yield service.url


@pytest.fixture(scope="session")
def mlflow_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from orchestration.servers import mlflow_server

    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts") as service:
        yield service.url


@pytest.fixture
def prefect_server_settings(prefect_api_url: str) -> Iterator[str]:
    """Point in-process Prefect (flows, clients) at the session's Prefect server for one test."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api_url}):
        yield prefect_api_url
        # Send batched run logs and events while the server is still up, with these settings.
        APILogWorker.drain_all(timeout=10, at_exit=False)
        EventsWorker.drain_all(timeout=10, at_exit=False)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def slurm() -> Iterator[Path]:
    """A running single-node SLURM; yields its state folder (``SLURM_CONF`` is set for the session)."""
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root (slurmd runs jobs as the submitting user)")
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"slurm-wlm not installed ({', '.join(missing)} missing): apt-get install slurm-wlm")
    state = Path(tempfile.mkdtemp(prefix="matloop-slurm-"))
    env = {**os.environ, "MATLOOP_SLURM_DIR": str(state), "SLURMCTLD_PORT": os.environ.get("SLURMCTLD_PORT", "6917"),
           "SLURMD_PORT": os.environ.get("SLURMD_PORT", "6918")}
    proc = subprocess.run(["bash", str(REPO / "deploy/slurm/start-slurm.sh")], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        log = "".join(p.read_text()[-2000:] for p in (state / "log").glob("*.log")) if (state / "log").is_dir() else ""
        pytest.fail(f"start-slurm.sh failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{log}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        subprocess.run(["bash", str(REPO / "deploy/slurm/stop-slurm.sh")], env=env, capture_output=True, timeout=60,
                       check=False)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(state, ignore_errors=True)
