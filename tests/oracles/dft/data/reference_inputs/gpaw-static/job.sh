#!/bin/bash
# test case gpaw-static
# written by matloop (oracles.dft); run with: bash job.sh

cd {JOBDIR} || exit 97
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export OPENBLAS_NUM_THREADS="$OMP_NUM_THREADS" MKL_NUM_THREADS="$OMP_NUM_THREADS"
echo "started $(date +%s.%N)" >> job.status
{PYTHON} run_gpaw.py > run.log 2>&1 &
child=$!
trap 'echo "signal TERM $(date +%s.%N)" >> job.status; kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"; rc=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
echo "exit $rc $(date +%s.%N)" >> job.status
exit "$rc"
