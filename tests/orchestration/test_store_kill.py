"""SIGKILL a process while it writes oracle results; every result it reported as committed survives,
the database stays consistent, and resuming finishes the batch with each candidate recorded once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from discovery.crystal import Crystal
from orchestration.store import Store

N = 400
WRITER = """
import sys
from orchestration.store import Store
store = Store.open(sys.argv[1])
print("ready", flush=True)
for cid in store.pending("k"):
    store.start_job("k", cid)
    store.record_result("k", cid, status="ok", targets={"density": 1.0}, relaxed_cif="data_" + cid)
    print(cid, flush=True)
print("done", flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_store_writes_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as store:
        store.create_campaign("k", config={}, config_hash="h", seed=0, code_version="v")
        store.start_round("k", 0, seed=0, code_version="v")
        crystals = [Crystal(225, {"Na": i + 1, "Cl": i + 1}, 5, 5, 5, 90, 90, 90, id=f"c{i:03d}") for i in range(N)]
        store.add_candidates("k", 0, crystals)
        store.select_batch("k", 0, [c.id for c in crystals], oracle="density")
    rng = random.Random(0)
    reported: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    kills = 0
    for attempt in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        lines: list[str] = []
        if attempt < 5:
            # kill mid-batch after a random number of committed writes (5 × ≤ 40 < N, so never after the end)
            target = rng.randint(3, 40)
            while len(lines) < target:
                lines.append(proc.stdout.readline().strip())
            time.sleep(rng.uniform(0.0, 0.02))  # land anywhere inside the next write
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        out, _ = proc.communicate(timeout=120)
        lines += out.split()
        reported.update(x for x in lines if x.startswith("c"))
        if "done" in lines:
            break
    assert kills == 5
    with Store.open(url) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        results = store.results("k")
        ids = [r.candidate_id for r in results]
        assert len(ids) == len(set(ids)) == N, "every candidate recorded exactly once"
        assert reported <= set(ids), "no committed result lost"
        assert store.pending("k") == []
        attempts = store.job_attempts("k")
        assert all(n >= 1 for n in attempts.values()) and sum(n > 1 for n in attempts.values()) <= kills
