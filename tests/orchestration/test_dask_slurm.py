"""``runner: {kind: dask, cluster: {type: slurm}}``: the oracle tasks of a campaign round run on Dask
workers that are real SLURM jobs (``dask_jobqueue.SLURMCluster`` on the single-node SLURM that
``deploy/slurm/start-slurm.sh`` starts: the ``slurm`` fixture), reporting to a real Prefect server; the results equal the
thread runner's for the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestration.store import Store
from tests.orchestration.test_flows import CONFIG


@pytest.mark.slow
def test_campaign_round_on_dask_workers_in_slurm_jobs(
    tmp_path: Path, slurm: Path, prefect_server_settings: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestration.flows import campaign_flow

    monkeypatch.setenv("PREFECT_API_URL", prefect_server_settings)  # inherited by the SLURM jobs (--export=ALL)
    one_round = {**CONFIG, "rounds": 1, "stopping": {}}
    results, jobs = {}, {}
    for name, runner in (("threads", {"kind": "local", "max_workers": 2}),
                         ("slurm", {"kind": "dask", "cluster": {"type": "slurm", "cores": 1, "memory": "2GB",
                                                                "walltime": "00:20:00", "jobs": 2}})):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({"name": name, **one_round, "runner": runner, "campaign_dir": str(tmp_path / name)}))
        assert campaign_flow(str(cfg))["completed_rounds"] == 1
        with Store.open(f"sqlite:///{tmp_path / name / 'store.db'}", create=False) as store:
            stored = store.results(name)
            results[name] = sorted((r.candidate_id, r.status, tuple(sorted(r.targets.items()))) for r in stored)
            jobs[name] = {r.provenance["worker"].get("slurm_job_id") for r in stored}
    assert len(results["slurm"]) == 4 and results["slurm"] == results["threads"]
    assert jobs["threads"] == {None} and None not in jobs["slurm"]  # every oracle task ran inside a SLURM job
