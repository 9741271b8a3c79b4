#!/usr/bin/env bash
# Start a single-node SLURM on 127.0.0.1 without systemd: munged (as user munge), slurmctld, slurmd.
# For tests and workstations; a real cluster needs none of this (see deploy/README.md).
#
#   deploy/slurm/start-slurm.sh            # prints `export SLURM_CONF=...` on the last line
#   eval "$(deploy/slurm/start-slurm.sh | tail -1)"; sbatch --wrap hostname
#   deploy/slurm/stop-slurm.sh
#
# Needs root (slurmd starts jobs as the submitting user) and the Debian packages slurm-wlm + munge.
# Environment: MATLOOP_SLURM_DIR (state, default $MATLOOP_SERVICES/slurm or ./.services/slurm),
# SLURMCTLD_PORT (6817), SLURMD_PORT (6818), SLURM_CPUS (all), SLURM_REAL_MEMORY_MB (90 % of RAM).
# No accounting database: `sacct` does not work; use squeue / scontrol show job.
set -euo pipefail
STATE="${MATLOOP_SLURM_DIR:-${MATLOOP_SERVICES:-$PWD/.services}/slurm}"
CTLD_PORT="${SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${SLURMD_PORT:-6818}"

[ "$(id -u)" = 0 ] || { echo "start-slurm.sh: must run as root (slurmd switches to the job's user)" >&2; exit 2; }
for bin in munged munge unmunge slurmctld slurmd sbatch squeue scontrol sinfo; do
  command -v "$bin" >/dev/null || { echo "start-slurm.sh: $bin not found; apt-get install slurm-wlm" >&2; exit 2; }
done

# munge: reuse a running daemon, else start one (key created on first use)
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0755 /run/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  runuser -u munge -- munged
  mkdir -p "$STATE"; touch "$STATE/munged.started"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

mkdir -p "$STATE/spool" "$STATE/ctld" "$STATE/log"
NODE="$(hostname -s)"
CPUS="${SLURM_CPUS:-$(nproc)}"
MEM_KB="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
MEM="${SLURM_REAL_MEMORY_MB:-$((MEM_KB * 9 / 10 / 1024))}"
CONF="$STATE/slurm.conf"
cat > "$CONF" <<CONF
ClusterName=matloop
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
KillWait=5
MinJobAge=300
InactiveLimit=0
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$CONF"

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running "$STATE/slurmctld.pid" || slurmctld -f "$CONF"
running "$STATE/slurmd.pid" || slurmd -f "$CONF"

for _ in $(seq 100); do
  state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)"
  case "$state" in
    idle*|mixed*|allocated*) break ;;
    down*|drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case "${state:-}" in
  idle*|mixed*|allocated*) ;;
  *) echo "start-slurm.sh: node $NODE not ready (state '${state:-none}'); logs in $STATE/log" >&2; exit 1 ;;
esac
echo "SLURM up: node $NODE ($CPUS CPUs, $MEM MB), partition debug; stop: deploy/slurm/stop-slurm.sh"
echo "export SLURM_CONF=$CONF"
