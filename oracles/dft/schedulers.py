"""Scheduler adapters: ``local`` (a detached process queue on this machine) and ``slurm``.

Both keep a job's state where a later process can read it: the job folder (``jobid``, ``job.status``,
``runner.json`` for local jobs, ``scheduler.json`` for SLURM's final state) plus the scheduler itself.
Commands are argument lists (never a shell string).

SLURM: ``sbatch --parsable`` submits; ``squeue --states=all`` gives the state of every job in one
call (including jobs that ended less than ``MinJobAge`` ago); a job squeue no longer lists has
finished. ``sacct`` is not used (it needs an accounting database). How a job ended comes from the
last state squeue/``scontrol show job`` reported (TIMEOUT, OUT_OF_MEMORY, CANCELLED, ...), kept in
``scheduler.json``, and from ``job.status``.
"""

from __future__ import annotations

import getpass
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from oracles.dft.jobfiles import read_job_status, read_json, write_json_atomic
from oracles.dft.local_runner import RUNNER_FILE, process_start_ticks
from oracles.dft.settings import DFTSettings
from oracles.queue import JobState

SLURM_TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                  "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
SLURM_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}


class SchedulerError(RuntimeError):
    """The scheduler refused a command (the message has its output)."""


class Scheduler(Protocol):
    """What the DFT oracle needs from a batch system."""

    name: str

    def submit(self, jobdir: Path, *, settings: DFTSettings, token: str) -> str:
        """Submit ``jobdir/job.sh``; returns the job id. ``token`` names the job (for :meth:`find_token`)."""
        ...

    def states(self, jobs: Sequence[tuple[str, Path]]) -> list[JobState]:
        """State of each ``(job id, job folder)``, one scheduler query for all."""
        ...

    def end_state(self, job_id: str, jobdir: Path) -> str | None:
        """The scheduler's word on how a finished job ended (SLURM JobState names), if it has one."""
        ...

    def find_token(self, token: str) -> str | None:
        """The id of a job submitted under ``token`` (for a crash before the id was written), or None."""
        ...

    def cancel(self, job_id: str, jobdir: Path) -> None: ...


