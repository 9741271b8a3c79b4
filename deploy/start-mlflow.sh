#!/usr/bin/env bash
# Run the MLflow tracking server in the foreground on $MATLOOP_HOST:$MLFLOW_PORT: one worker, job
# execution off (~0.5 GB instead of ~2.2 GB), artifacts proxied from $MLFLOW_ARTIFACTS.
# Backend: MLFLOW_BACKEND_STORE_URI if set (e.g. postgresql+psycopg2://matloop@127.0.0.1:5432/mlflow), else SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/env.sh
: "${MLFLOW_ARTIFACTS:=$MATLOOP_SERVICES/mlflow/artifacts}"
: "${MLFLOW_BACKEND_STORE_URI:=sqlite:///$MATLOOP_SERVICES/mlflow/mlflow.db}"
mkdir -p "$MLFLOW_ARTIFACTS"
exec "$VENV/bin/mlflow" server --host "$MATLOOP_HOST" --port "$MLFLOW_PORT" --workers 1 \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --artifacts-destination "$MLFLOW_ARTIFACTS" --serve-artifacts
