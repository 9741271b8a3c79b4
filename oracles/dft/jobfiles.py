"""Job folders: what :class:`oracles.dft.oracle.DFTOracle` writes before submitting, and reads back.

One folder per submission (``<root>/<job_name(candidate id)>/attempt-<n>``, see :func:`oracles.queue.job_dir`)::

    meta.json        candidate id, attempt, seed, code, scheduler, submission token, fingerprint
    settings.json    the oracle settings used for this attempt (after retry adjustments)
    structure.cif    the input structure (human-readable); structure.json for the job (Å)
    job.sh           the job script (bash; every configured value quoted with shlex.quote)
    <code inputs>    gpaw.json + run_gpaw.py | pw.in | INCAR, KPOINTS, POSCAR, POTCAR(.spec)
    jobid            the scheduler's job id, written once the scheduler accepted the job
    job.status       lines appended by job.sh: ``started T``, ``signal TERM T``, ``exit RC T`` (Unix s)
    run.log          the code's standard output and error
    result.json      written by run_gpaw.py (GPAW jobs)
    scheduler.json   the scheduler's final word on the job (SLURM JobState), when it had one
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oracles.dft.settings import DFTSettings

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, doc: Any) -> None:
    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON document at ``path``, or None if absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def job_script(jobdir: Path, command: Sequence[str], settings: DFTSettings, *, title: str) -> str:
    """The bash job script: environment, the code's command in the background, status lines.

    The command runs in the background so that SIGTERM (SLURM at the walltime, ``scancel``, the local
    runner) is recorded in ``job.status`` before the script exits. Everything taken from settings is
    quoted; environment-variable names are checked.
    """
    q = shlex.quote
    lines = ["#!/bin/bash", f"# {title}", "# written by matloop (oracles.dft); run with: bash job.sh", "",
             f"cd {q(str(jobdir))} || exit 97",
             f"export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-{settings.cores}}}",
             'export OPENBLAS_NUM_THREADS="$OMP_NUM_THREADS" MKL_NUM_THREADS="$OMP_NUM_THREADS"']
    for name, value in sorted(settings.env.items()):
        if not _ENV_NAME.match(name):
            raise ValueError(f"env: {name!r} is not a valid environment-variable name")
        lines.append(f"export {name}={q(value)}")
    lines += [f"module load {q(m)}" for m in settings.modules]
    if settings.setup_script:
        lines.append(f"source {q(settings.setup_script)}")
    lines += ['echo "started $(date +%s.%N)" >> job.status',
              f"{shlex.join(command)} > run.log 2>&1 &",
              "child=$!",
              "trap 'echo \"signal TERM $(date +%s.%N)\" >> job.status; kill -TERM \"$child\" 2>/dev/null' TERM INT",
              'wait "$child"; rc=$?',
              'while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done',
              'echo "exit $rc $(date +%s.%N)" >> job.status',
              'exit "$rc"', ""]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What ``job.status`` says: start time, a SIGTERM seen, exit code and end time (Unix s)."""

    started: float | None = None
    terminated: bool = False
    exit_code: int | None = None
    ended: float | None = None

    @property
    def elapsed_s(self) -> float | None:
        return self.ended - self.started if self.started is not None and self.ended is not None else None


def read_job_status(jobdir: Path) -> JobStatus:
    try:
        text = (jobdir / "job.status").read_text()
    except OSError:
        return JobStatus()
    started = ended = None
    terminated = False
    exit_code = None
    for line in text.splitlines():
        parts = line.split()
        try:
            if parts[:1] == ["started"]:
                started = float(parts[1])
            elif parts[:1] == ["signal"]:
                terminated = True
            elif parts[:1] == ["exit"]:
                exit_code, ended = int(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            continue
    return JobStatus(started, terminated, exit_code, ended)


def structure_doc(structure: Any) -> dict[str, Any]:
    """``structure.json``: symbols, cell (Å) and Cartesian positions (Å) of a pymatgen structure."""
    return {"symbols": [site.specie.symbol for site in structure],
            "cell": structure.lattice.matrix.tolist(), "positions": structure.cart_coords.tolist()}
