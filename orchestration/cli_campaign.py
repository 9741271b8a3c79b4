"""Campaign commands: run, resume, status, export, ui, schedule.

Prefect and MLflow are configured here before they are imported: a project-local ``PREFECT_HOME``
(``./.prefect``), analytics and telemetry off, a generous ephemeral-server start-up timeout.
Every expected problem (bad config, unreachable store, unknown campaign) is one paragraph on
stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration.errors import UserError, fail, user_errors
from orchestration.urls import mask_url

console = Console(stderr=True)
out_console = Console()


def prefect_environment(*, verbose: bool = False) -> None:
    """Environment defaults for Prefect/MLflow in this process (set before importing them)."""
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # run logs (INFO and up) reach the Prefect API and UI
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "WARNING")  # the terminal


class _RichReporter:
    """Shows each long step of a round as a Rich progress bar (see orchestration.campaign.progress)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def start(self, description: str, total: float | None) -> int:
        return int(self.progress.add_task(description, total=total))

    def update(self, handle: int, completed: float) -> None:
        self.progress.update(TaskID(handle), completed=completed)

    def stop(self, handle: int) -> None:
        task = self.progress.tasks[[t.id for t in self.progress.tasks].index(TaskID(handle))]
        self.progress.update(TaskID(handle), completed=task.total or task.completed, total=task.total or task.completed or 1)


@contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    from orchestration.campaign.progress import set_reporter

    if not enabled:
        yield
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        set_reporter(_RichReporter(bar))
        try:
            yield
        finally:
            set_reporter(None)


def _prepare(config_path: Path, *, hold: ExitStack | None = None) -> tuple[Any, Path]:
    """Validate everything a run needs before anything is written; returns (config, snapshot path).

    With ``hold``, take the campaign's lock (one writer per campaign, see orchestration/store/locks.py)
    before writing, held until ``hold`` closes; a second writer is refused with a message naming the holder."""
    from orchestration.campaign.data import seed_data
    from orchestration.campaign.status import write_snapshot
    from orchestration.config import build_search_space, load_config, stored_reading, validate_oracle_settings
    from orchestration.store import open_campaign

    cfg = load_config(config_path)
    validate_oracle_settings(cfg, source=str(config_path))
    with console.status("checking the search space and seed data"):
        build_search_space(cfg)
        for target in cfg.targets:
            seed_data(cfg, target.name)
    if hold is not None:
        from orchestration.store.locks import hold_campaign

        command = " ".join(["matloop", *sys.argv[1:]])
        lock = hold.enter_context(hold_campaign(cfg.resolved_store_url(), cfg.name, command=command))
        if lock.taken_over:
            console.print(f"[yellow]campaign {cfg.name}: took over the lock of {lock.taken_over}[/]", highlight=False)
    store, record = open_campaign(cfg)
    store.close()
    cfg = stored_reading(cfg, record.config_hash)[0]  # a campaign stored before a default changed keeps it
    return cfg, write_snapshot(cfg)


def _stop_temporary_prefect_servers() -> None:
    """Stop the temporary Prefect server(s) this process started (Prefect's ephemeral mode), if any."""
    server_module = sys.modules.get("prefect.server.api.server")
    servers = getattr(getattr(server_module, "SubprocessASGIServer", None), "_instances", {})
    for server in list(servers.values()):
        server.stop()


