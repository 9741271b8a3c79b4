"""The ``local`` scheduler's job runner: a detached process per job that outlives its submitter.

``python -m oracles.dft.local_runner --jobdir D --slots-dir S --max-parallel N --walltime-s T``
forks (the parent prints the runner's pid and exits at once, so no zombie stays with the submitter),
and the detached runner:

1. waits for a free slot: an exclusive ``flock`` on one of ``S/slot-0.lock`` … ``slot-<N-1>.lock``
   (the kernel drops a lock when its holder dies, so a killed job never leaks its slot);
2. runs ``bash job.sh`` in its own session with the slot's file descriptor inherited (the slot stays
   taken while the job runs, even if the runner itself is killed);
3. after ``--walltime-s`` seconds sends SIGTERM to the job's process group, SIGKILL 10 s later;
   SIGTERM to the runner (cancel) does the same; with ``--memory-mb`` it checks the resident memory of
   the job's process group every 0.5 s and SIGKILLs the group above the limit (like a cgroup OOM kill;
   an ``RLIMIT_AS`` limit made Python hang at start-up instead of failing);
4. writes ``runner.json`` atomically at each change: ``state`` (queued | running | finished),
   ``runner_pid``, ``job_pid``, ``exit_code`` (negative: killed by that signal), ``timed_out``,
   ``cancelled``, ``oom_killed``, ``max_rss_mb``, and times (Unix seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNNER_FILE = "runner.json"
KILL_GRACE_S = 10.0


def write_json_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None if gone.

    Zombies count as gone. Together with the pid this identifies a process (pids are reused).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _acquire_slot(slots_dir: Path, max_parallel: int, should_stop: list[bool]) -> int | None:
    slots_dir.mkdir(parents=True, exist_ok=True)
    while not should_stop[0]:
        for i in range(max_parallel):
            fd = os.open(slots_dir / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        time.sleep(0.5)
    return None


def run(jobdir: Path, slots_dir: Path, max_parallel: int, walltime_s: float, memory_mb: int | None) -> int:
    doc: dict[str, Any] = {"state": "queued", "runner_pid": os.getpid(),
                           "runner_start_ticks": process_start_ticks(os.getpid()), "queued_at": time.time()}
    write_json_atomic(jobdir / RUNNER_FILE, doc)
    cancel = [False]
    child: list[subprocess.Popen[bytes]] = []

    def on_term(signum: int, frame: object) -> None:
        cancel[0] = True
        if child:
            _signal_group(child[0].pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    slot = _acquire_slot(slots_dir, max_parallel, cancel)
    if slot is None:  # cancelled while queued
        doc.update(state="finished", exit_code=None, cancelled=True, timed_out=False, ended_at=time.time())
        write_json_atomic(jobdir / RUNNER_FILE, doc)
        return 0

    with open(jobdir / "job.out", "ab") as out:
        proc = subprocess.Popen(["bash", str(jobdir / "job.sh")], cwd=jobdir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(slot,))
    child.append(proc)
    doc.update(state="running", job_pid=proc.pid, job_start_ticks=process_start_ticks(proc.pid),
               started_at=time.time(), slot=slot)
    write_json_atomic(jobdir / RUNNER_FILE, doc)
    timed_out = oom_killed = False
    deadline = time.monotonic() + walltime_s
    max_rss = 0.0
    rc: int | None = None
    while rc is None:
        try:
            rc = proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if memory_mb:
            max_rss = max(max_rss, group_rss_mb(proc.pid))
            if max_rss > memory_mb:
                oom_killed = True
                _signal_group(proc.pid, signal.SIGKILL)
                rc = proc.wait()
                break
        if time.monotonic() > deadline or cancel[0]:
            timed_out = not cancel[0]
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                rc = proc.wait()
    if cancel[0]:
        try:
            rc = proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    doc.update(state="finished", exit_code=rc, timed_out=timed_out, cancelled=cancel[0], oom_killed=oom_killed,
               max_rss_mb=round(max_rss, 1) if memory_mb else None, ended_at=time.time())
    write_json_atomic(jobdir / RUNNER_FILE, doc)
    return 0


def group_rss_mb(pgid: int) -> float:
    """Resident memory (MB) of every process in process group ``pgid``."""
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid:
                total += int(Path(entry.path, "statm").read_text().split()[1]) * page_mb
        except (OSError, ValueError, IndexError):
            continue
    return total


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--jobdir", type=Path, required=True)
    ap.add_argument("--slots-dir", type=Path, required=True)
    ap.add_argument("--max-parallel", type=int, default=1)
    ap.add_argument("--walltime-s", type=float, required=True)
    ap.add_argument("--memory-mb", type=int, default=None)
    ap.add_argument("--foreground", action="store_true", help="do not fork (debugging)")
    args = ap.parse_args(argv)
    jobdir = args.jobdir.resolve()
    if not args.foreground:
        pid = os.fork()
        if pid:  # the launcher: report the runner's pid and leave
            sys.stdout.write(f"{pid}\n")
            sys.stdout.flush()
            os._exit(0)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(jobdir / "runner.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
    return run(jobdir, args.slots_dir.resolve(), args.max_parallel, args.walltime_s, args.memory_mb)


if __name__ == "__main__":
    sys.exit(main())
