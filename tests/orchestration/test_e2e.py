"""End to end against real servers on 127.0.0.1: a Prefect server, an MLflow server and PostgreSQL.

A 2-round campaign with the density oracle runs in-process (Prefect client pointed at the server);
then the flow runs, the MLflow runs/artifacts/registered models and the store are checked through
their own APIs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from orchestration.store import Store

NAME = "e2e-density"
CONFIG: dict = {
    "name": NAME,
    "seed": 4,
    "targets": [{"name": "density", "goal": "maximize"}],
    "search_space": {"elements": ["Li", "Na", "Mg", "O", "F", "Cl"], "max_elements": 3, "max_atoms_per_element": 4,
                     "max_atoms": 8, "space_groups": ["cubic", "tetragonal"], "length_range": [2.0, 10.0]},
    "seed_data": {"dataset": "mp20", "max_rows": 150},
    "proxy": {"members": 2, "hidden": 32, "layers": 2, "epochs": 5},
    "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 1.0},
    "generator": {"iterations_first_round": 5, "iterations_per_round": 3, "hyper": {"hidden": 32, "layers": 2, "batch_size": 16}},
    "candidates_per_round": 40,
    "batch_size": 4,
    "oracle": {"name": "density", "retries": 1, "retry_delay_s": 0},
    "rounds": 2,
    "success": {"metric": "density", "at_least": 1.5},
    "runner": {"kind": "local", "max_workers": 2},
}
ROUND_METRICS = {"proxy_mae_density", "proxy_calibration_scale_density", "gfn_loss", "gfn_log_z", "reward_log_mean",
                 "reward_log_max", "oracle_success_rate", "hit_rate", "best_so_far", "cumulative_unique_hits",
                 "batch_distinct_space_groups", "batch_distinct_elements", "batch_distinct_compositions",
                 "non_oracle_share", "t_oracle_s"}


async def _flow_runs(name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        return list(await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name]))))


async def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        return list(await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))))


@pytest.mark.slow
def test_two_rounds_against_real_prefect_mlflow_and_postgres(
    tmp_path: Path, prefect_server_settings: str, mlflow_server_uri: str, postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow import MlflowClient

    from orchestration.flows import campaign_flow

    monkeypatch.setenv("MATLOOP_STORE_URL", postgres_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_uri)
    cfg = tmp_path / "e2e.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "campaign_dir": str(tmp_path / "run")}))

    summary = campaign_flow(str(cfg))
    assert summary["completed_rounds"] == 2 and summary["status"] == "completed"

    # Prefect: one completed campaign run, two completed round subflows with the oracle tasks.
    campaigns = asyncio.run(_flow_runs("campaign"))
    rounds = [r for r in asyncio.run(_flow_runs("round")) if r.name.startswith(NAME)]
    assert any(r.state.is_completed() and r.parameters.get("config_path") == str(cfg) for r in campaigns)
    assert sorted(r.name for r in rounds) == [f"{NAME}-round-0", f"{NAME}-round-1"]
    assert all(r.state.is_completed() and r.parent_task_run_id is not None for r in rounds)
    for i in range(2):
        (art,) = asyncio.run(_artifacts(f"{NAME}-round-{i}"))
        assert "MLflow round run: [http" in art.data and "| id | formula |" in art.data

    # Store (PostgreSQL): every batch candidate has exactly one oracle result.
    store = Store.open(postgres_url, create=False)
    try:
        assert [r.state for r in store.rounds(NAME)] == ["completed", "completed"]
        batch = store.batch(NAME, 0) + store.batch(NAME, 1)
        results = store.results(NAME)
        assert len(batch) == 8 and sorted(r.candidate_id for r in results) == sorted(batch)
        assert store.pending(NAME) == [] and store.get_campaign(NAME).status == "completed"
        models = {(m, store.latest_model(NAME, m).version) for m in ("proxy", "generator")}  # type: ignore[union-attr]
        assert models == {("proxy", 2), ("generator", 2)}
    finally:
        store.close()

    # MLflow (server): parent run, two nested round runs with the metrics, artifacts, registered models.
    client = MlflowClient(tracking_uri=mlflow_server_uri, registry_uri=mlflow_server_uri)
    exp = client.get_experiment_by_name(f"matloop/{NAME}")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("matloop.kind") == "campaign"]
    nested = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                    key=lambda r: int(r.data.tags["matloop.round"]))
    assert [r.data.tags["matloop.round"] for r in nested] == ["0", "1"]
    assert parent.info.status == "FINISHED" and parent.data.params["search_space.max_atoms"] == "8"
    assert {"best_so_far", "cumulative_unique_hits", "hit_rate"} <= set(parent.data.metrics)
    for run in nested:
        assert set(run.data.metrics) >= ROUND_METRICS, ROUND_METRICS - set(run.data.metrics)
        assert run.info.status == "FINISHED"
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"batch.csv", "plots", "models"} <= top
        plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
        assert {"best_so_far.png", "density_by_round.png"} <= plots
    assert 0 <= nested[1].data.metrics["hit_rate"] <= 1
    # Both ways between Prefect and MLflow: runs carry their flow run's id, the round artifact links the round run.
    (campaign_run,) = [r for r in campaigns if r.parameters.get("config_path") == str(cfg)]
    assert parent.data.tags["prefect.flow_run_id"] == str(campaign_run.id)
    for run in nested:
        (round_run,) = [r for r in rounds if r.name == f"{NAME}-round-{run.data.tags['matloop.round']}"]
        assert run.data.tags["prefect.flow_run_id"] == str(round_run.id)
        (art,) = asyncio.run(_artifacts(f"{NAME}-round-{run.data.tags['matloop.round']}"))
        assert f"{mlflow_server_uri}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}?workflowType=" in art.data
    for kind in ("proxy", "generator"):
        name = f"matloop.{NAME}.{kind}"
        champion = client.get_model_version_by_alias(name, "champion")
        versions = [client.get_model_version_by_alias(name, f"round-{i}") for i in (0, 1)]
        assert versions[0].version != versions[1].version
        values = [float(v.tags["matloop.validation_metric.value"]) for v in versions]
        best = values.index(min(values) if kind == "proxy" else max(values))
        assert champion.version == versions[best].version or values[0] == values[1]
