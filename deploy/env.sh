# Shared settings for the start scripts; every value can be overridden from the environment.
# Source it: `. deploy/env.sh`. Credentials come only from the environment (never from files here).
: "${MATLOOP_SERVICES:=$PWD/.services}"          # state of the local services (data, logs)
: "${MATLOOP_HOST:=127.0.0.1}"                   # bind address; keep 127.0.0.1 unless behind a proxy
: "${PGPORT:=5432}"
: "${PGUSER:=matloop}"
: "${PREFECT_PORT:=4200}"
: "${MLFLOW_PORT:=5000}"
: "${VENV:=$PWD/.venv}"
: "${MATLOOP_ROOT:=$PWD}"                          # checkout the deployments run in (deploy/prefect.yaml)
export MATLOOP_SERVICES MATLOOP_HOST PGPORT PGUSER PREFECT_PORT MLFLOW_PORT VENV MATLOOP_ROOT
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
: "${PREFECT_HOME:=$MATLOOP_SERVICES/prefect}"
export PREFECT_HOME
export PREFECT_API_URL="http://$MATLOOP_HOST:$PREFECT_PORT/api"
export MLFLOW_TRACKING_URI="http://$MATLOOP_HOST:$MLFLOW_PORT"
