"""Prefect deployments for ``matloop schedule``: a campaign on a schedule, run by a work pool's worker.

The deployment (``campaign/<name>-schedule``) runs :func:`orchestration.flows.campaign_flow` on the
campaign's snapshot (``<campaign dir>/campaign.yaml``), adding ``rounds_per_run`` rounds per run, with an
ACTIVE schedule: the Prefect server's scheduler service creates the runs and a worker of the ``process``
work pool (``prefect worker start --pool NAME``) executes them, one at a time (concurrency limit 1: the
store has one writer per campaign). The flow is imported by module path (``orchestration.flows``), so
any worker whose Python has matloop installed can run it; its working directory is the directory the
deployment was created from.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

DEFAULT_POOL = "matloop"
ENTRYPOINT = "orchestration.flows.campaign_flow"


@dataclass(frozen=True)
class ScheduledCampaign:
    """What :func:`deploy_campaign` created: the deployment and whether the work pool was new."""

    deployment_id: str
    deployment: str  # "flow/deployment", as `prefect deployment run` takes it
    pool: str
    pool_created: bool


def deployment_name(campaign: str) -> str:
    return f"{campaign}-schedule"


def campaign_tags(config: Any) -> list[str]:
    """Tags of a campaign's runs and deployments: ``matloop``, ``campaign:<name>``, ``oracle:<name>``,
    one ``target:<property>`` per target."""
    return ["matloop", f"campaign:{config.name}", f"oracle:{config.oracle.name}",
            *(f"target:{t.name}" for t in config.targets)]


def worker_command(pool: str, *, api_url: str | None = None) -> str:
    """The command that starts a worker for ``pool`` with the Prefect of this Python (matloop's venv)."""
    prefect = Path(sys.executable).parent / "prefect"
    exe = str(prefect) if prefect.exists() else "prefect"
    env = f"PREFECT_API_URL={shlex.quote(api_url)} " if api_url else ""
    return f"{env}{shlex.quote(exe)} worker start --pool {shlex.quote(pool)}"


def make_schedule(*, cron: str | None, interval_s: float | None, timezone: str) -> Any:
    """A Prefect schedule (active) from exactly one of ``cron`` and ``interval_s``; ValueError names the
    bad option."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from pydantic import ValidationError

    if (cron is None) == (interval_s is None):
        raise ValueError("give exactly one of --cron and --interval")
    try:
        if cron is not None:
            return CronSchedule(cron=cron, timezone=timezone)
        return IntervalSchedule(interval=timedelta(seconds=float(interval_s or 0)), timezone=timezone)
    except (ValidationError, ValueError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else [{"msg": str(exc)}]
        reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in errors)
        what = f"--cron {cron!r}" if cron is not None else f"--interval {interval_s!r}"
        raise ValueError(f"{what} / --timezone {timezone!r} is not a valid schedule ({reason}); use five cron "
                         'fields, e.g. "0 2 * * *", or a positive number of seconds, and a time zone name such as UTC'
                         ) from None


async def ensure_process_pool(client: Any, pool: str) -> bool:
    """Create the ``process`` work pool ``pool`` unless it exists; True when created. A pool of another
    type is refused (its workers could not run a local campaign)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        existing = await client.read_work_pool(pool)
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
        return True
    if existing.type != "process":
        raise ValueError(f"work pool {pool!r} is of type {existing.type!r}, not 'process'; pass --pool with another "
                         "name (it is created as a process pool)")
    return False


async def deploy_campaign(*, config: Any, snapshot: Path, schedule: Any, pool: str = DEFAULT_POOL,
                          rounds_per_run: int = 1, working_dir: Path | None = None) -> ScheduledCampaign:
    """Create (or update) the campaign's deployment with an active ``schedule`` on the process work pool
    ``pool`` (created if missing), against the Prefect API of the current settings. Run again, it updates
    the deployment and replaces its schedule (and the runs the old schedule created)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    from orchestration.flows import campaign_flow

    name = deployment_name(config.name)
    parameters = {"config_path": str(Path(snapshot).resolve()), "max_rounds": rounds_per_run}
    async with get_client() as client:
        created = await ensure_process_pool(client, pool)
        flow_id = await client.create_flow(campaign_flow)
        deployment_id = await client.create_deployment(
            flow_id=flow_id, name=name, work_pool_name=pool, entrypoint=ENTRYPOINT, path=None, pull_steps=[],
            parameters=parameters, tags=campaign_tags(config), concurrency_limit=1,
            job_variables={"working_dir": str((working_dir or Path.cwd()).resolve())},
            schedules=[DeploymentScheduleCreate(schedule=schedule, active=True)],
            description=f"continues campaign {config.name} by {rounds_per_run} round(s) per run",
            parameter_openapi_schema=campaign_flow.parameters.model_dump(exclude_unset=True),
        )
    return ScheduledCampaign(str(deployment_id), f"{campaign_flow.name}/{name}", pool, created)
