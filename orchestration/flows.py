"""Prefect flows of a campaign: ``campaign_flow`` runs one ``round`` subflow per round.

Round: fit proxy → train generator → sample + dedupe → select a diverse batch → oracle tasks (one
per candidate, fanned out on the configured task runner, retried on transient failure) → metrics,
files, MLflow → done. Tasks are thin wrappers over :mod:`orchestration.campaign.steps` and
:mod:`orchestration.campaign.report`; they take the config path and ids and return ids/paths.

The store is the source of truth: each step is skipped when its round state is already reached,
and the oracle tasks evaluate only ``pending()`` candidates, so a campaign killed at any moment
resumes (``campaign_flow`` on the same config) with exactly the oracle calls of an uninterrupted run.

In Prefect the campaign's flow run is named after the campaign (rounds ``<campaign>-round-<i>``) and it,
its rounds and their tasks carry the tags ``campaign:<name>``, ``oracle:<name>``, ``target:<property>``.
Records of the ``matloop`` loggers (INFO and up) logged inside a flow or task run go to that run's logs
in the Prefect API/UI, as ``get_run_logger()``'s do.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from prefect.logging.handlers import APILogHandler

from orchestration.campaign import steps
from orchestration.campaign.context import Campaign, campaign_for, release
from orchestration.campaign.report import log_round
from orchestration.campaign.scheduling import campaign_tags
from orchestration.config import task_runner_for
from orchestration.store import StoreError, code_version
from orchestration.store.locks import CampaignLock, hold_campaign

log = logging.getLogger("matloop.flows")


class RunLogHandler(APILogHandler):
    """Prefect's API log handler for the ``matloop`` loggers: a record logged inside a flow or task run
    joins that run's logs; one logged outside any run is not sent (the console still shows it)."""

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import FlowRunContext, TaskRunContext

        if getattr(record, "flow_run_id", None) or TaskRunContext.get() or FlowRunContext.get():
            super().emit(record)


def send_logs_to_prefect(name: str = "matloop", *, level: int = logging.INFO) -> None:
    """Send the records (``level`` and up) of logger ``name`` logged in a run to the Prefect API; idempotent.
    The console shows what Prefect's console handler lets through (``matloop run``: warnings;
    ``--verbose`` or a worker: INFO)."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, RunLogHandler) for h in logger.handlers):
        logger.addHandler(RunLogHandler())
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)


send_logs_to_prefect()


@task(name="fit-proxy", retries=1, retry_delay_seconds=2)
def fit_proxy_task(config_path: str, round_index: int) -> str:
    return steps.fit_proxies(campaign_for(config_path), round_index)


@task(name="train-generator", retries=1, retry_delay_seconds=2)
def train_generator_task(config_path: str, round_index: int) -> str:
    return steps.train_generator(campaign_for(config_path), round_index)


@task(name="sample-candidates", retries=1, retry_delay_seconds=2)
def sample_task(config_path: str, round_index: int) -> int:
    return steps.sample_candidates(campaign_for(config_path), round_index)


@task(name="select-batch", retries=1, retry_delay_seconds=2)
def select_task(config_path: str, round_index: int) -> list[str]:
    return steps.select(campaign_for(config_path), round_index)


@task(name="oracle", task_run_name="oracle-{candidate_id}", persist_result=True)
def oracle_task(config_path: str, round_index: int, candidate_id: str) -> str:
    return steps.evaluate_candidate(campaign_for(config_path), round_index, candidate_id)


@task(name="oracle-batch", task_run_name="oracle-batch-round-{round_index}", persist_result=True)
def oracle_batch_task(config_path: str, round_index: int, candidate_ids: list[str]) -> list[str]:
    """Batched engine: the round's pending candidates in one oracle call, each result stored as it finishes."""
    return steps.evaluate_batch(campaign_for(config_path), round_index, candidate_ids)


@task(name="oracle-jobs", task_run_name="oracle-jobs-round-{round_index}", retries=2, retry_delay_seconds=10)
def queued_oracle_task(config_path: str, round_index: int, wait: bool) -> list[str]:
    """Submit/poll/collect the round's scheduler jobs (queued oracles); returns the ids still in flight."""
    from orchestration.campaign.queued import evaluate_queued

    return evaluate_queued(campaign_for(config_path), round_index, wait=wait)


@task(name="log-round", retries=1, retry_delay_seconds=2)
def log_task(config_path: str, round_index: int) -> dict[str, Any]:
    return log_round(campaign_for(config_path), round_index)


def _evaluate_queued(camp: Campaign, config_path: str, round_index: int, wait: bool) -> int:
    """Scheduler jobs (DFT): one task drives them all; returns how many candidates are still in flight."""
    camp.store.advance_round(camp.name, round_index, "evaluating")
    t0 = time.perf_counter()
    left = queued_oracle_task(config_path, round_index, wait)
    prior = camp.store.get_round(camp.name, round_index).metrics.get("t_oracle_s", 0.0)
    camp.store.advance_round(camp.name, round_index, "evaluating",
                             metrics={"t_oracle_s": prior + time.perf_counter() - t0})
    if left and wait:
        raise RuntimeError(f"round {round_index}: {len(left)} candidate(s) have no oracle result after every allowed "
                           f"attempt ({', '.join(left[:5])}); run `matloop resume {camp.name}` to try them again")
    return len(left)


