#!/usr/bin/env bash
# Start PostgreSQL from $MATLOOP_SERVICES/postgres (initdb on first use) on $MATLOOP_HOST:$PGPORT,
# and create the databases prefect, mlflow and matloop. As root it runs as the `postgres` user.
# Password: set MATLOOP_PG_PASSWORD to require one (scram-sha-256); otherwise trust on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/env.sh
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
[ -x "$PG_BIN/pg_ctl" ] || { echo "PostgreSQL binaries not found; install postgresql or set PG_BIN" >&2; exit 1; }
DATA="$MATLOOP_SERVICES/postgres"
RUN=()
if [ "$(id -u)" = 0 ]; then RUN=(runuser -u postgres --); fi
mkdir -p "$MATLOOP_SERVICES"
if [ ! -f "$DATA/PG_VERSION" ]; then
  mkdir -p "$DATA"
  [ "$(id -u)" = 0 ] && chown postgres "$DATA"
  if [ -n "${MATLOOP_PG_PASSWORD:-}" ]; then
    pw="$(mktemp)"; trap 'rm -f "$pw"' EXIT   # removed however the script ends (initdb failing included)
    printf '%s' "$MATLOOP_PG_PASSWORD" > "$pw"; [ "$(id -u)" = 0 ] && chown postgres "$pw"
    "${RUN[@]}" "$PG_BIN/initdb" -D "$DATA" -U "$PGUSER" -E UTF8 --auth=scram-sha-256 --pwfile="$pw"
    rm -f "$pw"; trap - EXIT
  else
    "${RUN[@]}" "$PG_BIN/initdb" -D "$DATA" -U "$PGUSER" -E UTF8 --auth=trust
  fi
fi
cat >> "$DATA/postgresql.auto.conf" <<CONF
listen_addresses = '$MATLOOP_HOST'
port = $PGPORT
unix_socket_directories = '$DATA'
CONF
LOG="$MATLOOP_SERVICES/postgres.log"
touch "$LOG"; [ "$(id -u)" = 0 ] && chown postgres "$LOG"
"${RUN[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w start
export PGPASSWORD="${MATLOOP_PG_PASSWORD:-}"
for db in prefect mlflow matloop; do
  "$PG_BIN/psql" -h "$MATLOOP_HOST" -p "$PGPORT" -U "$PGUSER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
    || "$PG_BIN/createdb" -h "$MATLOOP_HOST" -p "$PGPORT" -U "$PGUSER" "$db"
done
echo "PostgreSQL on $MATLOOP_HOST:$PGPORT (stop: ${RUN[*]} $PG_BIN/pg_ctl -D $DATA stop)"