@contextmanager
def exit_on_sigterm(hint: str) -> Iterator[None]:
    """While the block runs, SIGTERM (``kill PID``, a service manager's or scheduler's stop) ends this
    process with exit code 143 after stopping the temporary Prefect server this process started and
    printing ``hint``; the exit itself is immediate, like SIGKILL, whose aftermath the store is built
    for (``tests/orchestration/test_kill.py``: nothing lost, nothing repeated on resume).

    While a flow runs, Prefect's own handler gets the signal first: its task runner lets the tasks in
    flight finish (their oracle results are stored), it marks the flow runs crashed, and then it
    re-sends the signal to the handler it replaced: this one. With the default handler there, the
    process died without running its exit hooks and left the Prefect server running with no parent.
    Oracle worker processes exit with their parent (``oracles/chgnet.py``). Outside the main thread
    (where signal handlers cannot be set) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        try:
            _stop_temporary_prefect_servers()
        finally:
            print(f"stopped by signal {signum}: {hint}", file=sys.stderr, flush=True)
            os._exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_command(name: str, snapshot: Path) -> str:
    """The command that continues campaign ``name`` whose snapshot is ``snapshot``: ``matloop resume NAME``,
    with ``--dir`` when the campaign directory is not ``runs/NAME`` (the folder name is not the campaign's)."""
    directory = snapshot.parent
    default = (Path("runs") / name).resolve()
    return f"matloop resume {name}" + ("" if directory.resolve() == default else f" --dir {directory}")


def _run_flow(snapshot: Path, name: str, *, max_rounds: int | None, show_progress: bool,
              wait: bool | None = None) -> dict[str, Any]:
    from orchestration.flows import campaign_flow

    started = time.perf_counter()
    again = resume_command(name, snapshot)
    hint = f"completed rounds and stored oracle results are kept; continue with `{again}`"
    with exit_on_sigterm(hint), _progress(show_progress):
        try:
            summary = campaign_flow(str(snapshot), max_rounds=max_rounds, wait=wait)
        except UserError:
            raise
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(f"the campaign {name!r} stopped with an error: {type(exc).__name__}: {text}. Completed rounds and "
                 f"oracle results are kept in the store; fix the cause and continue with `{again}`.", code=1)
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    return dict(summary)


def _where(cfg: Any, summary: dict[str, Any]) -> None:
    out_console.print(f"[bold]{cfg.name}[/]: {summary['completed_rounds']} round(s) completed, "
                      f"{summary['oracle_results']} oracle results, status {summary['status']} "
                      f"({summary.get('wall_s', '?')} s)")
    if summary.get("jobs_in_flight"):
        out_console.print(f"  [yellow]{summary['jobs_in_flight']} oracle job(s) in flight[/]: collect them with "
                          f"`{resume_command(cfg.name, cfg.resolved_dir() / 'campaign.yaml')}` (nothing is submitted twice)")
    sun = summary.get("sun")
    if sun:
        out_console.print(f"  S.U.N.:   {sun_line(sun)}")
    out_console.print(f"  store:    {mask_url(cfg.resolved_store_url())}")
    out_console.print(f"  files:    {cfg.resolved_dir()}  (rounds/*/batch.csv, plots, hits)")
    if cfg.tracking.enabled:
        out_console.print(f"  MLflow:   {mask_url(cfg.resolved_tracking_uri())}  (experiment {cfg.experiment_name()})")
    else:
        out_console.print("  MLflow:   off (tracking.enabled: false)")
    out_console.print(f"  status:   matloop status {cfg.name}    UIs: matloop ui")


def _run(config: Path, *, rounds: int | None, verbose: bool, quiet: bool, wait: bool | None = None) -> None:
    prefect_environment(verbose=verbose)
    with user_errors(), ExitStack() as hold:
        cfg, snapshot = _prepare(config, hold=hold)
        summary = _run_flow(snapshot, cfg.name, max_rounds=rounds, show_progress=not quiet, wait=wait)
    _where(cfg, summary)


def run(
    config: Path = typer.Argument(..., help="campaign YAML (see configs/demo.yaml)"),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="run at most this many more rounds now"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Prefect's run logs"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    no_wait: bool = typer.Option(False, "--no-wait", help="queued oracles (DFT): submit the round's jobs and exit; "
                                 "`matloop resume` collects them"),
) -> None:
    """Run a campaign (or continue it: rounds already completed in its store are kept).

    Example: matloop run configs/demo.yaml
    Example (DFT on SLURM, do not wait for the queue): matloop run configs/gpaw.yaml --no-wait
    """
    _run(config, rounds=rounds, verbose=verbose, quiet=quiet, wait=False if no_wait else None)


def resume(
    name: str = typer.Argument(..., help="campaign name (the `name:` in its config)"),
    directory: Path | None = typer.Option(None, "--dir", help="campaign directory (default runs/NAME)"),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="run at most this many more rounds now"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Prefect's run logs"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    no_wait: bool = typer.Option(False, "--no-wait", help="queued oracles (DFT): collect finished jobs, submit new "
                                 "ones and exit without waiting"),
) -> None:
    """Continue an interrupted campaign where its store says it stopped (no oracle call is repeated;
    oracle jobs still queued or running on a scheduler are polled, not submitted again).

    Example: matloop resume demo
    """
    from orchestration.campaign.status import snapshot_for

    prefect_environment(verbose=verbose)
    with user_errors():
        snapshot = snapshot_for(name, directory=directory)
    _run(snapshot, rounds=rounds, verbose=verbose, quiet=quiet, wait=False if no_wait else None)


