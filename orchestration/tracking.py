"""MLflow tracking for campaigns: one experiment per campaign, a parent run per campaign, a nested
run per round, params from the config, metrics, artifacts, and models registered with aliases.

Every public method of :class:`Tracker` is guarded: an MLflow failure (server down, bad URI,
filesystem error) is logged as a warning, counted in ``Tracker.failures`` and returns ``None``;
after ``max_failures`` consecutive failures the tracker goes offline for the rest of the process
so that a dead server does not slow every later round. Nothing here ever stops a round.

Resuming: ``start_campaign`` finds the parent run by its tags (``matloop.campaign``,
``matloop.kind=campaign``) and ``start_round`` the nested run by ``matloop.round``, so a resumed
campaign keeps logging into the same runs. The explicit ``MlflowClient`` is used throughout (no
global active run), which keeps this safe to call from Prefect task threads.

The experiment is tagged ``mlflow.experimentKind = custom_model_development`` so that MLflow's UI
opens it in the runs / model-training view (not the GenAI traces view). Runs started inside a Prefect
flow run carry its id (``prefect.flow_run_id``, and ``prefect.flow_run_url`` when Prefect knows its
UI URL). Models are logged as MLflow ``pyfunc`` models (:mod:`orchestration.tracking_models`); the
``champion`` alias goes to the registered version with the best validation metric.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from orchestration.urls import mask_url, redact

if TYPE_CHECKING:
    from orchestration.config import CampaignConfig

log = logging.getLogger("matloop.tracking")

P = ParamSpec("P")
R = TypeVar("R")
RunKind = Literal["round", "campaign"]
RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
ModelKind = Literal["proxy", "generator"]
ValidationMetric = tuple[str, float, Literal["min", "max"]]
"""(metric name, value, goal): how a model version is ranked for the ``champion`` alias."""
MAX_PARAM_CHARS = 6000
ALIAS_CURRENT = "champion"
LOCAL_UI_URL = "http://127.0.0.1:5000"
"""Where ``matloop ui`` serves MLflow by default (``--mlflow-port``)."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # read by MLflow 3.x's UI to pick the experiment's view
EXPERIMENT_KIND = "custom_model_development"  # runs, charts and models (not "genai_development": traces)
ML_VIEW = "?workflowType=machine_learning"
"""Query of UI links: MLflow 3.17's UI picks GenAI or model training from this (or from the browser's last choice,
GenAI at first) and no longer from the experiment's kind tag, so every link matloop prints carries it."""
METRIC_TAG = "matloop.validation_metric"
"""Model-version tags: ``<METRIC_TAG>`` names the metric, ``<METRIC_TAG>.value`` and ``.goal`` hold it."""


def prefect_tags() -> dict[str, str]:
    """Tags naming the Prefect flow run this code runs in (empty outside a flow run)."""
    if "prefect" not in sys.modules:  # never imported: not inside a flow run, and no import cost
        return {}
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
        if not run_id:
            return {}
        tags = {"prefect.flow_run_id": str(run_id)}
        url = flow_run.ui_url
        if url:
            tags["prefect.flow_run_url"] = str(url)
        return tags
    except Exception as exc:  # a missing context or API must not stop tracking
        log.debug("no Prefect flow-run tags: %s", exc)
        return {}


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config data → ``{"search_space.max_atoms": "12", ...}`` (lists as JSON-ish text)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            text = str(list(value) if isinstance(value, tuple) else value)
            out[name] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return out


