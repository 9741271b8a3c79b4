"""Prefect's own scheduling, end to end, on a real local Prefect server (the session's, on 127.0.0.1).

``matloop schedule --interval 5`` creates a deployment with an ACTIVE schedule in a new process work pool
and returns; the server's scheduler service creates the runs (state Scheduled, ``auto_scheduled``) with
no worker running; ``prefect worker start --pool`` then executes them: a run ends Completed with round 0
of a tiny density campaign in its store, named after the campaign, tagged, and with the matloop INFO
logs of its round in the Prefect API. Fails with SQLAlchemy 2.1 (the server's scheduler then creates
no run; see pyproject.toml)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import yaml

from orchestration.store import Store
from tests.orchestration.test_flows import CONFIG


async def _runs(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        return list(await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=20))


async def _deployment_and_pool(name: str, pool: str) -> tuple[Any, Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(name), await client.read_work_pool(pool)


async def _campaign_runs_and_logs(campaign: str) -> tuple[list[Any], list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags, LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"campaign:{campaign}"])))
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])))
        return list(runs), [log.message for log in logs]


async def _delete(deployment_id: Any) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.delete_deployment(deployment_id)


def _wait_for(what: str, probe: Any, *, timeout_s: float, every_s: float = 1.0, alive: Any = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if alive is not None:
            alive()
        time.sleep(every_s)
    raise AssertionError(f"no {what} within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the worker and every process it started (flow runs start their own sessions)."""
    try:
        family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        family = [proc.pid]
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in family[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def test_server_scheduler_creates_runs_and_a_pool_worker_executes_them(
    tmp_path: Path, prefect_server_settings: str,
) -> None:
    campaign, pool = f"sched-{uuid.uuid4().hex[:8]}", f"pool-{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "sched.yaml"
    cfg.write_text(yaml.safe_dump({"name": campaign, **CONFIG, "rounds": 1, "stopping": {},
                                   "campaign_dir": str(tmp_path / "run")}))
    env = {**os.environ, "PREFECT_API_URL": prefect_server_settings, "PREFECT_HOME": str(tmp_path / ".prefect")}
    made = subprocess.run([sys.executable, "-m", "orchestration.cli", "schedule", str(cfg), "--interval", "5",
                           "--pool", pool], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    assert f"worker start --pool {pool}" in made.stdout and f"campaign/{campaign}-schedule" in made.stdout

    dep, work_pool = asyncio.run(_deployment_and_pool(f"campaign/{campaign}-schedule", pool))
    assert work_pool.type == "process" and dep.work_pool_name == pool and dep.global_concurrency_limit.limit == 1
    (sched,) = dep.schedules
    assert sched.active and sched.schedule.interval.total_seconds() == 5
    assert dep.parameters == {"config_path": str(tmp_path / "run" / "campaign.yaml"), "max_rounds": 1}
    assert {f"campaign:{campaign}", "oracle:density", "target:density"} <= set(dep.tags)

    worker: subprocess.Popen[bytes] | None = None
    try:
        # No worker yet: only the server's scheduler can have created these runs.
        scheduled = _wait_for("auto-scheduled run", lambda: asyncio.run(_runs(dep.id)), timeout_s=90)
        assert all(r.auto_scheduled and r.state.type.value == "SCHEDULED" for r in scheduled)
        assert scheduled[0].state.name in {"Scheduled", "Late"}

        worker_log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", pool],
            cwd=tmp_path, env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, stdout=worker_log,
            stderr=subprocess.STDOUT, start_new_session=True)

        def worker_alive() -> None:
            assert worker is not None and worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]

        def completed() -> list[Any]:
            return [r for r in asyncio.run(_runs(dep.id)) if r.state and r.state.is_final()]

        done = _wait_for("finished run", completed, timeout_s=300, every_s=2, alive=worker_alive)
        asyncio.run(_delete(dep.id))  # no further runs
        run = done[0]
        assert run.state.name == "Completed", (tmp_path / "worker.log").read_text()[-3000:]
        assert run.auto_scheduled and run.work_pool_name == pool and run.name == campaign
        assert {f"campaign:{campaign}", "oracle:density", "target:density"} <= set(run.tags)
    finally:
        if worker is not None:
            _stop(worker)
        else:
            asyncio.run(_delete(dep.id))

    store = Store.open(f"sqlite:///{tmp_path / 'run' / 'store.db'}", create=False)
    try:
        assert [r.index for r in store.rounds(campaign) if r.completed] == [0]
        assert len(store.results(campaign)) == 4
    finally:
        store.close()

    def round_logged() -> tuple[list[Any], list[str]] | None:
        runs, messages = asyncio.run(_campaign_runs_and_logs(campaign))
        hit = any(f"campaign {campaign} round 0: batch of 4 candidate(s) for oracle density" in m for m in messages)
        return (runs, messages) if hit else None

    runs, messages = _wait_for("matloop INFO log of round 0 in the Prefect API", round_logged, timeout_s=30)
    assert f"{campaign}-round-0" in {r.name for r in runs}  # the round subflow carries the campaign tags too
    assert any(f"campaign {campaign}: round 0" in m for m in messages)  # the flow's own run logger