def status(
    name: str | None = typer.Argument(None, help="campaign name; may be left out when the store holds one campaign"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    store: str | None = typer.Option(None, "--store", help="store URL (default $MATLOOP_STORE_URL or runs/NAME/store.db)"),
) -> None:
    """Rounds, oracle calls, hits, S.U.N. counts and the best candidates (with their labels) of a campaign.

    Example: matloop status demo --json
    """
    from orchestration.campaign import status as st

    with user_errors():
        db = st.open_store(st.store_url_for(name, store=store))
        try:
            info = st.status(db, st.pick_campaign(db, name))
        finally:
            db.close()
    if as_json:
        print(json.dumps(info, default=str))
        return
    out_console.print(f"[bold]{info['name']}[/] ({info['status']}): {info['rounds_completed']}/{info['rounds_planned']} "
                      f"rounds, {info['oracle_calls']} oracle calls, {info['hits']} hits ({info['unique_hits']} unique)")
    out_console.print(f"S.U.N.: {sun_line(info['sun'])}")
    if info.get("writer"):
        out_console.print(f"being written by {info['writer']}", highlight=False)
    rounds = Table("round", "state", "batch", "results", "hit rate", "best so far")
    for r in info["rounds"]:
        m = r["metrics"]
        rounds.add_row(str(r["index"]), r["state"], str(r["batch"]), str(r["results"]),
                       f"{m['hit_rate']:.2f}" if "hit_rate" in m else "", f"{m['best_so_far']:.4g}" if "best_so_far" in m else "")
    out_console.print(rounds)
    if info["jobs_in_flight"]:
        jobs = Table("candidate", "attempt", "scheduler", "job id", "job directory", title="oracle jobs in flight")
        for j in info["jobs_in_flight"]:
            jobs.add_row(j["id"], str(j["attempt"]), j["scheduler"], j["job_id"], j["workdir"])
        out_console.print(jobs)
    best = Table("id", "formula", "sampled SG", "relaxed SG", "dim", info["target"], "hit", "stable", "novel formula",
                 "novel structure", "unique", "S.U.N.")

    def mark(value: object) -> str:
        return "" if value is None else ("yes" if value is True else "no" if value is False else str(value))

    for b in info["best"]:
        best.add_row(b["id"], b["formula"], str(b["space_group"]), mark(b.get("relaxed_space_group")),
                     mark(b.get("dimensionality")), f"{b[info['target']]:.4g}", "yes" if b["hit"] else "",
                     *(mark(b.get(k)) for k in ("stable", "novel_formula", "novel_structure", "unique", "sun")))
    out_console.print(best)


def sun_line(counts: dict[str, int]) -> str:
    """One line of S.U.N. counts (see :class:`discovery.sun.SunCounts`)."""
    text = (f"{counts['sun']} S.U.N., {counts.get('sun_novel_formula', 0)} with a new formula (stable {counts['stable']}, novel structure {counts['novel']}, novel formula "
            f"{counts['novel_formula']}, unique {counts['unique']} of {counts['converged']} converged); "
            f"0-D hits {counts['zero_dimensional_hits']}")
    return text + (f"; {counts['unlabelled']} result(s) not labelled yet" if counts.get("unlabelled") else "")


def export(
    name: str = typer.Argument(..., help="campaign name"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (crystals.csv and cifs/)"),
    store: str | None = typer.Option(None, "--store", help="store URL (default $MATLOOP_STORE_URL or runs/NAME/store.db)"),
) -> None:
    """Write the crystal table (with S.U.N. label columns) and relaxed CIFs of every evaluated candidate.

    Example: matloop export demo --out exports/demo
    """
    from orchestration.campaign import status as st

    with user_errors():
        db = st.open_store(st.store_url_for(name, store=store))
        try:
            camp = st.pick_campaign(db, name)
            if out.exists() and not out.is_dir():
                raise UserError(f"--out {out} is a file; give a directory")
            table, rows, cifs = st.export(db, camp, out)
        finally:
            db.close()
    out_console.print(f"wrote {table} ({rows} labelled candidates) and {cifs} CIFs in {out / 'cifs'}")


def ui(
    prefect_port: int = typer.Option(4200, "--prefect-port"),
    mlflow_port: int = typer.Option(5000, "--mlflow-port"),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri",
                                            help="MLflow backend store (default: the project's runs/mlflow.db, else "
                                                 "the latest runs/<campaign>/mlflow.db; the others are listed)"),
) -> None:
    """Start a Prefect server and an MLflow server on 127.0.0.1 and print their URLs (Ctrl-C stops both).

    Example: matloop ui --mlflow-port 5001
    """
    from orchestration.servers import ServerError, pick_tracking_store, ui_services

    prefect_environment()
    tracking_uri, notes = pick_tracking_store(Path("runs"), tracking_uri)
    for note in notes:
        out_console.print(note)
    with user_errors(ServerError), ui_services(Path.cwd() / ".matloop-ui", prefect_port=prefect_port,
                                              mlflow_port=mlflow_port, mlflow_backend_uri=tracking_uri,
                                              prefect_home=Path(os.environ["PREFECT_HOME"])) as (pf, ml):
        out_console.print(f"Prefect UI: {pf.ui_url}   (API {pf.url})")
        out_console.print(f"MLflow UI:  {ml.ui_url}   (tracking {mask_url(tracking_uri) or 'new local store'})")
        out_console.print(f"            {ml.ui_url}/#/experiments?workflowType=machine_learning   (campaigns: runs, charts, models)")
        out_console.print("Ctrl-C stops both.")
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops both servers too
        signal.signal(signal.SIGINT, _interrupt)  # even where a background job ignores SIGINT
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def schedule(
    config: Path = typer.Argument(..., help="campaign YAML"),
    cron: str | None = typer.Option(None, "--cron", help='cron expression, e.g. "0 2 * * *" (02:00 every day)'),
    interval: float | None = typer.Option(None, "--interval", min=1, help="or: seconds between runs"),
    rounds_per_run: int = typer.Option(1, "--rounds-per-run", min=1, help="rounds each scheduled run adds"),
    timezone: str = typer.Option("UTC", "--timezone", help="time zone of the schedule"),
    pool: str = typer.Option("matloop", "--pool", help="Prefect process work pool (created if missing)"),
) -> None:
    """Create a Prefect deployment (campaign/NAME-schedule) that continues the campaign on an active
    schedule, in the process work pool --pool (created if missing), on the Prefect server of
    PREFECT_API_URL. The server's scheduler creates the runs; a worker executes them, one at a time:
    start it as printed (`prefect worker start --pool matloop`, or deploy/start-worker.sh) and keep it
    running. Running the command again updates the deployment and replaces its schedule.

    First: export PREFECT_API_URL=http://127.0.0.1:4200/api (a server: deploy/start-prefect.sh or matloop ui)

    Example: matloop schedule configs/demo.yaml --cron "0 */6 * * *"
    Example (02:00 Paris time, 2 rounds a run): matloop schedule configs/band_gap.yaml --cron "0 2 * * *" --timezone Europe/Paris --rounds-per-run 2
    Example (every 10 minutes, another pool): matloop schedule configs/density.yaml --interval 600 --pool matloop-cpu
    """
    prefect_environment()
    with user_errors():
        import asyncio

        from prefect.settings import PREFECT_API_URL

        from orchestration.campaign.scheduling import deploy_campaign, make_schedule, worker_command

        try:
            when = make_schedule(cron=cron, interval_s=interval, timezone=timezone)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        api = PREFECT_API_URL.value()
        if not api:
            raise UserError("matloop schedule needs a Prefect server (without one nothing creates or runs the scheduled "
                            "runs): start one (deploy/start-prefect.sh, `prefect server start --host 127.0.0.1` or "
                            "`matloop ui`) and export PREFECT_API_URL=http://127.0.0.1:4200/api")
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            problem = client.api_healthcheck()
        if problem is not None:
            raise UserError(f"cannot reach the Prefect API at {mask_url(str(api))} ({type(problem).__name__}: "
                            f"{problem}); start the server or fix PREFECT_API_URL")
        cfg, snapshot = _prepare(config)
        try:
            made = asyncio.run(deploy_campaign(config=cfg, snapshot=snapshot, schedule=when, pool=pool,
                                               rounds_per_run=rounds_per_run))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    every = f"cron {cron!r}" if cron is not None else f"every {interval:g} s"
    out_console.print(f"deployment [bold]{made.deployment}[/] ({every}, {timezone}, {rounds_per_run} round(s) per run) "
                      f"in work pool [bold]{made.pool}[/]{' (created)' if made.pool_created else ''} on "
                      f"{mask_url(str(api))}", highlight=False)
    out_console.print("The Prefect server creates the runs; a worker of the pool runs them. Start one and keep it "
                      "running (or deploy/start-worker.sh):", highlight=False)
    out_console.print(f"  {worker_command(made.pool, api_url=mask_url(str(api)))}", highlight=False, soft_wrap=True)
    out_console.print(f"Progress: matloop status {cfg.name}. Pause the schedule in the Prefect UI; remove it with "
                      f"`prefect deployment delete {made.deployment}`.", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the campaign commands to the top-level ``matloop`` app."""
    for fn in (run, resume, status, export, ui, schedule):
        app.command(fn.__name__)(fn)
