"""Schema migrations (Alembic) of the campaign store: a store made by the previous schema (before
migrations: no alembic_version, no campaign_locks) is migrated by the next writer and the campaign resumes;
readers never migrate; a store of a newer matloop is refused. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import inspect, text

from orchestration.store import Store, StoreError, migrations
from orchestration.store.locks import CampaignLock


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _to_previous_schema(url: str) -> None:
    """What the release before migrations left: the baseline tables only and no alembic_version."""
    with Store.open(url) as s:
        migrations.downgrade(s.engine, migrations.BASELINE)
        with s.engine.begin() as conn:
            conn.execute(text("DROP TABLE alembic_version"))


def _tables(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_a_store_of_the_previous_schema_is_migrated_by_the_next_writer(url: str) -> None:
    with Store.open(url) as s:
        s.create_campaign("old", config={"x": 1}, config_hash="h", seed=3, code_version="t")
        s.start_round("old", 0, seed=3, code_version="t")
    _to_previous_schema(url)
    with Store.open(url, create=False) as reader:  # readers read it as it is and change nothing
        assert reader.campaigns() == ["old"]
        assert "campaign_locks" not in _tables(reader) and "alembic_version" not in _tables(reader)
    with Store.open(url) as writer:
        assert {"campaign_locks", "alembic_version"} <= _tables(writer)
        with writer.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
        assert writer.campaigns() == ["old"] and [r.index for r in writer.rounds("old")] == [0]
        with CampaignLock(writer, "old"):
            pass
    with Store.open(url) as again, again.engine.connect() as conn:  # idempotent
        assert migrations.current(conn) == migrations.head()


def test_a_store_of_a_newer_matloop_is_refused(url: str) -> None:
    with Store.open(url) as s, s.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    for create in (True, False):
        with pytest.raises(StoreError, match="newer matloop"):
            Store.open(url, create=create)


CONFIG: dict = {
    "seed": 11,
    "targets": [{"name": "density", "goal": "maximize"}],
    "search_space": {"elements": ["Li", "Na", "Mg", "O", "F", "Cl"], "max_elements": 3, "max_atoms_per_element": 4,
                     "max_atoms": 8, "space_groups": ["cubic", "tetragonal"], "length_range": [2.0, 10.0]},
    "seed_data": {"dataset": "mp20", "max_rows": 120},
    "proxy": {"members": 2, "hidden": 32, "layers": 2, "epochs": 4},
    "acquisition": {"kind": "ucb", "kappa": 1.0, "temperature": 1.0},
    "generator": {"iterations_first_round": 4, "iterations_per_round": 2,
                  "hyper": {"hidden": 32, "layers": 2, "batch_size": 16}},
    "candidates_per_round": 40,
    "batch_size": 5,
    "oracle": {"name": "density", "retries": 0},
    "rounds": 2,
    "tracking": {"enabled": False},
    "runner": {"kind": "local", "max_workers": 2},
}


@pytest.mark.slow
def test_a_postgresql_campaign_of_the_previous_schema_resumes(tmp_path: Path, postgres_url: str,
                                                               prefect_api_url: str) -> None:
    cfg = tmp_path / "mig.yaml"
    cfg.write_text(yaml.safe_dump({"name": "mig", **CONFIG, "campaign_dir": str(tmp_path / "mig")}))
    env = {k: v for k, v in os.environ.items() if k not in ("MATLOOP_KILL_AT", "MLFLOW_TRACKING_URI")}
    env.update(MATLOOP_STORE_URL=postgres_url, PREFECT_API_URL=prefect_api_url,
               PREFECT_HOME=str(tmp_path / ".prefect"), PREFECT_LOGGING_LEVEL="WARNING")

    def matloop(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "orchestration.cli", *args, "--quiet"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]

    matloop("run", str(cfg), "--rounds", "1")
    with Store.open(postgres_url, create=False) as s:
        first = {r.candidate_id: (r.status, sorted(r.targets.items())) for r in s.results("mig")}
        assert len(first) == 5 and [r.completed for r in s.rounds("mig")] == [True]
    _to_previous_schema(postgres_url)
    matloop("resume", "mig", "--dir", str(tmp_path / "mig"))
    with Store.open(postgres_url, create=False) as s:
        with s.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
        assert [r.completed for r in s.rounds("mig")] == [True, True]
        results = {r.candidate_id: (r.status, sorted(r.targets.items())) for r in s.results("mig")}
        assert len(results) == 10 and {k: results[k] for k in first} == first  # round 0 kept, nothing repeated
        assert set(s.job_attempts("mig").values()) == {1}
        assert s.get_campaign("mig").status == "completed"
