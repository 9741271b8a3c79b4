#!/usr/bin/env bash
# Run a Prefect process worker for the `matloop` work pool (created if missing) in the foreground.
# Deployments from deploy/prefect.yaml and `matloop schedule` run here: the Prefect server's scheduler
# creates their scheduled runs, this worker executes them. One torch thread per process (see design §5).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/env.sh
: "${MATLOOP_POOL:=matloop}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$VENV/bin/prefect" work-pool inspect "$MATLOOP_POOL" >/dev/null 2>&1 \
  || "$VENV/bin/prefect" work-pool create "$MATLOOP_POOL" --type process
exec "$VENV/bin/prefect" worker start --pool "$MATLOOP_POOL"
