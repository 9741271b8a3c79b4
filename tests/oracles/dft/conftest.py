"""Fixtures for the DFT oracle tests: cheap GPAW settings, small structures, a real single-node SLURM.

``slurm`` starts munge + slurmctld + slurmd with ``deploy/slurm/start-slurm.sh`` (once per session,
state in a temp folder, stopped at the end) and points ``SLURM_CONF`` at it. It skips only where SLURM
cannot start here: not root, or the slurm-wlm binaries are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymatgen.core import Lattice, Structure

REPO = Path(__file__).resolve().parents[3]
DATA = Path(__file__).with_name("data")

CHEAP: dict[str, Any] = {"cutoff_eV": 200.0, "kpoint_density": 1.0, "poll_interval_s": 0.3, "walltime_s": 300,
                         "max_parallel": 2}
"""GPAW settings for tests: PW 200 eV, 3×3×3 k-points on 2-atom Si (~2 s per SCF)."""


def si_structure() -> Structure:
    return Structure.from_spacegroup(227, Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]).get_primitive_structure()


def tc_structure() -> Structure:
    """Technetium: gpaw-data ships no PAW setup for Tc, so GPAW fails (a real non-zero exit)."""
    return Structure(Lattice.cubic(2.8), ["Tc"], [[0, 0, 0]])


@pytest.fixture(scope="session")
def gpaw_available() -> None:
    try:
        import gpaw  # noqa: F401
        import gpaw_data  # noqa: F401
    except ImportError:
        pytest.skip("GPAW not installed (make install builds it: needs libxc-dev, libblas-dev, liblapack-dev)")


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
