"""The decoder evaluation (orchestration/bench_decoder.py) on a tiny real run, and its coverage and merge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestration.bench_decoder import DecoderBench, coverage, merge_reports, run_decoder_bench


def test_coverage_counts_references_and_samples_within_the_cutoffs() -> None:
    rng = np.random.default_rng(0)
    refs = (rng.random((6, 61)), rng.random((6, 132)))
    mean, std = np.zeros(132), np.ones(132)
    same = coverage(refs, refs, comp_mean=mean, comp_std=std)
    assert same["cov_r"] == 1.0 and same["cov_p"] == 1.0
    # samples near the first two references only, plus one far away: recall 2/6, precision 2/3
    near = (np.vstack([refs[0][:2] + 0.01, refs[0][:1] + 5.0]), np.vstack([refs[1][:2], refs[1][:1]]))
    part = coverage(near, refs, comp_mean=mean, comp_std=std)
    assert part["cov_r"] == pytest.approx(2 / 6, abs=1e-4) and part["cov_p"] == pytest.approx(2 / 3, abs=1e-4)


@pytest.mark.slow
def test_tiny_run_reports_every_metric_and_merges() -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        report = run_decoder_bench(DecoderBench(n=2, k=2, steps=5, coverage=False, bootstrap=20))
    finally:
        torch.set_num_threads(threads)
    assert report["crystals"] == ["mp-1018064", "mp-10189"]
    for name in ("pyxtal", "score"):
        summary = report["summary"][name]
        assert len(report["per_sample"][name]) == 4 and summary["decoded_share"] == 1.0
        assert 0 <= summary["recovery_relaxed"]["value"] <= 1 and summary["median_steps"]["value"] <= 5
        lo, hi = summary["share_converged"]["ci95"]
        assert lo <= summary["share_converged"]["value"] <= hi
    # LiTiTe2 (P-3m1, every atom on a fixed site) in its true lattice: pyxtal places it exactly
    assert any(s["match_unrelaxed"] for s in report["per_sample"]["pyxtal"] if s["id"] == "mp-10189")
    assert "goals" in report["summary"]["score_vs_pyxtal"]
    merged = merge_reports([json.loads(json.dumps(report, default=str))])
    assert merged["summary"] == json.loads(json.dumps(report["summary"], default=str))
