"""Campaign flow in-process against the session's Prefect server (density oracle, SQLite store):
rounds added a few at a time, re-running a finished campaign makes no oracle call, the oracle-call
budget caps the last batch, and the round artifacts are written; in Prefect the runs are named after
the campaign, tagged, and the matloop INFO logs of a round are in its run's logs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.campaign.context import round_seed
from orchestration.store import Store

CONFIG: dict = {
    "seed": 2,
    "targets": [{"name": "density", "goal": "maximize"}],
    "search_space": {"elements": ["Li", "Na", "Mg", "O", "F", "Cl"], "max_elements": 3, "max_atoms_per_element": 4,
                     "max_atoms": 8, "space_groups": ["cubic", "tetragonal"], "length_range": [2.0, 10.0]},
    "seed_data": {"dataset": "mp20", "max_rows": 120},
    "proxy": {"members": 2, "hidden": 32, "layers": 2, "epochs": 4},
    "acquisition": {"kind": "greedy", "temperature": 1.0},
    "generator": {"iterations_first_round": 4, "iterations_per_round": 2, "hyper": {"hidden": 32, "layers": 2, "batch_size": 16}},
    "candidates_per_round": 40,
    "batch_size": 4,
    "oracle": {"name": "density", "retries": 0},
    "rounds": 3,
    "stopping": {"max_oracle_calls": 10},
    "success": {"metric": "density", "at_least": 1.0},
    "tracking": {"enabled": False},
}


async def _runs_and_logs(campaign: str) -> tuple[list[Any], list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags, LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"campaign:{campaign}"])))
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])))
        return list(runs), [log.message for log in logs]


def runs_and_logs(campaign: str, *, expect: str, timeout_s: float = 20) -> tuple[list[Any], list[str]]:
    """The Prefect flow runs tagged ``campaign:<campaign>`` and their log messages, once one contains ``expect``."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10, at_exit=False)
    deadline = time.monotonic() + timeout_s
    while True:
        runs, messages = asyncio.run(_runs_and_logs(campaign))
        if any(expect in m for m in messages) or time.monotonic() > deadline:
            return runs, messages
        time.sleep(1)


def test_round_seeds_are_distinct_and_stable() -> None:
    seeds = [round_seed(0, r) for r in range(50)] + [round_seed(1, r) for r in range(50)]
    assert len(set(seeds)) == 100 and round_seed(0, 3) == round_seed(0, 3)


@pytest.mark.slow
def test_campaign_flow_continues_caps_and_is_idempotent(tmp_path: Path, prefect_server_settings: str) -> None:
    from orchestration.flows import campaign_flow

    cfg = tmp_path / "flow.yaml"
    cfg.write_text(yaml.safe_dump({"name": "flowtest", **CONFIG, "campaign_dir": str(tmp_path / "run")}))
    first = campaign_flow(str(cfg), max_rounds=1)
    assert first["completed_rounds"] == 1 and first["status"] == "running" and first["oracle_results"] == 4
    expect = "campaign flowtest round 0: batch of 4 candidate(s) for oracle density"  # the matloop logger, INFO
    runs, messages = runs_and_logs("flowtest", expect=expect)
    assert sorted(r.name for r in runs) == ["flowtest", "flowtest-round-0"]  # not the config's path
    assert all({"matloop", "campaign:flowtest", "oracle:density", "target:density"} <= set(r.tags) for r in runs)
    assert any(expect in m for m in messages), messages
    assert any("campaign flowtest: round 0" in m for m in messages)  # the flow's run logger, INFO

    done = campaign_flow(str(cfg))
    # 10 calls at most: rounds of 4, 4 and then 2.
    assert done["completed_rounds"] == 3 and done["oracle_results"] == 10 and done["status"] == "completed"
    assert [r["batch"] for r in done["rounds"]] == [4, 4, 2]

    store = Store.open(f"sqlite:///{tmp_path / 'run' / 'store.db'}", create=False)
    try:
        attempts_before = store.job_attempts("flowtest")
        again = campaign_flow(str(cfg))  # nothing left to do
        assert again["oracle_results"] == 10 and store.job_attempts("flowtest") == attempts_before
        assert set(attempts_before.values()) == {1}
        keys = [(c.reduced_formula(), c.space_group) for c in store.crystals("flowtest")]
        assert len(keys) == len(set(keys))  # deduplicated across rounds
        for r in store.rounds("flowtest"):
            m = r.metrics
            assert 0 <= m["hit_rate"] <= 1 and m["n_unique"] <= m["n_sampled"] and 0 <= m["non_oracle_share"] <= 1
            assert m["batch_distinct_space_groups"] >= 1 and r.proxy_version == r.index + 1
            assert m["cumulative_sun"] <= m["cumulative_unique"] and "cumulative_zero_dimensional_hits" in m
        assert store.unlabelled("flowtest") == [] and len(store.sun_labels("flowtest")) == 10  # every result labelled
        assert done["sun"]["results"] == 10 and done["sun"]["unlabelled"] == 0
    finally:
        store.close()
    round_dir = tmp_path / "run" / "rounds" / "round-002"
    assert (round_dir / "batch.csv").read_text().count("\n") == 3  # header + 2 candidates
    assert "relaxed_space_group" in (round_dir / "batch.csv").read_text().splitlines()[0]
    assert {x["candidate_id"] for x in json.loads((round_dir / "sun.json").read_text())["labels"]} == set(
        Store.open(f"sqlite:///{tmp_path / 'run' / 'store.db'}", create=False).batch("flowtest", 2))
    assert {p.name for p in (round_dir / "plots").iterdir()} >= {"best_so_far.png", "density_by_round.png"}


