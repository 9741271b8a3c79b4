"""Service harnesses: a real Prefect server runs a flow; PostgreSQL restarts on its data dir;
failures to start name the log."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orchestration.servers import ServerError, free_port, postgres_bin_dir, postgres_server, wait_http

FLOW = """
from prefect import flow, task

@task(retries=1)
def double(x: int) -> int:
    return 2 * x

@flow(name="matloop-harness-check")
def check(x: int) -> int:
    return double(x)

print(check(21))
"""


@pytest.mark.slow
def test_prefect_server_runs_a_flow(prefect_server_settings: str, tmp_path: Path) -> None:
    prefect_api_url = prefect_server_settings
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PREFECT_HOME": str(tmp_path / "client-home")}
    out = subprocess.run([sys.executable, "-c", FLOW], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "42"

    import anyio
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="matloop-in-process-check")
    def in_process() -> str:
        return "ok"

    assert in_process() == "ok"  # runs in this process, reported to the server

    async def runs() -> list[tuple[str, str | None]]:
        async with get_client() as client:
            found = await client.read_flow_runs()
            names = {f.id: f.name for f in await client.read_flows()}
            return [(names[r.flow_id], r.state.type.value if r.state else None) for r in found]

    found = anyio.run(runs)
    assert ("matloop-harness-check", "COMPLETED") in found and ("matloop-in-process-check", "COMPLETED") in found


@pytest.mark.slow
def test_postgres_restarts_on_existing_data_dir() -> None:
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL binaries not found")
    if os.geteuid() == 0:
        pytest.importorskip("pwd").getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="matloop-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user="postgres")
        with postgres_server(root / "data", fast=True) as pg:
            url = pg.create_database("keep")
            from orchestration.store import Store

            with Store.open(url) as store:
                store.create_campaign("a", config={}, config_hash="h", seed=0, code_version="v")
        with postgres_server(root / "data", fast=True) as pg, Store.open(pg.url("keep")) as store:
            assert store.campaigns() == ["a"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_wait_http_reports_dead_process_and_timeout(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("boom: cannot bind\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(ServerError, match=r"exited with code 3.*boom: cannot bind"):
        wait_http(f"http://127.0.0.1:{free_port()}/health", timeout_s=5, process=proc, log=log)
    with pytest.raises(ServerError, match="did not become healthy"):
        wait_http(f"http://127.0.0.1:{free_port()}/health", timeout_s=0.5, log=log)
