"""Damaged stores (issue 14, defect 6): a truncated, emptied or foreign database is refused with one clear
line before it is used: `status` never writes to it and `resume` never restarts at round 0."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from discovery.crystal import Crystal
from orchestration.campaign.status import write_snapshot
from orchestration.cli import app
from orchestration.config import config_hash, parse_config
from orchestration.store import Store, StoreError, open_campaign

runner = CliRunner()

BASE: dict = {
    "name": "dmg",
    "seed": 1,
    "targets": [{"name": "density", "goal": "maximize"}],
    "search_space": {"elements": ["Na", "Cl", "O"], "max_elements": 2, "max_atoms_per_element": 4, "max_atoms": 8,
                     "space_groups": ["cubic"]},
    "seed_data": {"dataset": "mp20", "max_rows": 50},
    "candidates_per_round": 10,
    "batch_size": 2,
    "oracle": {"name": "density"},
    "rounds": 1,
    "tracking": {"enabled": False},
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("MATLOOP_STORE_URL", raising=False)
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


def _campaign(workdir: Path, url: str | None = None) -> Path:
    """A started campaign (snapshot + store with a round, 2 candidates and a result), as `matloop run` leaves it."""
    cfg = parse_config({**BASE, "campaign_dir": str(workdir / "runs" / "dmg"), **({"store_url": url} if url else {})})
    store, _ = open_campaign(cfg)
    with store:
        store.start_round("dmg", 0, seed=1, code_version="test")
        store.add_candidates("dmg", 0, [Crystal(225, {"Na": 4, "Cl": 4}, 5.6, 5.6, 5.6, 90, 90, 90, id="a"),
                                        Crystal(221, {"Na": 1, "Cl": 1}, 3.4, 3.4, 3.4, 90, 90, 90, id="b")],
                             scores=[1.0, 0.5])
        store.select_batch("dmg", 0, ["a", "b"], oracle="density")
        store.record_result("dmg", "a", status="ok", targets={"density": 2.2}, relaxed_cif=None, provenance={},
                            wall_s=0.1)
    write_snapshot(cfg)
    return workdir / "runs" / "dmg" / "store.db"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def _refused(args: list[str], *needles: str) -> str:
    result = runner.invoke(app, args)
    out = " ".join(result.output.split())
    assert result.exit_code == 2, out
    assert "Traceback" not in out and "error:" in out
    for n in needles:
        assert n in out, out
    return out


def _after(db: Path) -> set[str]:
    return {p.name for p in db.parent.iterdir()}


def test_a_truncated_store_is_refused_by_status_and_resume(workdir: Path) -> None:
    db = _campaign(workdir)
    with sqlite3.connect(db) as conn:  # fold the WAL into the file, as a finished run leaves it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.truncate(size // 2)
    before = _digest(db)
    _refused(["status", "dmg"], "store.db", "is damaged", "restore it from a backup")
    _refused(["resume", "dmg"], "is damaged")
    _refused(["export", "dmg", "--out", "x"], "is damaged")
    assert _digest(db) == before


def test_an_emptied_store_is_refused_and_never_written(workdir: Path) -> None:
    db = _campaign(workdir)
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{db}{suffix}")
        if p.exists():
            p.write_bytes(b"")
    files = _after(db)
    _refused(["status", "dmg"], "is empty (0 bytes)")
    _refused(["resume", "dmg"], "is empty (0 bytes)")
    assert db.stat().st_size == 0 and _after(db) == files


def test_a_store_without_the_campaign_does_not_restart_it_at_round_0(workdir: Path) -> None:
    """The store was replaced by a new, empty one (or its rows deleted): the snapshot says the campaign
    was started, so resume refuses instead of running round 0 again."""
    db = _campaign(workdir)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    Store.open(f"sqlite:///{db}").close()  # a fresh store: tables, no campaign
    _refused(["resume", "dmg"], "campaign 'dmg' was started", "has no campaign 'dmg'")
    _refused(["run", str(workdir / "runs" / "dmg" / "campaign.yaml")], "has no campaign 'dmg'")
    with Store.open(f"sqlite:///{db}", create=False) as s, s.engine.connect() as conn:
        assert s.campaigns() == []  # no campaign, so no round 0 again
        assert conn.execute(text("SELECT count(*) FROM rounds")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM campaign_locks")).scalar() == 0  # the refused run let go


def test_a_foreign_database_is_refused_and_not_written(workdir: Path) -> None:
    db = workdir / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    before = _digest(db)
    for create in (True, False):
        with pytest.raises(StoreError, match=r"not a matloop campaign store .*invoices"):
            Store.open(f"sqlite:///{db}", create=create)
    _refused(["status", "--store", f"sqlite:///{db}"], "not a matloop campaign store")
    assert _digest(db) == before


def test_a_store_missing_a_core_table_or_from_a_newer_matloop_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    Store.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(StoreError, match="newer matloop"):
        Store.open(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE rounds"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"damaged .*rounds missing"):
        Store.open(url, create=False)


def test_an_emptied_postgresql_store_does_not_restart_the_campaign(workdir: Path, postgres_url: str) -> None:
    _campaign(workdir, url=postgres_url)
    with Store.open(postgres_url) as s, s.engine.begin() as conn:  # every row gone, tables kept
        conn.execute(text("TRUNCATE campaigns, rounds, candidates, oracle_results CASCADE"))
    cfg = parse_config({**BASE, "campaign_dir": str(workdir / "runs" / "dmg"), "store_url": postgres_url})
    with pytest.raises(StoreError, match=r"campaign 'dmg' was started .* has no campaign 'dmg'"):
        open_campaign(cfg)
    with Store.open(postgres_url, create=False) as s:
        assert s.campaigns() == []
    assert config_hash(cfg)  # the config itself is fine


def test_a_config_named_campaign_yaml_in_a_new_campaign_dir_is_not_a_started_campaign(workdir: Path) -> None:
    """Only the snapshot `matloop run` writes (first line SNAPSHOT_MARK) marks a started campaign; a config
    someone saved as <campaign dir>/campaign.yaml (the discovery benchmark does) starts a new one."""
    import yaml

    from orchestration.store.repository import SNAPSHOT_MARK

    data = {**BASE, "campaign_dir": str(workdir / "runs" / "dmg")}
    (workdir / "runs" / "dmg").mkdir(parents=True)
    (workdir / "runs" / "dmg" / "campaign.yaml").write_text(yaml.safe_dump(data))
    store, record = open_campaign(parse_config(data))
    store.close()
    assert record.name == "dmg"
    assert write_snapshot(parse_config(data)).read_text().startswith(SNAPSHOT_MARK)
