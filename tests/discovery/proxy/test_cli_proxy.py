"""`matloop proxy fit/predict` end to end on a small real MP-20 slice."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from discovery.crystal import write_crystal_table
from discovery.datasets import load_mp20
from orchestration.cli import app

runner = CliRunner()


def test_fit_then_predict(tmp_path):
    data = load_mp20("train", "band_gap").data.subset(range(300))
    table = write_crystal_table(data.crystals, tmp_path / "train.csv", extra={"band_gap": list(data.targets[:, 0])})
    model = tmp_path / "model"
    result = runner.invoke(app, ["proxy", "fit", "--dataset", str(table), "--target", "band_gap", "--out", str(model),
                                 "--epochs", "5", "--members", "2", "--no-encoder"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["fit"]["n_train"] == 270  # 10 % held out for recalibration
    assert metrics["fit"]["validation"]["band_gap"]["mae"] > 0
    assert metrics["data"][0]["kept"] == 300

    crystals = tmp_path / "new.csv"
    write_crystal_table(load_mp20("val", "band_gap").data.crystals[:25], crystals)
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["proxy", "predict", "--model", str(model), "--input", str(crystals), "--out", str(out)])
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert len(pred) == 25 and {"band_gap_mean", "band_gap_std"} <= set(pred.columns)
    assert (pred.band_gap_std > 0).all()


def test_clear_errors_without_traceback(tmp_path):
    result = runner.invoke(app, ["proxy", "fit", "--dataset", "mp20", "--target", "density", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "band_gap" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["proxy", "predict", "--model", str(tmp_path / "none"), "--input", "x.csv",
                                 "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "not a proxy model directory" in result.output
    for cmd in ("fit", "predict", "pretrain", "bench"):
        help_text = runner.invoke(app, ["proxy", cmd, "--help"]).output
        assert "Example: matloop proxy" in help_text
