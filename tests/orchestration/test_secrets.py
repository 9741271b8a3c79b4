"""Secrets in store and tracking URLs (issue 14, defect 4): every form is found by the config check, left
out of the snapshot, and masked in every printed URL and connection error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestration.config import ConfigError, parse_config
from orchestration.store import Store, StoreError
from orchestration.urls import mask_url, redact, url_secret

SECRET = "hunter2"

WITH_SECRETS = [
    f"postgresql://alice:{SECRET}@db.example/campaigns",
    f"postgresql://alice:{SECRET}/x@db.example/campaigns",           # a `/` in the password
    f"postgresql://alice:{SECRET}%2Fx@db.example/campaigns",         # escaped
    f"postgresql://alice:p@{SECRET}@db.example/campaigns",           # an unescaped `@`
    f"postgresql://alice:{SECRET}?x@db.example/campaigns",           # a `?`
    f"postgresql://:{SECRET}@db.example/campaigns",                  # no user
    f"postgresql://alice@db.example/campaigns?password={SECRET}",    # a query parameter
    f"postgresql:///campaigns?host=/tmp&password={SECRET}",
    f"postgresql://alice@db.example/campaigns?sslmode=require&sslpassword={SECRET}",
    f"postgresql+psycopg2://alice@db.example/campaigns?PassWord={SECRET}",
    f"http://alice:{SECRET}@mlflow.example:5000",
    f"https://mlflow.example/?token={SECRET}",
    f"https://mlflow.example/?api_key={SECRET}&x=1",
]
WITHOUT = [
    "sqlite:////tmp/runs/x/store.db",
    "sqlite:///runs/x/store.db?mode=ro",
    "postgresql://alice@127.0.0.1:5432/campaigns",
    "postgresql:///campaigns?host=/tmp/pg",
    "http://127.0.0.1:5000",
    "databricks",
]


@pytest.mark.parametrize("url", WITH_SECRETS)
def test_every_form_of_secret_is_found_and_masked(url: str) -> None:
    assert url_secret(url) is not None
    masked = mask_url(url)
    assert SECRET not in masked and "***" in masked
    assert SECRET not in redact(f"could not connect to {url}: rejected", url)


@pytest.mark.parametrize("url", WITHOUT)
def test_urls_without_secrets_are_unchanged(url: str) -> None:
    assert url_secret(url) is None and mask_url(url) == url


def _config(**over: object) -> dict:
    data: dict = {"name": "t", "targets": [{"name": "density"}], "search_space": {"elements": ["Na", "Cl"]},
                  "seed_data": {"dataset": "mp20"}, "candidates_per_round": 10, "batch_size": 2,
                  "oracle": {"name": "density"}, "rounds": 1}
    data.update(over)
    return data


@pytest.mark.parametrize("url", WITH_SECRETS)
def test_a_config_with_a_secret_in_a_url_is_rejected_without_printing_it(url: str) -> None:
    key = "tracking" if url.startswith("http") else "store_url"
    data = _config(**({"tracking": {"uri": url}} if key == "tracking" else {"store_url": url}))
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="c.yaml")
    msg = str(info.value)
    assert ("store_url contains" in msg or "tracking.uri contains" in msg) and "environment" in msg
    assert SECRET not in msg


def test_a_secret_from_the_environment_is_not_written_to_the_snapshot(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.campaign.status import write_snapshot

    monkeypatch.setenv("MATLOOP_STORE_URL", f"postgresql://alice@db.example/campaigns?password={SECRET}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}/x@mlflow.example:5000")
    cfg = parse_config(_config(campaign_dir=str(tmp_path / "c")))
    text = write_snapshot(cfg).read_text()
    assert SECRET not in text
    data = yaml.safe_load(text)
    assert "store_url" not in data and "uri" not in data.get("tracking", {})


def test_connection_errors_and_the_run_summary_mask_the_url(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for url in (f"postgresql://alice:{SECRET}/x@127.0.0.1:1/campaigns",
                f"postgresql://alice@127.0.0.1:1/campaigns?password={SECRET}",
                f"notadb://alice:{SECRET}@h/x", f"not a url {SECRET}://"):
        with pytest.raises(StoreError) as info:
            Store.open(url, connect_timeout_s=2)
        assert SECRET not in str(info.value), str(info.value)

    from orchestration.cli_campaign import _where

    monkeypatch.setenv("MATLOOP_STORE_URL", f"postgresql://alice@127.0.0.1:1/campaigns?sslpassword={SECRET}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:5000")
    cfg = parse_config(_config(campaign_dir=str(tmp_path / "c")))
    _where(cfg, {"completed_rounds": 1, "oracle_results": 2, "status": "completed"})
    out = capsys.readouterr().out
    assert "store:" in out and "MLflow:" in out and SECRET not in out and "***" in out


def test_tracking_disabled_prints_no_mlflow_uri(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from orchestration.cli_campaign import _where

    cfg = parse_config(_config(campaign_dir=str(tmp_path / "c"), tracking={"enabled": False}))
    _where(cfg, {"completed_rounds": 1, "oracle_results": 2, "status": "completed"})
    out = capsys.readouterr().out
    assert "mlflow.db" not in out and "MLflow:   off" in out
