"""Kill test for the batched engine (issue 17): a campaign whose CHGNet oracle uses ``engine: batched`` is
SIGKILLed while its round's batch is relaxing (some results stored, others still in the batch), then resumed.

The store must stay consistent; every result stored before the kill is kept as it was and never evaluated
again (same row, one attempt); the candidates that were still relaxing are evaluated once more by the
resumed run, none is lost; the campaign completes. Real ``matloop run``/``resume`` processes, real Prefect
(the session's server), real SQLite store, real CHGNet on the batched torch-sim engine (in-process,
``workers: 0``, so each result is stored as its structure leaves the batch). The kill comes from the fault
point ``result_recorded`` (``MATLOOP_KILL_AT``, see :mod:`orchestration.campaign.faults`).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.store import Store
from tests.oracles.conftest import REPO_MP20, SHARED_MP20
from tests.oracles.test_batched_campaign import CONFIG as BATCHED_CONFIG
from tests.orchestration.test_kill import _env, _matloop

BATCH = 6
KILL_AFTER = 4  # stored results when the process is killed: with seed 5 the batch leaves the engine at FIRE
# steps 11, 11, 11, 11, 23 and 60 (steps cap 60), so two structures are still relaxing at the kill
CONFIG: dict[str, Any] = {
    **BATCHED_CONFIG, "name": "killbatch", "batch_size": BATCH,
    "oracle": {"name": "chgnet", "retries": 0, "settings": {"engine": "batched", "steps": 60, "workers": 0}},
}


def _mp20_dir() -> Path:
    for d in (REPO_MP20, SHARED_MP20):
        if d.is_dir() and any(d.glob("*.csv*")):
            return d
    pytest.skip("MP-20 tables not available")


def _result_rows(store: Store) -> list[tuple[int, str]]:
    """(row id, candidate id) of every stored oracle result, straight from the table."""
    with store.engine.connect() as conn:
        return [(int(i), str(c)) for i, c in conn.exec_driver_sql("SELECT id, candidate_id FROM oracle_results")]


@pytest.mark.slow
def test_sigkill_while_the_batch_relaxes_then_resume_loses_and_repeats_nothing(tmp_path: Path,
                                                                               prefect_api_url: str) -> None:
    name = CONFIG["name"]
    run_dir = tmp_path / name
    cfg = {**CONFIG, "campaign_dir": str(run_dir)}
    cfg["oracle"] = {**CONFIG["oracle"], "settings": {**CONFIG["oracle"]["settings"], "mp20_dir": str(_mp20_dir())}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    url = f"sqlite:///{run_dir / 'store.db'}"

    killed = _matloop(["run", str(path)],
                      _env(prefect_api_url, tmp_path, MATLOOP_KILL_AT=f"result_recorded:{KILL_AFTER}"), tmp_path)
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, err.decode()[-2000:]

    with Store.open(url, create=False) as store:
        batch = store.batch(name, 0)
        assert len(batch) == BATCH
        before = {r.candidate_id: r for r in store.results(name)}
        assert len(before) == KILL_AFTER  # killed mid-batch: some stored, the rest not
        # the kill came after a relaxation finished (not merely after refused/undecodable inputs were recorded)
        assert any((r.provenance.get("n_steps") or 0) > 0 for r in before.values())
        assert all(r.provenance["oracle_task"] == "batch" and r.provenance["engine"] == "batched"
                   for r in before.values())
        relaxing = [c for c in batch if c not in before]
        assert store.pending(name, 0) == relaxing
        assert store.job_attempts(name) == dict.fromkeys(batch, 1)  # one batch task started every job once
        assert store.get_round(name, 0).state == "evaluating"
        killed_pids = {r.provenance["worker"]["pid"] for r in before.values()}
        assert len(killed_pids) == 1
        rows_before = {c: i for i, c in _result_rows(store)}

    resumed = _matloop(["resume", name, "--dir", str(run_dir)], _env(prefect_api_url, tmp_path), tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-2000:]

    with Store.open(url, create=False) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        rows = _result_rows(store)
        ids = [c for _, c in rows]
        assert len(ids) == len(set(ids)) == BATCH and set(ids) == set(batch)  # none lost, none twice
        assert {c: i for i, c in rows if c in before} == rows_before  # stored rows untouched
        after = {r.candidate_id: r for r in store.results(name)}
        for cid, old in before.items():  # kept as stored before the kill, not evaluated again
            assert after[cid] == old
        attempts = store.job_attempts(name)
        assert {c: attempts[c] for c in before} == dict.fromkeys(before, 1)
        assert {c: attempts[c] for c in relaxing} == dict.fromkeys(relaxing, 2)  # the killed try, then the resume
        for cid in relaxing:  # evaluated by the resumed process, with the batched engine
            res = after[cid]
            assert res.provenance["worker"]["pid"] not in killed_pids
            assert res.provenance["oracle_task"] == "batch" and res.provenance["engine"] == "batched"
            assert res.status in ("ok", "unconverged", "failed", "invalid", "timeout")
        assert store.pending(name) == []
        rounds = store.rounds(name)
        assert len(rounds) == 1 and all(r.completed for r in rounds)
        assert store.get_campaign(name).status == "completed"
