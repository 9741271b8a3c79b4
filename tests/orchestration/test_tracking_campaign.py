"""A real two-round campaign (density oracle, SQLite store, MLflow in the project's shared SQLite store), its
steps run in-process without Prefect, then read back from MLflow as a user would: the experiment type, the
parent run's per-round metrics and hit table, the registered proxy and generator loaded with
``mlflow.pyfunc.load_model``, the ``champion`` alias and the round summary's link."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from discovery.crystal import read_crystal_table
from tests.orchestration.test_flows import CONFIG as FLOWS_CONFIG

# the shared tiny density campaign of test_flows, with 30 candidates, 2 rounds, no call cap and tracking on
CONFIG: dict[str, Any] = {**{k: v for k, v in FLOWS_CONFIG.items() if k not in ("stopping", "tracking")},
                          "name": "trackcamp", "seed": 5, "candidates_per_round": 30, "rounds": 2}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the campaign's two rounds once for the module; returns its config, campaign and round infos."""
    import os

    from orchestration.campaign import report, steps
    from orchestration.campaign.context import campaign_for, release
    from orchestration.store import code_version

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("project")
    path = root / "trackcamp.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "campaign_dir": str(root / "runs" / "trackcamp")}))
    camp = campaign_for(path)
    camp.tracker.start_campaign(camp.name, params=camp.config.science())
    infos = []
    for r in range(2):
        camp.store.start_round(camp.name, r, seed=camp.seed_for(r), code_version=code_version())
        camp.tracker.start_round(r)
        steps.fit_proxies(camp, r)
        steps.train_generator(camp, r)
        steps.sample_candidates(camp, r)
        batch = steps.select(camp, r)
        camp.store.advance_round(camp.name, r, "evaluating")
        for cid in batch:
            steps.evaluate_candidate(camp, r, cid)
        camp.store.advance_round(camp.name, r, "evaluating", metrics={"t_oracle_s": 0.25})
        infos.append(report.log_round(camp, r))
        camp.tracker.end_round()
        camp.store.advance_round(camp.name, r, "completed")
    camp.tracker.end_campaign()
    out = {"root": root, "config": camp.config, "uri": camp.tracker.uri, "parent": camp.tracker.parent_run_id,
           "experiment_id": camp.tracker.experiment_id, "infos": infos,
           "rounds": {x.index: x.metrics for x in camp.store.rounds(camp.name)},
           "batch_csv": camp.round_dir(1) / "batch.csv", "failures": list(camp.tracker.failures)}
    release(path)
    return out


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_shared_store_experiment_type_and_parent_run_metrics(campaign: dict[str, Any]) -> None:
    from orchestration.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    assert campaign["failures"] == []
    # One store next to the campaign directories, shared by the project's campaigns.
    assert campaign["uri"] == f"sqlite:///{campaign['root'] / 'runs' / 'mlflow.db'}"
    assert not (campaign["root"] / "runs" / "trackcamp" / "mlflow.db").exists()
    client = _client(campaign["uri"])
    exp = client.get_experiment(campaign["experiment_id"])
    assert exp.name == "matloop/trackcamp" and exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"

    parent = campaign["parent"]
    run = client.get_run(parent)
    assert run.data.tags["matloop.kind"] == "campaign"
    for key in ("cumulative_sun", "cumulative_unique_hits", "best_so_far", "proxy_error_batch", "oracle_calls_total",
                "oracle_calls_round", "t_round_steps_s", "hits_round", "proxy_error_batch_density"):
        history = client.get_metric_history(parent, key)
        assert sorted(m.step for m in history) == [0, 1], key
        for m in history:
            assert m.value == pytest.approx(campaign["rounds"][m.step][key]), (key, m.step)
    calls = {m.step: m.value for m in client.get_metric_history(parent, "oracle_calls_total")}
    assert calls == {0: 4.0, 1: 8.0}


def test_proxy_error_is_the_mae_of_the_pre_labelling_prediction(campaign: dict[str, Any]) -> None:
    rows = read_crystal_table(campaign["batch_csv"])
    errors = [abs(float(c.extra["pred_density_mean"]) - float(c.extra["density"])) for c in rows  # type: ignore[arg-type]
              if c.extra["status"] == "ok"]
    assert len(errors) == 4
    assert campaign["rounds"][1]["proxy_error_batch"] == pytest.approx(sum(errors) / len(errors), rel=1e-4)