def _guarded(default: Any = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            self = args[0]
            assert isinstance(self, Tracker)
            if not self.active:
                return default  # type: ignore[no-any-return]
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                self._failed(fn.__name__, exc)
                return default  # type: ignore[no-any-return]
            self._consecutive = 0
            return result

        return inner

    return wrap


class Tracker:
    """Tracking adapter for one campaign; see the module docstring for the failure policy."""

    def __init__(
        self,
        uri: str,
        *,
        experiment: str,
        artifact_location: str | Path | None = None,
        enabled: bool = True,
        max_failures: int = 3,
        register_models: bool = True,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.enabled = enabled
        self.register_models = register_models
        self.max_failures = max_failures
        self.failures: list[str] = []
        self.offline = False
        self._consecutive = 0
        self._client: Any = None
        self.experiment_id: str | None = None
        self.campaign: str | None = None
        self.parent_run_id: str | None = None
        self.round_run_id: str | None = None
        if uri.startswith(("http://", "https://")):
            # Fail fast against a dead server instead of MLflow's default minutes of retries.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    @classmethod
    def for_config(cls, config: CampaignConfig) -> Tracker:
        """The tracker a campaign config asks for; with a local (sqlite/file) URI the artifacts go to
        ``<campaign dir>/mlartifacts`` instead of ``./mlruns`` in whatever the working directory is."""
        uri = config.resolved_tracking_uri()
        local = not uri.startswith(("http://", "https://", "databricks"))
        return cls(
            uri,
            experiment=config.experiment_name(),
            artifact_location=config.resolved_dir() / "mlartifacts" if local else None,
            enabled=config.tracking.enabled,
            register_models=config.tracking.register_models,
        )

    @property
    def active(self) -> bool:
        return self.enabled and not self.offline

    def _failed(self, what: str, exc: BaseException) -> None:
        text = redact(f"{what}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                      self.uri)
        self.failures.append(text)
        self._consecutive += 1
        log.warning("MLflow tracking failed (%s); the round goes on without it", text)
        if self._consecutive >= self.max_failures and not self.offline:
            self.offline = True
            log.warning("MLflow tracking at %s failed %d times in a row; tracking is off for this run", mask_url(self.uri),
                        self._consecutive)

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    # -- runs -------------------------------------------------------------------------------------
    @_guarded()
    def start_campaign(self, campaign: str, *, params: Mapping[str, Any] | None = None,
                       tags: Mapping[str, str] | None = None) -> str | None:
        """Create (or find, when resuming) the experiment and the campaign's parent run; returns its id."""
        self.campaign = campaign
        self.experiment_id = self._experiment_id()
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`matloop.campaign` = '{_quote(campaign)}' and tags.`matloop.kind` = 'campaign'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            for k, v in {**(tags or {}), **prefect_tags()}.items():
                self.client.set_tag(run_id, k, str(v))
        else:
            all_tags = {"matloop.campaign": campaign, "matloop.kind": "campaign", **(tags or {}), **prefect_tags()}
            run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=campaign).info.run_id
        self.parent_run_id = run_id
        if params:
            self._log_params(run_id, flatten_params(params))
        return str(run_id)

    @_guarded()
    def start_round(self, index: int, *, params: Mapping[str, Any] | None = None) -> str | None:
        """Create (or find) the nested run of round ``index``; returns its id."""
        if self.parent_run_id is None or self.experiment_id is None:
            raise RuntimeError("start_campaign has not succeeded")
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.`matloop.round` = '{int(index)}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            for k, v in prefect_tags().items():
                self.client.set_tag(run_id, k, v)
        else:
            tags = {"mlflow.parentRunId": self.parent_run_id, "matloop.campaign": self.campaign or "",
                    "matloop.kind": "round", "matloop.round": str(int(index)), **prefect_tags()}
            run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=f"round-{index}").info.run_id
        self.round_run_id = run_id
        if params:
            self._log_params(run_id, flatten_params(params))
        return str(run_id)

    @_guarded()
    def end_round(self, status: RunStatus = "FINISHED") -> None:
        if self.round_run_id is not None:
            self.client.set_terminated(self.round_run_id, status=status)
        self.round_run_id = None

    @_guarded()
    def end_campaign(self, status: RunStatus = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)

    # -- logging ----------------------------------------------------------------------------------
    @_guarded()
    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None, run: RunKind = "round") -> int | None:
        """Log finite numeric metrics; returns how many were logged (non-finite values are skipped)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if _finite(v)]
        run_id = self._run(run)
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i : i + 1000])
        return len(items)

    @_guarded()
    def log_params(self, params: Mapping[str, Any], *, run: RunKind = "round") -> None:
        self._log_params(self._run(run), flatten_params(params))

    @_guarded()
    def set_tags(self, tags: Mapping[str, str], *, run: RunKind = "round") -> None:
        run_id = self._run(run)
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    @_guarded()
    def log_artifact(self, path: str | Path, *, artifact_path: str | None = None, run: RunKind = "round") -> str | None:
        """Upload a file or a directory; returns the artifact URI."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"artifact {p} does not exist")
        run_id = self._run(run)
        if p.is_dir():
            self.client.log_artifacts(run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(run_id, str(p), artifact_path)
        base = self.client.get_run(run_id).info.artifact_uri
        return f"{base}/{artifact_path + '/' if artifact_path else ''}{p.name}"

    @_guarded()
    def log_model(self, kind: ModelKind, model_dir: str | Path, *, round_index: int, run: RunKind = "round",
                  metric: ValidationMetric | None = None) -> str | None:
        """Log a saved campaign model directory as an MLflow ``pyfunc`` model (artifact path
        ``models/<kind>``) and register it as ``matloop.<campaign>.<kind>``.

        The version gets the alias ``round-<round_index>`` and, as tags, its validation ``metric``
        (name, value, goal); ``champion`` then points at the version with the best metric (versions
        without one count only when none has one: then the latest). Returns
        ``models:/<name>/<version>``, or the artifact URI when registration is off.
        """
        from orchestration.tracking_models import save_pyfunc

        p = Path(model_dir)
        if not p.is_dir():
            raise FileNotFoundError(f"model directory {p} does not exist")
        run_id = self._run(run)
        artifact_path = f"models/{kind}"
        with tempfile.TemporaryDirectory(prefix="matloop-pyfunc-") as tmp:
            self.client.log_artifacts(run_id, str(save_pyfunc(kind, p, Path(tmp) / kind)), artifact_path)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        if not self.register_models:
            return source
        from mlflow.exceptions import MlflowException

        name = self.model_name(kind)
        try:
            self.client.create_registered_model(name, tags={"matloop.campaign": self.campaign or "", "matloop.kind": kind})
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        tags = {"matloop.round": str(round_index)}
        if metric is not None:
            tags.update({METRIC_TAG: metric[0], f"{METRIC_TAG}.value": repr(float(metric[1])),
                         f"{METRIC_TAG}.goal": metric[2]})
        version = self._existing_version(name, f"round-{round_index}")
        if version is None:
            version = str(self.client.create_model_version(name, source=source, run_id=run_id, tags=tags).version)
        else:
            for k, v in tags.items():
                self.client.set_model_version_tag(name, version, k, v)
        self.client.set_registered_model_alias(name, f"round-{round_index}", version)
        self.client.set_registered_model_alias(name, ALIAS_CURRENT, self.champion(name) or version)
        return f"models:/{name}/{version}"

    def champion(self, name: str) -> str | None:
        """The version of registered model ``name`` with the best validation metric (see :meth:`log_model`)."""
        versions = self.client.search_model_versions(f"name = '{_quote(name)}'")
        scored: list[tuple[float, int]] = []
        for mv in versions:
            value, goal = mv.tags.get(f"{METRIC_TAG}.value"), mv.tags.get(f"{METRIC_TAG}.goal")
            if value is not None and _finite(value):
                scored.append((float(value) if goal == "max" else -float(value), int(mv.version)))
        if scored:
            return str(max(scored)[1])  # ties: the later version
        return str(max(int(mv.version) for mv in versions)) if versions else None

    @_guarded()
    def log_table(self, table: Any, artifact_file: str, *, key: str = "id", run: RunKind = "campaign") -> int | None:
        """Append the rows of DataFrame ``table`` whose ``key`` is not yet in the run's table
        ``artifact_file`` (an MLflow table, shown in the UI's artifact view); returns how many were added."""
        run_id = self._run(run)
        folder = os.path.dirname(artifact_file) or None
        if artifact_file in {f.path for f in self.client.list_artifacts(run_id, folder)}:
            import pandas as pd

            with tempfile.TemporaryDirectory() as tmp:
                existing = pd.read_json(self.client.download_artifacts(run_id, artifact_file, tmp), orient="split")
            if key in existing.columns:
                table = table[~table[key].astype(str).isin(set(existing[key].astype(str)))]
        if len(table) == 0:
            return 0
        self.client.log_table(run_id, data=table, artifact_file=artifact_file)
        return len(table)

    def artifact_uri(self, run: RunKind = "round") -> str | None:
        """The artifact root of the round (or campaign) run, or None when there is none."""
        if not self.active:
            return None
        try:
            return str(self.client.get_run(self._run(run)).info.artifact_uri)
        except Exception:
            return None

    def model_name(self, kind: str) -> str:
        return f"matloop.{self.campaign}.{kind}"

    def run_link(self, run_id: str | None = None) -> str | None:
        """Where to see a run: its URL with a tracking server; with a local SQLite store, the URL it has in
        ``matloop ui`` (which serves the project's store on :data:`LOCAL_UI_URL`) and the run id and store;
        else the run id and the ``mlflow ui`` command that opens its store."""
        rid = run_id or self.round_run_id or self.parent_run_id
        if rid is None:
            return None
        url = self.run_url(rid)
        if url:
            return url
        where = mask_url(self.uri)
        if where.startswith("sqlite:") and self.experiment_id is not None:
            return (f"{LOCAL_UI_URL}/#/experiments/{self.experiment_id}/runs/{rid}{ML_VIEW} (run {rid}; start the UI with "
                    f"`matloop ui`, which serves {where.removeprefix('sqlite:///')} or lists it)")
        return f"run {rid} of experiment {self.experiment} (open with `mlflow ui --backend-store-uri {where}`)"

    def run_url(self, run_id: str | None = None) -> str | None:
        """A link to the run in the MLflow UI (only for http(s) tracking URIs)."""
        rid = run_id or self.round_run_id or self.parent_run_id
        if rid is None or self.experiment_id is None or not self.uri.startswith(("http://", "https://")):
            return None
        return f"{mask_url(self.uri).rstrip('/')}/#/experiments/{self.experiment_id}/runs/{rid}{ML_VIEW}"

    # -- internals --------------------------------------------------------------------------------
    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # experiments made before the tag, too
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return str(exp.experiment_id)
        location = self.artifact_location
        if location is not None and not str(location).startswith(("file:", "s3:", "gs:", "mlflow-artifacts:", "http")):
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).resolve().as_uri()
        return str(self.client.create_experiment(self.experiment, artifact_location=location,
                                                 tags={"matloop.campaign": self.campaign or "",
                                                       EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}))

    def _existing_version(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def _run(self, run: RunKind) -> str:
        run_id = self.round_run_id if run == "round" else self.parent_run_id
        if run_id is None:
            raise RuntimeError(f"no active {run} run (start_campaign/start_round did not succeed)")
        return run_id

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        todo = [Param(k, v) for k, v in params.items() if k not in existing]  # params are write-once
        for i in range(0, len(todo), 100):
            self.client.log_batch(run_id, params=todo[i : i + 100])


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _finite(v: object) -> bool:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))
