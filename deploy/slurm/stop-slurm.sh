#!/usr/bin/env bash
# Stop what deploy/slurm/start-slurm.sh started (slurmd, slurmctld, and munged if it started it).
set -euo pipefail
STATE="${MATLOOP_SLURM_DIR:-${MATLOOP_SERVICES:-$PWD/.services}/slurm}"
stop() {  # stop PIDFILE: TERM, then wait up to 10 s
  [ -s "$1" ] || return 0
  local pid; pid="$(cat "$1")"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
stop "$STATE/slurmd.pid"
stop "$STATE/slurmctld.pid"
if [ -f "$STATE/munged.started" ]; then
  stop /run/munge/munged.pid
  rm -f "$STATE/munged.started"
fi
echo "SLURM stopped ($STATE)"