def _run(args: list[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise SchedulerError(f"{args[0]}: not found ({exc})") from None


# -- local ---------------------------------------------------------------------------------------
class LocalScheduler:
    """Jobs as detached processes on this machine (see :mod:`oracles.dft.local_runner`).

    ``max_parallel`` jobs run at once across every process using the same ``slots_dir``; the rest wait
    for a slot. Jobs survive the process that submitted them; their state lives in the job folder.
    """

    name = "local"

    def __init__(self, *, slots_dir: Path, max_parallel: int) -> None:
        self.slots_dir = Path(slots_dir)
        self.max_parallel = max_parallel

    def submit(self, jobdir: Path, *, settings: DFTSettings, token: str) -> str:
        args = [sys.executable, "-m", "oracles.dft.local_runner", "--jobdir", str(jobdir),
                "--slots-dir", str(self.slots_dir), "--max-parallel", str(self.max_parallel),
                "--walltime-s", str(settings.walltime_s)]
        if settings.memory_mb:
            args += ["--memory-mb", str(settings.memory_mb)]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the runner must import oracles.dft
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, env=env,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not proc.stdout.strip().isdigit():
            raise SchedulerError(f"local runner did not start: {proc.stderr.strip() or proc.stdout.strip()}")
        pid = int(proc.stdout.strip())
        return f"{pid}.{process_start_ticks(pid) or 0}"

    def _state(self, job_id: str, jobdir: Path) -> JobState:
        doc = read_json(jobdir / RUNNER_FILE) or {}
        if doc.get("state") == "finished":
            return "finished"
        pid_s, _, ticks_s = job_id.partition(".")
        runner_alive = _alive(int(pid_s), int(ticks_s or 0))
        job_alive = bool(doc.get("job_pid")) and _alive(int(doc["job_pid"]), int(doc.get("job_start_ticks") or 0))
        if job_alive or (runner_alive and doc.get("state") == "running"):
            return "running"
        if runner_alive:
            return "queued"
        return "finished"  # the runner and the job are gone (killed, or the machine restarted)

    def states(self, jobs: Sequence[tuple[str, Path]]) -> list[JobState]:
        return [self._state(job_id, Path(jobdir)) for job_id, jobdir in jobs]

    def end_state(self, job_id: str, jobdir: Path) -> str | None:
        doc = read_json(jobdir / RUNNER_FILE) or {}
        if doc.get("state") != "finished":
            return "LOST" if read_job_status(jobdir).exit_code is None else None
        if doc.get("cancelled"):
            return "CANCELLED"
        if doc.get("oom_killed"):
            return "OUT_OF_MEMORY"
        if doc.get("timed_out"):
            return "TIMEOUT"
        return "COMPLETED" if doc.get("exit_code") == 0 else "FAILED"

    def find_token(self, token: str) -> str | None:
        return None  # the local runner's pid is known as soon as it forks

    def cancel(self, job_id: str, jobdir: Path) -> None:
        pid, _, ticks = job_id.partition(".")
        if _alive(int(pid), int(ticks or 0)):
            os.kill(int(pid), 15)


def _alive(pid: int, start_ticks: int) -> bool:
    ticks = process_start_ticks(pid)
    return ticks is not None and (start_ticks == 0 or ticks == start_ticks)


# -- slurm ---------------------------------------------------------------------------------------
class SlurmScheduler:
    """``sbatch`` / ``squeue`` / ``scontrol`` / ``scancel`` of the SLURM found on PATH (``SLURM_CONF`` honoured)."""

    name = "slurm"

    def submit(self, jobdir: Path, *, settings: DFTSettings, token: str) -> str:
        args = ["sbatch", "--parsable", f"--job-name={token}", f"--chdir={jobdir}", f"--output={jobdir / 'job.out'}",
                f"--time={max(1, math.ceil(settings.walltime_s / 60))}", "--ntasks=1",
                f"--cpus-per-task={settings.cores}"]
        if settings.memory_mb:
            args.append(f"--mem={settings.memory_mb}M")
        for flag, value in (("partition", settings.partition), ("account", settings.account), ("qos", settings.qos)):
            if value:
                args.append(f"--{flag}={value}")
        args += [*settings.sbatch_args, str(jobdir / "job.sh")]
        proc = _run(args)
        job_id = proc.stdout.strip().split(";")[0]
        if proc.returncode != 0 or not job_id:
            raise SchedulerError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return job_id

    def _squeue(self) -> dict[str, str]:
        proc = _run(["squeue", "-h", "--states=all", "-u", getpass.getuser(), "-o", "%i|%T|%j"])
        if proc.returncode != 0:
            raise SchedulerError(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}")
        out: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
        return out

    def states(self, jobs: Sequence[tuple[str, Path]]) -> list[JobState]:
        if not jobs:
            return []
        listed = self._squeue()
        states: list[JobState] = []
        for job_id, jobdir in jobs:
            state = listed.get(job_id) or self._scontrol_state(job_id)
            if state is None or state in SLURM_TERMINAL:
                if state is not None:
                    write_json_atomic(Path(jobdir) / "scheduler.json", {"job_id": job_id, "state": state})
                states.append("finished")
            elif state.split()[0] in SLURM_QUEUED:
                states.append("queued")
            else:
                states.append("running")
        return states

    def _scontrol_state(self, job_id: str) -> str | None:
        proc = _run(["scontrol", "show", "job", "-o", job_id])
        if proc.returncode != 0:
            return None
        for token in proc.stdout.split():
            if token.startswith("JobState="):
                return token.split("=", 1)[1]
        return None

    def end_state(self, job_id: str, jobdir: Path) -> str | None:
        state = self._scontrol_state(job_id)
        if state is not None and state in SLURM_TERMINAL:
            write_json_atomic(jobdir / "scheduler.json", {"job_id": job_id, "state": state})
            return state
        doc = read_json(jobdir / "scheduler.json") or {}
        return doc.get("state")

    def find_token(self, token: str) -> str | None:
        proc = _run(["squeue", "-h", "--states=all", "-u", getpass.getuser(), "-n", token, "-o", "%i"])
        ids = proc.stdout.split() if proc.returncode == 0 else []
        return ids[0] if ids else None

    def cancel(self, job_id: str, jobdir: Path) -> None:
        _run(["scancel", job_id])


def get_scheduler(settings: DFTSettings, *, root: Path) -> Scheduler:
    if settings.scheduler == "slurm":
        return SlurmScheduler()
    slots = Path(settings.slots_dir) if settings.slots_dir else Path(root) / ".local-slots"
    return LocalScheduler(slots_dir=slots, max_parallel=settings.max_parallel)