def test_campaign_hit_table_lists_every_hit_with_its_round_run(campaign: dict[str, Any]) -> None:
    client = _client(campaign["uri"])
    parent = campaign["parent"]
    assert "hits.json" in {a.path for a in client.list_artifacts(parent)}
    table = pd.read_json(client.download_artifacts(parent, "hits.json", str(campaign["root"])), orient="split")
    hits = sum(int(campaign["rounds"][r]["hits_round"]) for r in (0, 1))
    assert hits > 0 and len(table) == hits and table["id"].is_unique
    assert set(table["round"]) <= {0, 1} and set(table["round_run_id"]) <= {i["run_id"] for i in campaign["infos"]}
    assert (table["density"] >= 1.0).all()


def test_registered_proxy_loads_with_pyfunc_and_predicts_on_a_crystal_table(campaign: dict[str, Any]) -> None:
    import mlflow

    mlflow.set_tracking_uri(campaign["uri"])
    mlflow.set_registry_uri(campaign["uri"])
    proxy = mlflow.pyfunc.load_model("models:/matloop.trackcamp.proxy@champion")
    table = pd.read_csv(campaign["batch_csv"])
    pred = proxy.predict(table)
    assert list(pred.columns) == ["id", "density_mean", "density_std"] and len(pred) == len(table)
    assert list(pred["id"]) == list(table["id"].astype(str))
    assert all(math.isfinite(v) and v > 0 for v in pred["density_std"])
    # The same numbers as the prediction the campaign stored for the batch (round 1's proxy).
    r1 = mlflow.pyfunc.load_model("models:/matloop.trackcamp.proxy@round-1").predict(table)
    assert r1["density_mean"].to_numpy() == pytest.approx(table["pred_density_mean"].to_numpy(), rel=1e-4, abs=1e-4)

    generator = mlflow.pyfunc.load_model("models:/matloop.trackcamp.generator@round-1")
    sampled = generator.predict(pd.DataFrame({"n": [3, 2], "seed": [0, 1]}))
    assert len(sampled) == 5 and list(sampled["request"]) == [0, 0, 0, 1, 1]
    assert len(read_crystal_table_frame(sampled)) == 5


def read_crystal_table_frame(frame: pd.DataFrame) -> list[Any]:
    from discovery.crystal import crystals_from_frame

    return crystals_from_frame(frame, source="generator output")


def test_champion_is_the_version_with_the_best_validation_metric(campaign: dict[str, Any]) -> None:
    from orchestration.tracking import METRIC_TAG

    client = _client(campaign["uri"])
    for kind, goal in (("proxy", min), ("generator", max)):
        versions = client.search_model_versions(f"name = 'matloop.trackcamp.{kind}'")
        assert len(versions) == 2
        scored = {mv.version: float(mv.tags[f"{METRIC_TAG}.value"]) for mv in versions}
        best = goal(scored.values())
        champion = client.get_model_version_by_alias(f"matloop.trackcamp.{kind}", "champion")
        assert scored[champion.version] == best
        metric = "proxy_mae_density" if kind == "proxy" else "hit_rate"
        assert {mv.tags[METRIC_TAG] for mv in versions} == {metric}
        for mv in versions:
            assert float(mv.tags[f"{METRIC_TAG}.value"]) == pytest.approx(campaign["rounds"][int(mv.tags["matloop.round"])][metric])


def test_round_summary_links_the_mlflow_runs_instead_of_a_store_path(campaign: dict[str, Any]) -> None:
    info = campaign["infos"][1]
    md = info["markdown"]
    assert info["run_id"] in md and campaign["parent"] in md
    url = f"http://127.0.0.1:5000/#/experiments/{campaign['experiment_id']}/runs/{info['run_id']}?workflowType=machine_learning"
    assert f"MLflow round run: [{url}]({url})" in md and "matloop ui" in md
    assert "proxy_error_batch" in md


def test_champion_moves_only_to_a_better_version(tmp_path: Path) -> None:
    from orchestration.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="matloop/champ",
                      artifact_location=tmp_path / "art")
    tracker.start_campaign("champ")
    model = tmp_path / "proxy"
    model.mkdir()
    (model / "weights.pt").write_bytes(b"\0")
    name = "matloop.champ.proxy"
    for r, mae in enumerate((0.3, 0.1, 0.2)):
        tracker.start_round(r)
        assert tracker.log_model("proxy", model, round_index=r, metric=("proxy_mae_x", mae, "min")) == f"models:/{name}/{r + 1}"
        tracker.end_round()
        assert str(tracker.client.get_model_version_by_alias(name, "champion").version) == str(min(r + 1, 2))
    assert tracker.failures == []
