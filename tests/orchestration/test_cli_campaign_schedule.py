"""``matloop schedule``: a Prefect deployment with an ACTIVE cron schedule in a process work pool on the
server of PREFECT_API_URL, updated in place when run again; clear errors without a server or with a bad
schedule; ``prefect deploy`` of deploy/prefect.yaml ships an active nightly schedule. That the server then
creates the runs and a worker executes them is tests/orchestration/test_scheduling_e2e.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.orchestration.test_flows import CONFIG

REPO = Path(__file__).resolve().parents[2]


def _schedule(cfg: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestration.cli", "schedule", str(cfg), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


async def _read(name: str) -> tuple[Any, Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        dep = await client.read_deployment_by_name(name)
        return dep, await client.read_work_pool(str(dep.work_pool_name))


async def _delete(name: str) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.delete_deployment((await client.read_deployment_by_name(name)).id)


def _config(tmp_path: Path, name: str) -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({"name": name, **CONFIG, "campaign_dir": str(tmp_path / "run")}))
    return cfg


def test_schedule_creates_an_active_cron_deployment_and_updates_it(tmp_path: Path, prefect_server_settings: str) -> None:
    name, pool = f"cron-{uuid.uuid4().hex[:8]}", f"pool-{uuid.uuid4().hex[:8]}"
    cfg = _config(tmp_path, name)
    env = {**os.environ, "PREFECT_API_URL": prefect_server_settings, "PREFECT_HOME": str(tmp_path / ".prefect")}
    first = _schedule(cfg, "--cron", "0 2 * * *", "--timezone", "Europe/Paris", "--pool", pool, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"work pool {pool} (created)" in first.stdout
    assert f"PREFECT_API_URL={prefect_server_settings} " in first.stdout and f"worker start --pool {pool}" in first.stdout
    try:
        dep, work_pool = asyncio.run(_read(f"campaign/{name}-schedule"))
        (sched,) = dep.schedules
        assert sched.active and sched.schedule.cron == "0 2 * * *" and sched.schedule.timezone == "Europe/Paris"
        assert work_pool.type == "process" and dep.entrypoint == "orchestration.flows.campaign_flow"
        assert dep.job_variables == {"working_dir": str(tmp_path.resolve())}
        assert dep.parameters == {"config_path": str(tmp_path / "run" / "campaign.yaml"), "max_rounds": 1}
        assert {"matloop", f"campaign:{name}", "oracle:density", "target:density"} <= set(dep.tags)

        again = _schedule(cfg, "--cron", "30 3 * * 1", "--rounds-per-run", "2", "--pool", pool, env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "(created)" not in again.stdout
        dep2, _pool = asyncio.run(_read(f"campaign/{name}-schedule"))
        (sched2,) = dep2.schedules  # replaced, not added
        assert dep2.id == dep.id and sched2.active and sched2.schedule.cron == "30 3 * * 1"
        assert dep2.parameters["max_rounds"] == 2
    finally:
        asyncio.run(_delete(f"campaign/{name}-schedule"))


def test_schedule_refuses_without_a_server_or_with_a_bad_schedule(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "refused")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / ".prefect")
    no_server = _schedule(cfg, "--cron", "0 2 * * *", env=env, cwd=tmp_path)
    assert no_server.returncode == 2 and "export PREFECT_API_URL=" in no_server.stderr, no_server.stderr[-2000:]

    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # checked before any server is contacted
    bad = _schedule(cfg, "--cron", "61 * * * *", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "--cron '61 * * * *'" in bad.stderr and "not a valid schedule" in bad.stderr
    both = _schedule(cfg, "--cron", "0 2 * * *", "--interval", "60", env=env, cwd=tmp_path)
    assert both.returncode == 2 and "exactly one of --cron and --interval" in both.stderr
    down = _schedule(cfg, "--interval", "60", env=env, cwd=tmp_path)
    assert down.returncode == 2 and "cannot reach the Prefect API at http://127.0.0.1:9/api" in down.stderr
    assert not (tmp_path / "run").exists()  # nothing written


async def _prefect_yaml_deployments() -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {n: await client.read_deployment_by_name(f"campaign/{n}") for n in ("demo", "formation-energy-nightly")}


def test_prefect_yaml_deploys_an_active_nightly_schedule(tmp_path: Path, prefect_server_settings: str) -> None:
    prefect = str(Path(sys.executable).parent / "prefect")
    env = {**os.environ, "PREFECT_API_URL": prefect_server_settings, "PREFECT_HOME": str(tmp_path / ".prefect"),
           "MATLOOP_ROOT": str(REPO)}
    subprocess.run([prefect, "work-pool", "create", "matloop", "--type", "process"], cwd=REPO, env=env,
                   capture_output=True, timeout=120)  # what deploy/start-worker.sh does (may exist already)
    deployed = subprocess.run([prefect, "--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml", "--all"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    deps = asyncio.run(_prefect_yaml_deployments())
    try:
        (nightly,) = deps["formation-energy-nightly"].schedules
        assert nightly.active and nightly.schedule.cron == "0 2 * * *"
        assert deps["formation-energy-nightly"].parameters["max_rounds"] == 1
        for dep in deps.values():
            assert dep.work_pool_name == "matloop" and dep.global_concurrency_limit.limit == 1
            assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    finally:
        for name in deps:
            asyncio.run(_delete(f"campaign/{name}"))
