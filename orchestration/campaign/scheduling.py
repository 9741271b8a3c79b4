"""Cron runs for ``matloop schedule``, created by the serving process itself.

Prefect 3.8.8's server-side scheduler fails with SQLAlchemy 2.1 (``Can't evaluate bulk DML
statement`` when it inserts scheduled runs), so the deployment's cron schedule is registered
inactive (it still shows in the UI) and :class:`CronTicker` creates each scheduled flow run through
the API, one at a time, at the cron times; the runner serving the deployment executes them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime

log = logging.getLogger("matloop.schedule")


def next_time(cron: str, timezone: str, *, after: datetime) -> datetime:
    """The first cron time strictly after ``after``."""
    from prefect.server.schemas.schedules import CronSchedule

    dates = asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=1, start=after))
    return datetime.fromisoformat(str(dates[0]).replace("Z", "+00:00"))


class CronTicker(threading.Thread):
    """Creates a scheduled run of ``deployment`` (``flow/name``) at every cron time until ``stop``."""

    def __init__(self, deployment: str, *, cron: str, timezone: str, api_url: str) -> None:
        super().__init__(daemon=True, name="matloop-cron")
        self.deployment, self.cron, self.timezone, self.api_url = deployment, cron, timezone, api_url
        self.stop = threading.Event()
        self.created: list[datetime] = []

    def run(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            while not self.stop.is_set():  # the runner registers the deployment first
                try:
                    with get_client(sync_client=True) as client:
                        client.read_deployment_by_name(self.deployment)
                    break
                except Exception:
                    self.stop.wait(1.0)
            while not self.stop.is_set():
                when = next_time(self.cron, self.timezone, after=datetime.now(UTC))
                try:
                    run_deployment(self.deployment, scheduled_time=when, timeout=0, as_subflow=False,
                                   idempotency_key=f"{self.deployment}@{when.isoformat()}")
                    self.created.append(when)
                except Exception as exc:  # the server may be restarting; try the next tick
                    log.warning("could not schedule %s at %s: %s", self.deployment, when, exc)
                self.stop.wait(max(1.0, (when - datetime.now(UTC)).total_seconds() + 1.0))
