"""Campaign store against SQLite and a real PostgreSQL server: idempotent writes, round state
machine, resume queries, two campaigns side by side, clear errors for bad URLs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from discovery.crystal import Crystal
from orchestration.store import ROUND_STATES, Store, StoreError, code_version, safe_url


def cx(id: str, counts: dict[str, int], sg: int = 225) -> Crystal:
    return Crystal(space_group=sg, counts=counts, a=5.0, b=5.0, c=5.0, alpha=90, beta=90, gamma=90, id=id)


BATCH = [cx("c0", {"Na": 4, "Cl": 4}), cx("c1", {"Li": 4, "F": 4}), cx("c2", {"Mg": 4, "O": 4}, sg=216)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'sub' / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with Store.open(url) as s:
        yield s


def _campaign(store: Store, name: str = "a", config_hash: str = "h1") -> None:
    store.create_campaign(name, config={"name": name}, config_hash=config_hash, seed=7, code_version="test")


def test_campaign_create_is_idempotent_and_guards_config(store: Store) -> None:
    _campaign(store)
    _campaign(store)
    rec = store.get_campaign("a")
    assert (rec.config_hash, rec.seed, rec.config, rec.status) == ("h1", 7, {"name": "a"}, "running")
    with pytest.raises(StoreError, match="config hash h1"):
        _campaign(store, config_hash="other")
    with pytest.raises(StoreError, match=r"no campaign named .zz.*known: a"):
        store.get_campaign("zz")
    store.set_campaign("a", status="completed", mlflow_run_id="run1")
    assert store.get_campaign("a").mlflow_run_id == "run1" and store.campaigns() == ["a"]


def test_round_state_machine(store: Store) -> None:
    _campaign(store)
    r = store.start_round("a", 0, seed=11, code_version="v")
    assert r.state == "started" and store.start_round("a", 0, seed=99, code_version="v").seed == 11
    with pytest.raises(StoreError, match="round 0 is started"):
        store.start_round("a", 1, seed=1, code_version="v")
    with pytest.raises(StoreError, match="cannot go from 'started' to 'sampled'"):
        store.advance_round("a", 0, "sampled")
    store.advance_round("a", 0, "proxy_fitted", proxy_version=1, metrics={"proxy_mae": 0.1})
    store.advance_round("a", 0, "proxy_fitted")  # replaying the current step is a no-op
    for state in ROUND_STATES[2:]:
        store.advance_round("a", 0, state, generator_version=1 if state == "generator_trained" else None,
                            metrics={"hit_rate": 0.5} if state == "logged" else None)
    done = store.get_round("a", 0)
    assert done.completed and (done.proxy_version, done.generator_version) == (1, 1)
    assert done.metrics == {"proxy_mae": 0.1, "hit_rate": 0.5}
    assert store.start_round("a", 1, seed=12, code_version="v").index == 1
    assert [x.index for x in store.rounds("a")] == [0, 1]
    with pytest.raises(StoreError, match="first round is 0"):
        _campaign(store, "b")
        store.start_round("b", 3, seed=0, code_version="v")


def test_candidates_and_results_are_idempotent(store: Store, tmp_path: Path) -> None:
    _campaign(store)
    store.start_round("a", 0, seed=0, code_version="v")
    assert store.add_candidates("a", 0, BATCH, scores=[3.0, 2.0, 1.0]) == 3
    assert store.add_candidates("a", 0, [*BATCH, cx("c3", {"K": 1, "Cl": 1})]) == 1  # re-run adds only the new one
    assert store.known_keys("a") == {("NaCl", 225), ("LiF", 225), ("MgO", 216), ("KCl", 225)}
    store.select_batch("a", 0, ["c2", "c0"], oracle="density")
    store.select_batch("a", 0, ["c2", "c0"], oracle="density")  # replay
    assert store.batch("a", 0) == ["c2", "c0"]
    assert store.pending("a") == ["c2", "c0"]
    assert store.start_job("a", "c2") == 1 and store.start_job("a", "c2") == 2  # a crash between start and result
    assert store.record_result("a", "c2", status="ok", targets={"density": 3.6}, relaxed_cif="data_x", provenance={"v": 1})
    assert not store.record_result("a", "c2", status="failed", targets={"density": 0.0})  # never overwritten
    assert store.pending("a") == ["c0"] and store.pending("a", 0) == ["c0"]
    (res,) = store.results("a")
    assert (res.candidate_id, res.status, res.targets, res.relaxed_cif, res.round_index) == ("c2", "ok", {"density": 3.6}, "data_x", 0)
    assert store.job_attempts("a") == {"c2": 2, "c0": 0}
    crystals = store.crystals("a", ["c0", "c2"])
    assert [c.id for c in crystals] == ["c0", "c2"] and crystals[0] == BATCH[0] and crystals[0].extra["score"] == 3.0
    table = store.table("a")
    assert [c.id for c in table] == ["c2", "c0"]
    assert table[0].extra["status"] == "ok" and table[0].extra["density"] == 3.6 and table[1].extra["status"] == "pending"
    from discovery.crystal import read_crystal_table, write_crystal_table

    back = read_crystal_table(write_crystal_table(table, tmp_path / "batch.csv"))
    assert len(back) == 2
    with pytest.raises(StoreError, match="never added"):
        store.select_batch("a", 0, ["nope"], oracle="density")
    with pytest.raises(StoreError, match="no oracle job"):
        store.record_result("a", "c1", status="ok", targets={})
    with pytest.raises(ValueError, match="id"):
        store.add_candidates("a", 0, [cx("", {"Na": 1, "Cl": 1})])


def test_scheduler_submissions_are_recorded_once_per_attempt(store: Store) -> None:
    _campaign(store)
    store.start_round("a", 0, seed=0, code_version="v")
    store.add_candidates("a", 0, BATCH)
    store.select_batch("a", 0, ["c0", "c1"], oracle="gpaw")
    sub = {"scheduler": "slurm", "workdir": "/jobs/c0/attempt-0"}
    assert store.record_submission("a", candidate_id="c0", attempt=0, job_id="101", **sub)
    assert not store.record_submission("a", candidate_id="c0", attempt=0, job_id="101", **sub)  # replay: no-op
    with pytest.raises(StoreError, match="already job 101"):  # the same attempt under another job id
        store.record_submission("a", candidate_id="c0", attempt=0, job_id="102", **sub)
    assert store.record_submission("a", candidate_id="c0", attempt=1, job_id="103", **{**sub, "workdir": "/jobs/c0/attempt-1"})
    with pytest.raises(StoreError, match="no oracle job"):
        store.record_submission("a", candidate_id="c2", attempt=0, job_id="1", **sub)
    assert [(r.attempt, r.job_id) for r in store.submissions("a", "c0")] == [(0, "101"), (1, "103")]
    assert store.submissions("a", "c1") == [] and len(store.submissions("a")) == 2
    assert store.job_attempts("a") == {"c0": 2, "c1": 0} and store.pending("a") == ["c0", "c1"]
    store.record_result("a", "c0", status="ok", targets={"energy_per_atom": -5.4})
    assert store.pending("a") == ["c1"]


def test_two_campaigns_do_not_interfere(store: Store) -> None:
    for name in ("a", "b"):
        _campaign(store, name)
        store.start_round(name, 0, seed=0, code_version="v")
        assert store.add_candidates(name, 0, BATCH) == 3  # same candidate ids in both
        store.select_batch(name, 0, ["c0", "c1"], oracle="density")
    store.record_result("a", "c0", status="ok", targets={"density": 1.0})
    assert store.pending("a") == ["c1"] and store.pending("b") == ["c0", "c1"]
    assert store.results("b") == [] and len(store.results("a")) == 1
    store.advance_round("b", 0, "proxy_fitted")
    assert store.get_round("a", 0).state == "started"


def test_model_versions_and_summary(store: Store) -> None:
    _campaign(store)
    store.start_round("a", 0, seed=0, code_version="v")
    assert store.latest_model("a", "proxy") is None
    assert store.add_model("a", "proxy", round_index=0, path="/m/p0").version == 1
    assert store.add_model("a", "proxy", round_index=0, path="/m/p0", mlflow_uri="models:/x/1").version == 1
    assert store.add_model("a", "proxy", round_index=1, path="/m/p1").version == 2
    assert store.add_model("a", "generator", round_index=0, path="/m/g0").version == 1
    latest = store.latest_model("a", "proxy")
    assert latest is not None and (latest.version, latest.path) == (2, "/m/p1")
    store.add_candidates("a", 0, BATCH)
    store.select_batch("a", 0, ["c0"], oracle="density")
    summary = store.summary("a")
    assert summary["rounds"][0]["batch"] == 1 and summary["pending"] == ["c0"] and summary["completed_rounds"] == 0


def test_reopen_keeps_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as s:
        _campaign(s)
    with Store.open(url) as s:
        assert s.campaigns() == ["a"]


def test_unreachable_store_names_url_without_password() -> None:
    with pytest.raises(StoreError) as info:
        Store.open("postgresql://alice:hunter2@127.0.0.1:1/campaigns", connect_timeout_s=2)
    msg = str(info.value)
    assert "127.0.0.1:1/campaigns" in msg and "hunter2" not in msg and "***" in msg
    with pytest.raises(StoreError, match="not a database URL"):
        Store.open("not a url")
    with pytest.raises(StoreError, match="cannot"):
        Store.open("sqlite:////proc/forbidden/x/store.db")
    assert safe_url("postgresql://u:p@h/db") == "postgresql://u:***@h/db"


def test_code_version_is_recorded() -> None:
    assert code_version().startswith(("git:", "matloop==")) or code_version() == "unknown"


def test_concurrent_result_writers(store: Store) -> None:
    """Parallel oracle tasks record results at once: no lock errors, each result stored exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    _campaign(store)
    store.start_round("a", 0, seed=0, code_version="v")
    crystals = [cx(f"k{i}", {"Na": 1 + i, "Cl": 1 + i}) for i in range(40)]
    store.add_candidates("a", 0, crystals)
    store.select_batch("a", 0, [c.id for c in crystals], oracle="density")

    def work(cid: str) -> bool:
        store.start_job("a", cid)
        return store.record_result("a", cid, status="ok", targets={"density": 1.0})

    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(work, [c.id for c in crystals] * 2))
    assert sum(first) == 40 and store.pending("a") == [] and len(store.results("a")) == 40
    assert set(store.job_attempts("a").values()) == {2}


def test_open_campaign_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.config import config_hash, parse_config
    from orchestration.store import open_campaign

    monkeypatch.delenv("MATLOOP_STORE_URL", raising=False)
    data = {"name": "cfg", "targets": [{"name": "density", "goal": "maximize"}], "search_space": {"elements": ["Na", "Cl"]},
            "seed_data": {"dataset": "mp20"}, "candidates_per_round": 4, "batch_size": 2, "oracle": {"name": "density"},
            "rounds": 1, "seed": 5, "campaign_dir": str(tmp_path / "camp")}
    cfg = parse_config(data)
    store, rec = open_campaign(cfg)
    with store:
        assert (rec.config_hash, rec.seed, rec.config["oracle"]["name"]) == (config_hash(cfg), 5, "density")
    assert (tmp_path / "camp" / "store.db").exists()
    with pytest.raises(StoreError, match="config changed"):
        open_campaign(parse_config({**data, "seed": 6}))
    store, again = open_campaign(parse_config({**data, "runner": {"kind": "dask"}}))  # operational change: resumes
    store.close()
    assert again == rec
