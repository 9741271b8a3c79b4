"""`matloop ui` picks the project's MLflow store and says which stores exist (real MLflow SQLite stores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.servers import pick_tracking_store, store_experiments, tracking_stores
from orchestration.tracking import Tracker


def _store(db: Path, *experiments: str) -> Path:
    db.parent.mkdir(parents=True, exist_ok=True)
    for name in experiments:
        tracker = Tracker(f"sqlite:///{db}", experiment=name, artifact_location=db.parent / "art")
        assert tracker.start_campaign(name.split("/")[-1]) is not None, tracker.failures
    return db


def test_ui_serves_the_shared_store_and_lists_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    uri, notes = pick_tracking_store(runs)
    assert uri is None and "no MLflow store found" in notes[0] and "empty store" in notes[0]

    old = _store(runs / "old" / "mlflow.db", "matloop/old")
    uri, notes = pick_tracking_store(runs)
    assert uri == f"sqlite:///{old.resolve()}" and "matloop/old" in notes[0] and len(notes) == 1

    shared = _store(runs / "mlflow.db", "matloop/a", "matloop/b")
    assert tracking_stores(runs) == [shared.resolve(), old.resolve()]
    assert store_experiments(shared) == ["matloop/a", "matloop/b"]
    uri, notes = pick_tracking_store(runs)
    assert uri == f"sqlite:///{shared.resolve()}"
    text = "\n".join(notes)
    assert "matloop/a, matloop/b" in text and "1 other MLflow store(s)" in text
    assert f"--tracking-uri sqlite:///{old.resolve()}" in text and "matloop/old" in text

    uri, notes = pick_tracking_store(runs, f"sqlite:///{old.resolve()}")  # --tracking-uri wins; the shared one is listed
    assert uri == f"sqlite:///{old.resolve()}" and f"sqlite:///{shared.resolve()}" in "\n".join(notes)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    uri, notes = pick_tracking_store(runs)
    assert uri == f"sqlite:///{shared.resolve()}" and "open that server's UI" in notes[0]
