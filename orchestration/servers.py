"""Start and stop the services a campaign can use, on 127.0.0.1 by default, without containers.

* :func:`postgres_server` — ``initdb`` + ``pg_ctl`` into a data directory (as the ``postgres``
  system user when run as root); yields a :class:`PostgresServer` with a URL per database.
* :func:`prefect_server` — ``prefect server start`` with a private ``PREFECT_HOME``; waits for
  ``/api/health``.
* :func:`mlflow_server` — ``mlflow server`` with one worker and job execution disabled; waits
  for ``/health``.

Used by the test fixtures, ``matloop ui`` and ``deploy/``. Commands are argument lists (never a
shell string); settings go into config files or environment variables; a password, if any, comes
from the environment (``MATLOOP_PG_PASSWORD``), never from a config file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.errors import UserError

HOST = "127.0.0.1"


class ServerError(UserError):
    """A service could not be started; the message names the command and its log file."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def service_env(**extra: str) -> dict[str, str]:
    """The environment the services (and matloop itself) should run with on these machines."""
    env = dict(os.environ)
    env.update({
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "DO_NOT_TRACK": "1",
    })
    env.update(extra)
    return env


def _venv_tool(name: str) -> str:
    """A console script next to the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise ServerError(f"`{name}` is not installed; run `make install`")
    return found


def wait_http(url: str, *, timeout_s: float, process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"the service behind {url} exited with code {process.returncode}; see {log}{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise ServerError(f"{url} did not become healthy within {timeout_s:.0f} s; see {log}{_tail(log)}")


def _tail(log: Path | None, n: int = 5) -> str:
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").strip().splitlines()[-n:]
    return (": " + " | ".join(lines)) if lines else ""


@dataclass
class ManagedProcess:
    """A child process in its own process group, with its output in ``log``."""

    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def spawn(cls, argv: Sequence[str], *, log: Path, env: Mapping[str, str], cwd: Path | None = None) -> ManagedProcess:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env), cwd=cwd, start_new_session=True,
            )
        return cls(proc, log)

    def stop(self, *, timeout_s: float = 20) -> None:
        stop_process_group(self.process, timeout_s=timeout_s)


def stop_process_group(process: subprocess.Popen[bytes], *, timeout_s: float = 20) -> None:
    """SIGTERM the process group of ``process`` (started with ``start_new_session=True``); SIGKILL it after
    ``timeout_s`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# -- PostgreSQL ----------------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (PG_BIN env, Debian layout, or PATH), or None."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    which = shutil.which("pg_ctl")
    candidates.append(str(Path(which).parent) if which else "")
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    data_dir: Path

    def url(self, database: str = "postgres", *, driver: str = "postgresql") -> str:
        """SQLAlchemy URL; the password (if any) is taken by libpq from ``PGPASSWORD``, not put here."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` if missing; returns its URL."""
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                                password=os.environ.get("MATLOOP_PG_PASSWORD"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url(name)


def _as_user(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


@contextlib.contextmanager
def postgres_server(
    data_dir: Path, *, port: int | None = None, host: str = HOST, user: str = "matloop", fast: bool = False,
    os_user: str | None = None, timeout_s: float = 60,
) -> Iterator[PostgresServer]:
    """Run PostgreSQL from ``data_dir`` (initialised on first use) until the block exits.

    Authentication is ``trust`` on ``host`` unless ``MATLOOP_PG_PASSWORD`` is set, in which case
    the superuser ``user`` gets that password and connections need it (scram-sha-256). As root the
    server runs as ``os_user`` (default ``postgres``, which must exist). ``fast`` turns off fsync
    (tests only).
    """
    bindir = postgres_bin_dir()
    if bindir is None:
        raise ServerError("PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql or set PG_BIN")
    if os_user is None and os.geteuid() == 0:
        os_user = "postgres"
    data_dir = Path(data_dir).resolve()
    port = port or free_port(host)
    log = data_dir.parent / f"{data_dir.name}.log"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if os_user:
        shutil.chown(data_dir.parent, user=os_user)
    password = os.environ.get("MATLOOP_PG_PASSWORD")
    env = service_env()
    if not (data_dir / "PG_VERSION").exists():
        argv = [str(bindir / "initdb"), "-D", str(data_dir), "-U", user, "-E", "UTF8", "--no-instructions"]
        pwfile = data_dir.parent / f".{data_dir.name}.pw"
        if password:
            pwfile.write_text(password)
            pwfile.chmod(0o600)
            if os_user:
                shutil.chown(pwfile, user=os_user)
            argv += ["--auth-host=scram-sha-256", "--auth-local=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            argv += ["--auth=trust"]
        try:
            _run(_as_user(argv, os_user), env=env, what="initdb")
        finally:
            pwfile.unlink(missing_ok=True)
    settings = {
        "listen_addresses": f"'{host}'", "port": str(port), "unix_socket_directories": f"'{data_dir}'",
        "max_connections": "50", "shared_buffers": "'32MB'",
    }
    if fast:
        settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    with open(data_dir / "postgresql.auto.conf", "a") as f:  # later lines win
        f.writelines(f"{k} = {v}\n" for k, v in settings.items())
    if os_user:
        shutil.chown(data_dir / "postgresql.auto.conf", user=os_user)
        log.touch()
        shutil.chown(log, user=os_user)
    pg_ctl = str(bindir / "pg_ctl")
    _run(_as_user([pg_ctl, "-D", str(data_dir), "-l", str(log), "-w", "-t", str(int(timeout_s)), "start"], os_user),
         env=env, what="pg_ctl start", log=log)
    try:
        yield PostgresServer(host, port, user, data_dir)
    finally:
        _run(_as_user([pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"], os_user), env=env, what="pg_ctl stop",
             check=False)


def _run(argv: list[str], *, env: Mapping[str, str], what: str, log: Path | None = None, check: bool = True) -> None:
    proc = subprocess.run(argv, env=dict(env), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ServerError(f"{what} failed (exit {proc.returncode}): {' | '.join(detail)}{_tail(log)}")


# -- Prefect ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpService:
    url: str  # base URL (Prefect: the API URL ending in /api; MLflow: the tracking URI)
    ui_url: str
    log: Path


@contextlib.contextmanager
def prefect_server(
    home: Path, *, port: int | None = None, host: str = HOST, database_url: str | None = None, ui: bool = True,
    timeout_s: float = 120,
) -> Iterator[HttpService]:
    """``prefect server start`` with ``PREFECT_HOME=home`` (its SQLite lives there unless ``database_url``)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    extra = {"PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "true" if ui else "false",
             "PREFECT_API_URL": f"http://{host}:{port}/api"}
    if database_url:
        extra["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    log = home / "server.log"
    argv = [_venv_tool("prefect"), "server", "start", "--host", host, "--port", str(port)]
    proc = ManagedProcess.spawn(argv, log=log, env=service_env(**extra), cwd=home)
    try:
        wait_http(f"http://{host}:{port}/api/health", timeout_s=timeout_s, process=proc.process, log=log)
        yield HttpService(f"http://{host}:{port}/api", f"http://{host}:{port}", log)
    finally:
        proc.stop()


# -- MLflow ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str, artifacts_dir: Path, *, port: int | None = None, host: str = HOST, timeout_s: float = 120,
) -> Iterator[HttpService]:
    """``mlflow server`` (one worker, job execution off) serving artifacts from ``artifacts_dir``."""
    artifacts_dir = Path(artifacts_dir).resolve()
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    log = artifacts_dir.parent / f"mlflow-server-{port}.log"
    argv = [
        _venv_tool("mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts_dir), "--serve-artifacts",
    ]
    proc = ManagedProcess.spawn(argv, log=log, env=service_env(), cwd=artifacts_dir.parent)
    try:
        wait_http(f"http://{host}:{port}/health", timeout_s=timeout_s, process=proc.process, log=log)
        yield HttpService(f"http://{host}:{port}", f"http://{host}:{port}", log)
    finally:
        proc.stop()


def tracking_stores(runs_dir: Path) -> list[Path]:
    """The SQLite MLflow stores of a project: the shared ``runs/mlflow.db`` first, then the campaigns' own
    ``runs/<campaign>/mlflow.db`` (made before the shared store, or with ``tracking.shared: false``)."""
    runs_dir = Path(runs_dir)
    shared = [runs_dir / "mlflow.db"] if (runs_dir / "mlflow.db").is_file() else []
    return [p.resolve() for p in shared + sorted(runs_dir.glob("*/mlflow.db"))]


def store_experiments(db: Path) -> list[str] | None:
    """Names of the active experiments in an MLflow SQLite store (read-only), or None when unreadable."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT name FROM experiments WHERE lifecycle_stage = 'active' ORDER BY name").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return [str(r[0]) for r in rows if r[0] != "Default"]


def pick_tracking_store(runs_dir: Path, tracking_uri: str | None = None) -> tuple[str | None, list[str]]:
    """The backend store ``matloop ui`` serves, and lines telling the user which stores exist.

    ``tracking_uri`` (``--tracking-uri``), else ``$MLFLOW_TRACKING_URI`` when it is a SQLite store, else the
    project's shared store ``runs/mlflow.db``, else the most recent ``runs/<campaign>/mlflow.db``; the other
    stores are listed with the command that opens each. None (with a line saying so) when there is none."""
    def describe(db: Path) -> str:
        names = store_experiments(db)
        shown = "unreadable" if names is None else (", ".join(names) if names else "no experiments yet")
        return f"{db} ({shown})"

    stores = tracking_stores(runs_dir)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    notes: list[str] = []
    if tracking_uri is None and env:
        if env.startswith("sqlite:"):
            tracking_uri = env
            notes.append("MLflow store from $MLFLOW_TRACKING_URI")
        else:
            notes.append(f"campaigns here track to $MLFLOW_TRACKING_URI ({env.split('@')[-1]}): open that server's UI "
                         "for them; the MLflow UI started below shows the local stores")
    if tracking_uri is None and stores:
        shared = runs_dir.resolve() / "mlflow.db"
        chosen = shared if shared in stores else max(stores, key=lambda p: p.stat().st_mtime)
        tracking_uri = f"sqlite:///{chosen}"
        notes.append(f"MLflow store: {describe(chosen)}")
    elif tracking_uri is None:
        notes.append(f"no MLflow store found ({runs_dir}/mlflow.db or {runs_dir}/<campaign>/mlflow.db): the MLflow UI "
                     "opens an empty store; run a campaign first, or pass --tracking-uri")
    others = [db for db in stores if tracking_uri is None or f"sqlite:///{db}" != tracking_uri]
    if others and tracking_uri is not None:
        notes.append(f"{len(others)} other MLflow store(s), not shown in this UI (one campaign each, made before the "
                     "shared store); open one with the command beside it:")
        notes += [f"  {describe(db)}: matloop ui --mlflow-port 5001 --prefect-port 4201 --tracking-uri sqlite:///{db}"
                  for db in others]
    return tracking_uri, notes


@contextlib.contextmanager
def ui_services(root: Path, *, prefect_port: int = 4200, mlflow_port: int = 5000, host: str = HOST,
                mlflow_backend_uri: str | None = None, prefect_home: Path | None = None,
                ) -> Iterator[tuple[HttpService, HttpService]]:
    """Both UIs for ``matloop ui``: Prefect (home ``prefect_home``, default ``root/prefect``; give the
    campaigns' ``PREFECT_HOME`` to see their runs) and MLflow (``root/mlflow``)."""
    root = Path(root).resolve()
    backend = mlflow_backend_uri or f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    (root / "mlflow").mkdir(parents=True, exist_ok=True)
    with prefect_server(prefect_home or root / "prefect", port=prefect_port, host=host) as pf, \
            mlflow_server(backend, root / "mlflow" / "artifacts", port=mlflow_port, host=host) as ml:
        yield pf, ml