@pytest.mark.slow
def test_dask_task_runner_gives_the_same_oracle_calls_as_threads(
    tmp_path: Path, prefect_server_settings: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``runner.kind: dask`` (a LocalCluster of 2 worker processes) fans the oracle tasks out to other
    processes, which open the store themselves; the batch and results equal the thread runner's."""
    from orchestration.flows import campaign_flow

    monkeypatch.setenv("PREFECT_API_URL", prefect_server_settings)  # the Dask workers report here too
    one_round = {**CONFIG, "rounds": 1, "stopping": {}}
    stores = {}
    for name, runner in (("threads", {"kind": "local", "max_workers": 2}),
                         ("dask", {"kind": "dask", "cluster": {"n_workers": 2, "threads_per_worker": 1}})):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({"name": name, **one_round, "runner": runner, "campaign_dir": str(tmp_path / name)}))
        assert campaign_flow(str(cfg))["completed_rounds"] == 1
        store = Store.open(f"sqlite:///{tmp_path / name / 'store.db'}", create=False)
        try:
            stores[name] = sorted((r.candidate_id, r.status, tuple(sorted(r.targets.items()))) for r in store.results(name))
        finally:
            store.close()
    assert len(stores["dask"]) == 4 and stores["dask"] == stores["threads"]


@pytest.mark.slow
def test_round_zero_fine_tunes_the_generator_checkpoint(tmp_path: Path, prefect_server_settings: str) -> None:
    from discovery.gfn import CrystalGFN, DensityReward, PolicyConfig, TrainConfig
    from orchestration.config import ConfigError, build_search_space
    from orchestration.config.schema import CampaignConfig
    from orchestration.flows import campaign_flow

    space = build_search_space(CampaignConfig.model_validate({"name": "ckpt", **CONFIG}))
    pre = CrystalGFN(space, seed=0, policy=PolicyConfig(hidden=32, layers=2), train=TrainConfig(batch_size=16))
    pre.train(DensityReward(), iterations=6)
    pre.save(tmp_path / "pretrained")

    gen = {**CONFIG["generator"], "checkpoint": str(tmp_path / "pretrained")}
    cfg = tmp_path / "ckpt.yaml"
    cfg.write_text(yaml.safe_dump({"name": "ckpt", **CONFIG, "generator": gen, "campaign_dir": str(tmp_path / "run")}))
    first = campaign_flow(str(cfg), max_rounds=1)
    assert first["completed_rounds"] == 1 and first["oracle_results"] == 4
    tuned = CrystalGFN.load(tmp_path / "run" / "models" / "generator" / "round-000")
    assert tuned.iterations_done == 6 + CONFIG["generator"]["iterations_first_round"]

    other = {**CONFIG["search_space"], "max_atoms": 6}
    cfg.write_text(yaml.safe_dump({"name": "ckpt2", **CONFIG, "search_space": other, "generator": gen,
                                   "campaign_dir": str(tmp_path / "run2")}))
    with pytest.raises(ConfigError, match=r"generator\.checkpoint"):
        campaign_flow(str(cfg), max_rounds=1)
