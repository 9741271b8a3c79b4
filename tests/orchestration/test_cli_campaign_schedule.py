"""``matloop schedule``: the deployment appears on the Prefect server with its cron schedule, and the
serving process runs the scheduled flow run that continues the campaign by one round."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestration.store import Store
from tests.orchestration.test_flows import CONFIG


async def _deployment(name: str) -> object:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(name)


@pytest.mark.slow
def test_schedule_serves_a_cron_deployment_that_adds_a_round(tmp_path: Path, prefect_server_settings: str) -> None:
    cfg = tmp_path / "sched.yaml"
    cfg.write_text(yaml.safe_dump({"name": "sched", **CONFIG, "stopping": {}, "campaign_dir": str(tmp_path / "run")}))
    env = {**os.environ, "PREFECT_API_URL": prefect_server_settings, "PREFECT_HOME": str(tmp_path / ".prefect")}
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "schedule", str(cfg), "--cron", "* * * * *"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    db = tmp_path / "run" / "store.db"
    try:
        deadline = time.monotonic() + 180  # the next minute boundary, then one round
        rounds: list = []
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(3)
            if db.exists():
                store = Store.open(f"sqlite:///{db}", create=False)
                try:
                    rounds = [r for r in store.rounds("sched") if r.completed]
                finally:
                    store.close()
                if rounds:
                    break
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:] if proc.stdout else ""
        assert [r.index for r in rounds] == [0]  # one round per scheduled run
        dep = asyncio.run(_deployment("campaign/sched-schedule"))
        (sched,) = dep.schedules  # type: ignore[attr-defined]
        assert sched.schedule.cron == "* * * * *"
        assert dep.parameters == {"config_path": str(tmp_path / "run" / "campaign.yaml"), "max_rounds": 1}  # type: ignore[attr-defined]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
