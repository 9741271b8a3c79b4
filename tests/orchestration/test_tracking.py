"""MLflow tracking against a local SQLite URI and a real `mlflow server`; failures never raise."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from orchestration.servers import free_port
from orchestration.tracking import Tracker, flatten_params

CONFIG = {"name": "camp", "seed": 3, "search_space": {"elements": ["Na", "Cl"], "max_atoms": 12}, "acquisition": {}}


def _campaign(tracker: Tracker, tmp_path: Path) -> tuple[str, str]:
    parent = tracker.start_campaign("camp", params=CONFIG, tags={"matloop.config_hash": "abc"})
    assert parent is not None
    round0 = tracker.start_round(0, params={"round.seed": 11})
    assert round0 is not None
    assert tracker.log_metrics({"hit_rate": 0.5, "proxy_mae": 0.12, "skipped": float("nan")}) == 2
    tracker.log_metrics({"best_so_far": -1.5}, step=0, run="campaign")
    table = tmp_path / "batch.csv"
    table.write_text("id,space_group\nc0,225\n")
    assert tracker.log_artifact(table, artifact_path="batch") is not None
    model = tmp_path / "proxy"
    model.mkdir()
    (model / "weights.pt").write_bytes(b"\0" * 16)
    assert tracker.log_model("proxy", model, round_index=0) == "models:/matloop.camp.proxy/1"
    tracker.end_round()
    return parent, round0


def _check_and_resume(uri: str, tmp_path: Path, artifact_location: Path | None) -> None:
    from mlflow import MlflowClient

    tracker = Tracker(uri, experiment="matloop/camp", artifact_location=artifact_location)
    parent, round0 = _campaign(tracker, tmp_path)
    assert tracker.failures == []

    # A new process resumes: same parent run, same round run, next round gets a new nested run.
    again = Tracker(uri, experiment="matloop/camp", artifact_location=artifact_location)
    assert again.start_campaign("camp", params=CONFIG) == parent
    assert again.start_round(0) == round0
    again.end_round()
    round1 = again.start_round(1)
    assert round1 not in (None, round0)
    again.log_metrics({"hit_rate": 1.0})
    model = tmp_path / "proxy"
    assert again.log_model("proxy", model, round_index=1) == "models:/matloop.camp.proxy/2"
    assert again.log_model("proxy", model, round_index=1) == "models:/matloop.camp.proxy/2"  # replay: no new version
    again.end_round()
    again.end_campaign()
    assert again.failures == []

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("matloop/camp")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3
    top = client.get_run(parent)
    assert top.data.params["search_space.max_atoms"] == "12" and top.data.params["search_space.elements"] == "['Na', 'Cl']"
    assert top.data.tags["matloop.config_hash"] == "abc" and top.data.metrics["best_so_far"] == -1.5
    assert top.info.status == "FINISHED"
    r0 = client.get_run(round0)
    assert r0.data.tags["mlflow.parentRunId"] == parent and r0.data.metrics == {"hit_rate": 0.5, "proxy_mae": 0.12}
    assert r0.data.params["round.seed"] == "11"
    assert {a.path for a in client.list_artifacts(round0)} == {"batch", "models"}
    assert [a.path for a in client.list_artifacts(round0, "batch")] == ["batch/batch.csv"]
    assert str(client.get_model_version_by_alias("matloop.camp.proxy", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("matloop.camp.proxy", "round-0").version) == "1"
    assert client.get_model_version_by_alias("matloop.camp.proxy", "round-1").run_id == round1


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One local MLflow database for the module (creating its tables takes a few seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_local_sqlite_tracking_and_resume(sqlite_uri: str, tmp_path: Path) -> None:
    _check_and_resume(sqlite_uri, tmp_path, tmp_path / "artifacts")
    assert any((tmp_path / "artifacts").rglob("batch.csv")), "artifacts land under the given artifact_location"


@pytest.mark.slow
def test_mlflow_server_tracking_and_resume(mlflow_server_uri: str, tmp_path: Path) -> None:
    _check_and_resume(mlflow_server_uri, tmp_path, None)
    tracker = Tracker(mlflow_server_uri, experiment="matloop/camp")
    tracker.start_campaign("camp")
    url = tracker.run_url()
    assert url is not None and url.startswith(mlflow_server_uri)


def test_unreachable_server_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    tracker = Tracker(uri, experiment="matloop/x", max_failures=2)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="matloop.tracking"):
        assert tracker.start_campaign("x", params=CONFIG) is None
        assert tracker.start_round(0) is None
        assert tracker.log_metrics({"a": 1.0}) is None
        assert tracker.log_artifact(tmp_path) is None
        tracker.end_round()
        tracker.end_campaign()
    assert time.monotonic() - start < 60
    assert tracker.offline and len(tracker.failures) == 2  # then offline: no more calls, no more waiting
    assert "the round goes on without it" in caplog.text and "tracking is off" in caplog.text


def test_bad_calls_on_a_working_tracker_only_warn(sqlite_uri: str, tmp_path: Path) -> None:
    tracker = Tracker(sqlite_uri, experiment="bad-calls", artifact_location=tmp_path / "art")
    assert tracker.log_metrics({"a": 1.0}) is None  # no run yet
    assert tracker.start_campaign("c") is not None
    assert tracker.log_artifact(tmp_path / "missing.csv", run="campaign") is None
    assert tracker.log_model("proxy", tmp_path / "missing", round_index=0, run="campaign") is None
    assert len(tracker.failures) == 3 and not tracker.offline  # a success in between resets the count
    disabled = Tracker("sqlite:///nowhere.db", experiment="e", enabled=False)
    assert disabled.start_campaign("c") is None and disabled.failures == []


def test_flatten_params() -> None:
    flat = flatten_params({"a": {"b": 1, "c": (1, 2)}, "d": "x" * 7000, "e": {}})
    assert flat["a.b"] == "1" and flat["a.c"] == "[1, 2]" and len(flat["d"]) == 6000 and flat["e"] == "{}"


def test_tracker_for_config_keeps_artifacts_in_campaign_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.config import parse_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = parse_config({"name": "cfg", "targets": [{"name": "density", "goal": "maximize"}],
                        "search_space": {"elements": ["Na", "Cl"]}, "seed_data": {"dataset": "mp20"},
                        "candidates_per_round": 4, "batch_size": 2, "oracle": {"name": "density"}, "rounds": 1,
                        "campaign_dir": str(tmp_path / "camp")})
    tracker = Tracker.for_config(cfg)
    # By default one store for the project, next to the campaign directories; artifacts stay in the campaign's.
    assert tracker.uri == f"sqlite:///{tmp_path / 'mlflow.db'}" and tracker.experiment == "matloop/cfg"
    assert tracker.artifact_location == tmp_path / "camp" / "mlartifacts"
    own = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"shared": False})})
    assert Tracker.for_config(own).uri == f"sqlite:///{tmp_path / 'camp' / 'mlflow.db'}"
    (tmp_path / "camp").mkdir()
    (tmp_path / "camp" / "mlflow.db").touch()  # a campaign made before the shared store keeps its own
    assert Tracker.for_config(cfg).uri == f"sqlite:///{tmp_path / 'camp' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert Tracker.for_config(cfg).uri == "http://127.0.0.1:5999"
    remote = Tracker.for_config(cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": "http://127.0.0.1:5000"})}))
    assert remote.artifact_location is None


def test_experiment_is_typed_for_model_development_also_when_it_existed(sqlite_uri: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from orchestration.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    client = MlflowClient(tracking_uri=sqlite_uri)
    old = client.create_experiment("matloop/before-the-tag", artifact_location=(tmp_path / "a").as_uri())
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    tracker = Tracker(sqlite_uri, experiment="matloop/before-the-tag")
    assert tracker.start_campaign("before-the-tag") is not None and tracker.experiment_id == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert not any(k.startswith("prefect.") for k in client.get_run(tracker.parent_run_id).data.tags)  # no flow run
    link = tracker.run_link()
    assert link is not None and "matloop ui" in link
    assert link.startswith(f"http://127.0.0.1:5000/#/experiments/{old}/runs/{tracker.parent_run_id}"
                           "?workflowType=machine_learning ")  # the model-training view, not GenAI


@pytest.mark.slow
def test_runs_inside_a_flow_record_the_prefect_flow_run(sqlite_uri: str, tmp_path: Path, prefect_server_settings: str) -> None:
    from mlflow import MlflowClient
    from prefect import flow
    from prefect.runtime import flow_run

    @flow(name="tracking-link")
    def tracked() -> tuple[str, str | None, str | None]:
        tracker = Tracker(sqlite_uri, experiment="matloop/linked", artifact_location=tmp_path / "art")
        parent = tracker.start_campaign("linked")
        round0 = tracker.start_round(0)
        assert tracker.failures == []
        return str(flow_run.id), parent, round0

    flow_run_id, parent, round0 = tracked()
    client = MlflowClient(tracking_uri=sqlite_uri)
    for run_id in (parent, round0):
        assert run_id is not None and client.get_run(run_id).data.tags["prefect.flow_run_id"] == flow_run_id