def _evaluate(camp: Campaign, config_path: str, round_index: int) -> None:
    """Fan the round's pending candidates out as oracle tasks; raise if any still lacks a result."""
    from orchestration.campaign.progress import step

    camp.store.advance_round(camp.name, round_index, "evaluating")
    pending = camp.store.pending(camp.name, round_index)
    oc = camp.config.oracle
    oracle = oracle_task.with_options(retries=oc.retries, retry_delay_seconds=oc.retry_delay_s)
    t0 = time.perf_counter()
    total = len(camp.store.batch(camp.name, round_index))
    with step(f"round {round_index}: oracle {oc.name} on {total} candidates", total=total) as update:
        update(total - len(pending))
        if steps.batched_oracle(camp):  # one task for the batch (issue 17); results still stored per candidate
            batch = oracle_batch_task.with_options(retries=oc.retries, retry_delay_seconds=oc.retry_delay_s)
            futures: list[Any] = [batch.submit(config_path, round_index, pending)] if pending else []
        else:
            futures = [oracle.submit(config_path, round_index, cid) for cid in pending]
        remaining = list(futures)
        while remaining:
            _done, not_done = wait(remaining, timeout=1.0)
            remaining = list(not_done)
            update(total - len(camp.store.pending(camp.name, round_index)))
    for fut in futures:
        if fut.state.is_failed():
            fut.result(raise_on_failure=False)
    left = camp.store.pending(camp.name, round_index)
    if left:
        raise RuntimeError(f"round {round_index}: {len(left)} candidate(s) have no oracle result after retries "
                           f"({', '.join(left[:5])}); run `matloop resume {camp.name}` to try them again")
    prior = camp.store.get_round(camp.name, round_index).metrics.get("t_oracle_s", 0.0)
    camp.store.advance_round(camp.name, round_index, "evaluating",
                             metrics={"t_oracle_s": prior + time.perf_counter() - t0})


@flow(name="round", flow_run_name="{campaign}-round-{round_index}", log_prints=True)
def round_flow(config_path: str, round_index: int, campaign: str = "", wait: bool | None = None) -> dict[str, float]:
    """One round; every step is skipped when the store says it is done. With a queued oracle and
    ``wait`` false (default: ``oracle.wait``), the round returns ``{"jobs_in_flight": n}`` once its jobs
    are submitted, without completing."""
    camp = campaign_for(config_path)
    t0 = time.perf_counter()
    camp.store.start_round(camp.name, round_index, seed=camp.seed_for(round_index), code_version=code_version())
    camp.tracker.start_round(round_index, params={"round": round_index, "seed": camp.seed_for(round_index)})
    fit_proxy_task(config_path, round_index)
    train_generator_task(config_path, round_index)
    sample_task(config_path, round_index)
    batch = select_task(config_path, round_index)
    log.info("campaign %s round %d: batch of %d candidate(s) for oracle %s", camp.name, round_index, len(batch),
             camp.config.oracle.name)
    if not steps.past(camp, round_index, "evaluated"):
        from orchestration.campaign.queued import queued_oracle

        if queued_oracle(camp) is not None:
            in_flight = _evaluate_queued(camp, config_path, round_index, camp.config.oracle.wait if wait is None else wait)
            if in_flight:
                camp.tracker.end_round()
                return {"jobs_in_flight": float(in_flight)}
        else:
            _evaluate(camp, config_path, round_index)
    info: dict[str, Any] = {}
    if not steps.past(camp, round_index, "logged"):
        info = log_task(config_path, round_index)
    metrics = camp.store.get_round(camp.name, round_index).metrics
    wall = time.perf_counter() - t0
    timing = {"t_round_s": wall}
    if "t_oracle_s" in metrics and not steps.past(camp, round_index, "completed"):
        timing["non_oracle_share"] = max(0.0, 1.0 - metrics["t_oracle_s"] / wall)
    camp.tracker.log_metrics(timing, step=round_index)
    if info.get("markdown"):
        create_markdown_artifact(markdown=info["markdown"], key=f"{_key(camp.name)}-round-{round_index}",
                                 description=f"{camp.name} round {round_index}: metrics and top candidates")
    camp.tracker.end_round()
    rec = camp.store.advance_round(camp.name, round_index, "completed", metrics=timing)
    log.info("campaign %s round %d completed in %.1f s (%d oracle result(s) so far)", camp.name, round_index, wall,
             len(camp.store.results(camp.name)))
    return rec.metrics


def _key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "campaign"


