#!/usr/bin/env bash
# Run the Prefect server in the foreground on $MATLOOP_HOST:$PREFECT_PORT.
# Database: PREFECT_API_DATABASE_CONNECTION_URL if set (e.g. postgresql+asyncpg://matloop@127.0.0.1:5432/prefect),
# else SQLite under $PREFECT_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/env.sh
mkdir -p "$PREFECT_HOME"
exec "$VENV/bin/prefect" server start --host "$MATLOOP_HOST" --port "$PREFECT_PORT"
