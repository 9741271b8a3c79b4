#!/bin/bash
# test case gpaw-relax-spin
# written by matloop (oracles.dft); run with: bash job.sh

cd {JOBDIR} || exit 97
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-4}
export OPENBLAS_NUM_THREADS="$OMP_NUM_THREADS" MKL_NUM_THREADS="$OMP_NUM_THREADS"
export GPAW_SETUP_PATH='/opt/my setups'
module load gpaw/24.1
source /opt/env.sh
echo "started $(date +%s.%N)" >> job.status
{PYTHON} run_gpaw.py > run.log 2>&1 &
child=$!
trap 'echo "signal TERM $(date +%s.%N)" >> job.status; kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"; rc=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
echo "exit $rc $(date +%s.%N)" >> job.status
exit "$rc"