def should_stop(camp: Campaign) -> str | None:
    """Why the campaign stops before its last round (stopping criteria), or None."""
    s = camp.config.stopping
    rounds = [r for r in camp.store.rounds(camp.name) if r.completed]
    if s.max_oracle_calls is not None and len(camp.store.results(camp.name)) >= s.max_oracle_calls:
        return f"reached max_oracle_calls ({s.max_oracle_calls})"
    if rounds:
        last = rounds[-1].metrics
        if s.target_hits is not None and last.get("cumulative_unique_hits", 0) >= s.target_hits:
            return f"found {int(last['cumulative_unique_hits'])} unique hits (target_hits {s.target_hits})"
        if s.patience_rounds is not None and len(rounds) > s.patience_rounds:
            best = [r.metrics.get("best_so_far", float("nan")) for r in rounds]
            if best[-1] == best[-1 - s.patience_rounds]:
                return f"no better best value in {s.patience_rounds} rounds (patience_rounds)"
    return None


def campaign_name(config_path: str) -> str:
    """The ``name`` in a campaign YAML (the file's stem when it has none or cannot be read)."""
    try:
        name = (yaml.safe_load(Path(config_path).read_text()) or {}).get("name")
    except (OSError, yaml.YAMLError, AttributeError):
        name = None
    return str(name) if name else Path(config_path).stem


def _campaign_run_name() -> str:
    from prefect.runtime import flow_run

    return campaign_name(str(flow_run.parameters.get("config_path", "campaign")))


def _tag_this_run(run_tags: list[str]) -> None:
    """Add ``run_tags`` to the current flow run (a run's own tags are fixed when it is created; its
    subflows and tasks get them from ``prefect.tags``)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or set(run_tags) <= set(ctx.flow_run.tags):
        return
    merged = sorted(set(ctx.flow_run.tags) | set(run_tags))
    with get_client(sync_client=True) as client:
        client.update_flow_run(ctx.flow_run.id, tags=merged)
    ctx.flow_run.tags = merged


@flow(name="campaign", flow_run_name=_campaign_run_name, log_prints=True)
def campaign_flow(config_path: str, max_rounds: int | None = None, wait: bool | None = None) -> dict[str, Any]:
    """Run (or continue) the campaign of ``config_path`` up to its ``rounds``; ``max_rounds`` limits how
    many rounds this flow run adds (a scheduled deployment continues one round per run). ``wait``
    overrides ``oracle.wait`` for queued oracles: false stops once a round's jobs are submitted and
    reports them as ``jobs_in_flight`` (collect them later with another run or ``matloop resume``).

    Holds the campaign's lock (:mod:`orchestration.store.locks`; re-entrant: under ``matloop run`` the
    command's lock) so that a second writer of the campaign is refused."""
    camp = campaign_for(config_path)
    run_tags = campaign_tags(camp.config)
    _tag_this_run(run_tags)
    try:
        with tags(*run_tags), hold_campaign(camp.config.resolved_store_url(), camp.name,
                                            command=f"campaign flow {config_path}") as lock:
            return _campaign_rounds(camp, config_path, lock, max_rounds=max_rounds, wait=wait)
    finally:
        release(config_path)


def _campaign_rounds(camp: Campaign, config_path: str, lock: CampaignLock, *, max_rounds: int | None,
                     wait: bool | None) -> dict[str, Any]:
    logger = get_run_logger()
    tracker = camp.tracker
    run_id = tracker.start_campaign(camp.name, params=camp.config.science(),
                                    tags={"matloop.code_version": code_version()})
    camp.store.set_campaign(camp.name, status="running", mlflow_run_id=run_id)
    runner = task_runner_for(camp.config.runner, log_directory=camp.root / "dask-logs")
    done_now = in_flight = 0
    reason: str | None = None
    for r in range(camp.config.rounds):
        rounds = {x.index: x for x in camp.store.rounds(camp.name)}
        if r in rounds and rounds[r].completed:
            continue
        reason = should_stop(camp)
        if reason or (max_rounds is not None and done_now >= max_rounds):
            break
        if lock.lost:
            raise StoreError(f"campaign {camp.name!r}: another run took over this run's campaign lock; this run stops "
                             f"before round {r} (see `matloop status {camp.name}`)")
        logger.info("campaign %s: round %d", camp.name, r)
        out = round_flow.with_options(task_runner=runner)(config_path, r, campaign=camp.name, wait=wait)
        if out.get("jobs_in_flight"):
            in_flight = int(out["jobs_in_flight"])
            logger.info("campaign %s: round %d has %d oracle job(s) in flight; collect them with "
                        "`matloop resume %s`", camp.name, r, in_flight, camp.name)
            break
        done_now += 1
    reason = reason or should_stop(camp)
    completed = sum(x.completed for x in camp.store.rounds(camp.name))
    status = "completed" if completed >= camp.config.rounds else ("stopped" if reason else "running")
    camp.store.set_campaign(camp.name, status=status)  # type: ignore[arg-type]
    if status != "running":
        tracker.end_campaign()
    if reason:
        logger.info("campaign %s stopped: %s", camp.name, reason)
    return {**camp.store.summary(camp.name), "jobs_in_flight": in_flight}
